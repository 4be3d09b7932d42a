"""Implicit-function-theorem hypergradients as an online population strategy.

Lorraine, Vicol & Duvenaud 2020, "Optimizing Millions of Hyperparameters by Implicit
Differentiation", arXiv:1911.02590. Each segment the members train normally (the population's
own :meth:`~jaxhpo.population.Population.train_segment`); then, treating every member's current
weights ``w`` as a minimiser of its training loss, each member's validation loss is
differentiated with respect to the searched hyperparameters *of the training loss* by the
implicit function theorem (:func:`jaxhpo.hypergrad.implicit.hypergradient`, Neumann series or
CG inverse-Hessian-vector products), and one outer optax step moves them in unconstrained
coordinates (``log`` weight decay, ``logit`` label smoothing). The new values are clipped into
the space and applied through the ordinary :class:`~jaxhpo.strategies.base.PopulationUpdate`
with ``explore`` events, exactly as :class:`~jaxhpo.strategies.hypergrad.UnrolledHypergrad`
(whose outer-optimizer helpers, state layout and :meth:`update` this class reuses).

The training loss of one member is

    L_T(w, lam) = task.loss(w; member's current batch and dropout key, label_smoothing)
                  + 0.5 * weight_decay * ||w||^2,

i.e. weight decay is treated as an L2 term, as Lorraine et al. do (with ``adamw`` the optimizer
itself applies *decoupled* decay; the IFT model of it is this L2 penalty). The batch and key are
``population.member_batch`` at the member's current step (the next training batch). The
differentiable hyperparameters are ``weight_decay`` and ``label_smoothing``; dropout is left
out (its mask is a non-differentiable draw): a searched ``dropout`` or any hyperparameter that
does not enter the training loss (lr, warmup, b1, ...) is refused by :meth:`init`. Unsearched
values (a fixed dropout, a fixed weight decay) still enter ``L_T`` as constants.

Mapped over the population with the population's member mode (``vmap`` / ``lax.map``). A member
whose hypergradient or validation loss is not finite, or that is stopped or diverged, keeps its
hyperparameters. The Hessian at an unconverged ``w`` may be indefinite: ``neumann`` with few terms
(``strategy.terms``) and a small step (``strategy.alpha``) is the robust
default; ``cg`` solves to ``strategy.terms`` iterations.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from jaxhpo.hypergrad import implicit, member, unrolled
from jaxhpo.population.members import over_members
from jaxhpo.population.step import task_loss
from jaxhpo.space import Space
from jaxhpo.strategies.hypergrad import (
    OuterConfig,
    UnrolledHypergrad,
    bounds,
    member_weights,
    next_window,
)

#: Hyperparameters that enter the training loss differentiably (see the module docstring).
DIFFERENTIABLE = ("weight_decay", "label_smoothing")


def check_training_loss_names(space: Space) -> None:
    """Refuses searched dimensions outside :data:`DIFFERENTIABLE` (one line, naming the field)."""
    for name in space.searched:
        if name not in DIFFERENTIABLE:
            raise ValueError(
                f"space.{name}: implicit differentiation needs hyperparameters of the training "
                f"loss ({', '.join(DIFFERENTIABLE)}); {name} is not one (use strategy hypergrad)"
            )


def member_losses(
    population: Any,
    m: Any,
    train_data: Any,
    val_data: Any,
    names: tuple,
    objectives: tuple = (),
    weights: Any = None,
):
    """``(train_loss, val_loss, w, z)`` of ONE member for :func:`implicit.hypergradient`:
    losses of ``(params, z)`` with ``z`` the searched hyperparameters ``names`` in unconstrained
    coordinates, ``w`` the member's current parameters; with several ``objectives`` the
    validation loss is the member's ``weights`` of them (:func:`member.make_val`)."""
    hp = member.member_hparams(population, m)
    z = unrolled.to_unconstrained({k: hp[k] for k in names})
    batch, key = population.member_batch(m, train_data)
    val_fn = member.make_val(population, val_data, objectives)

    def train_loss(w, z_):
        h = {**hp, **unrolled.from_unconstrained(z_)}
        task_hp = population.step_hparams({k: h[k] for k in population.task_names})
        loss, _ = task_loss(
            population.task, population.model, w, m.model_state, batch, task_hp, key
        )
        wd = h.get("weight_decay", jnp.zeros(()))
        return loss + 0.5 * wd * optax.tree.norm(w, squared=True)

    def val_loss(w, z_):
        del z_
        return val_fn(m.replace(params=w), None, weights)

    return train_loss, val_loss, m.params, z


@dataclasses.dataclass(frozen=True)
class ImplicitConfig(OuterConfig):
    """``strategy:`` settings of the implicit (IFT) hypergradient strategy."""

    method: str = "neumann"  # inverse-HVP solver: neumann | cg
    terms: int = 10  # Neumann terms or CG iterations
    alpha: float = 0.01  # Neumann step (below 2 / largest Hessian eigenvalue)

    def __post_init__(self):
        super().__post_init__()
        if self.method not in implicit.METHODS:
            raise ValueError(
                f"strategy.method: unknown {self.method!r} "
                f"(choose from {', '.join(implicit.METHODS)})"
            )
        if self.terms < 1:
            raise ValueError(f"strategy.terms: must be >= 1, got {self.terms}")
        if not self.alpha > 0:
            raise ValueError(f"strategy.alpha: must be > 0, got {self.alpha}")


class ImplicitHypergrad(UnrolledHypergrad):
    """Online IFT hypergradients of weight decay and label smoothing; see the module docstring.

    Settings: :class:`ImplicitConfig`.
    """

    name = "implicit"
    Config = ImplicitConfig

    def __init__(self, config: ImplicitConfig | None = None, /, **fields):
        super().__init__(config, **fields)
        #: compiled hypergradient programs, keyed by (population, space): a compile cache
        self._programs: dict[Any, Any] = {}

    def check(self, train_steps: int, segment_steps: int) -> None:
        """Nothing to check: the window is the segment, not cut into chunks."""

    def init(self, seed: int, space: Space, size: int | None):
        check_training_loss_names(space)
        return super().init(seed, space, size)

    def _program(self, population, space: Space):
        cache_key = (id(population), space)
        if cache_key in self._programs:
            return self._programs[cache_key]
        if population.data_devices > 1:
            raise ValueError(
                "population.data_devices: implicit hypergradients do not split a member's batch "
                "over devices; use population.data_devices=1"
            )
        names = tuple(space.searched)
        cfg = self.config
        outer, method, terms, alpha = self.outer_opt, cfg.method, cfg.terms, cfg.alpha
        objectives = self.objectives

        def program(pop, outer_state, weights, train_data, val_data):
            def one(args):
                m, o, mw = args
                train_loss, val_loss, w, z = member_losses(
                    population, m, train_data, val_data, names, objectives, mw
                )
                g, val = implicit.hypergradient(
                    train_loss, val_loss, w, z, method=method, iters=terms, alpha=alpha
                )
                updates, new_o = outer.update(g, o, z)
                new_z = optax.apply_updates(z, updates)
                finite = [jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(g)]
                ok = jnp.isfinite(val) & jnp.all(jnp.stack(finite)) & m.active & ~m.diverged
                keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(ok, x, y), a, b)
                return keep(new_z, z), keep(new_o, o), val, g

            f = over_members(one, population.mode, population.chunk_size)
            return f((pop, outer_state, weights))

        fn = jax.jit(program)
        self._programs = {cache_key: fn}  # one population structure at a time
        return fn

    def hypergradients(self, population, pop, data, outer_state, space: Space, weights=None):
        """``(new_z, outer_state, val [P], grad_z)`` of every member at its current weights
        (``weights`` [P, M]: each member's objective weights; ``None``: one objective)."""
        if weights is None:
            weights = jnp.zeros((pop.step.shape[0], 0), jnp.float32)
        return self._program(population, space)(pop, outer_state, weights, data[0], data[1])

    def train_segment(self, state, population, pop, data, num_steps, valid_steps):
        pop, losses = population.train_segment(pop, data[0], num_steps, valid_steps=valid_steps)
        space = state.space
        names = tuple(space.searched)
        hp = population.get_hparams(pop)
        template = jax.vmap(self.outer_opt.init)(
            unrolled.to_unconstrained({k: hp[k] for k in names})
        )
        if state.outer:
            outer_state = serialization.from_state_dict(template, state.outer)
        else:
            outer_state = template
        weights = member_weights(state, pop.step.shape[0])
        new_z, outer_state, val, _ = self.hypergradients(
            population, pop, data, outer_state, space, weights
        )
        new = {k: np.asarray(v, np.float64) for k, v in unrolled.from_unconstrained(new_z).items()}
        for k, (lo, hi) in bounds(space).items():
            new[k] = np.clip(new[k], lo, hi)
        return next_window(state, outer_state, new, val), pop, losses
