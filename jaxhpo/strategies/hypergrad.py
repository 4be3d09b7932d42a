"""Online unrolled hypergradients as a population strategy.

Each segment of ``K = train.segment_steps`` steps is a truncation window (Maclaurin et al. 2015,
arXiv:1502.03492; truncated as in Shaban et al. 2019, arXiv:1810.10667, and learned_optimization's
``TruncatedGrad``): every member trains ``K`` steps *differentiably* from its current state
(:mod:`jaxhpo.hypergrad.unrolled`, ``lax.scan`` with ``jax.checkpoint``), the validation loss at
the end of the window is differentiated with respect to the member's searched hyperparameters in
unconstrained coordinates (``log`` lr / weight decay, ``softplus`` warmup, ``logit`` b1, b2,
dropout, ...: :data:`jaxhpo.hypergrad.unrolled.COORDINATES`), and one outer optax step (Adam or
SGD, per member, ``strategy.outer_lr``) moves them. The new values are clipped into the
space's ``[low, high]`` (a projected step) and applied by :meth:`update` through the ordinary
:class:`~jaxhpo.strategies.base.PopulationUpdate` (one ``explore`` lineage event per member
whose hyperparameters changed), so the logged rows of a segment show the hyperparameters it was
trained with. The training itself *is* the run's training: the members' weights after the window
are those the run keeps (no second, non-differentiable pass).

With several objectives (``strategy.objectives``) each member descends its own weighting of
them (:func:`jaxhpo.objectives.scalarise` with the member's row of
:func:`jaxhpo.objectives.spread_weights`, kept in the state), so the population traces the
front; the implicit strategy does the same.

Written for one member (:mod:`jaxhpo.hypergrad.member`) and mapped over the population with the
population's member mode (``vmap`` / ``lax.map``). A member whose hypergradient is not finite
(diverged) keeps its hyperparameters. Searched dimensions must be continuous (``float`` or
``int`` ranges, no ``choice``); int dimensions (warmup steps) are treated as continuous.

State: :class:`HypergradState` (numpy, checkpointable; the implicit strategy shares it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from jaxhpo import conditions
from jaxhpo.hypergrad import member, unrolled
from jaxhpo.objectives import spread_weights
from jaxhpo.population.members import over_members
from jaxhpo.space import Choice, Space
from jaxhpo.strategies.base import Capabilities, Strategy, StrategyState, fill_points, static
from jaxhpo.strategies.decision import Observation, PopulationUpdate
from jaxhpo.tasks.measured import MEASURED

OUTER = ("adam", "sgd")


def check_outer(name: str, lr: float) -> None:
    """One-line errors for ``strategy.outer`` and ``strategy.outer_lr``."""
    if name not in OUTER:
        raise ValueError(f"strategy.outer: unknown {name!r} (choose from adam, sgd)")
    if not lr > 0:
        raise ValueError(f"strategy.outer_lr: must be > 0, got {lr}")


def outer_optimizer(name: str, lr: float) -> optax.GradientTransformation:
    check_outer(name, lr)
    return optax.adam(lr) if name == "adam" else optax.sgd(lr)


def check_continuous(space: Space, strategy: str) -> None:
    """Every searched dimension must be a continuous hyperparameter with a coordinate, or a
    choice that conditional dimensions depend on (held per member, not differentiated)."""
    for name in space.searched:
        if isinstance(space[name], Choice) and name in conditions.parents(space):
            continue
        if isinstance(space[name], Choice):
            raise ValueError(
                f"space.{name}: the {strategy} strategy needs continuous dimensions "
                "(a float or int range), not a choice"
            )
        try:
            unrolled.check_names([name], where=f"space.{name}")
        except ValueError as e:
            raise ValueError(f"{e} (strategy {strategy})") from None


def continuous(space: Space) -> tuple[str, ...]:
    """The searched dimensions that hypergradients move (not the choices conditions read)."""
    return tuple(n for n in space.searched if not isinstance(space[n], Choice))


def bounds(space: Space) -> dict[str, tuple[float, float]]:
    return {n: (float(space[n].low), float(space[n].high)) for n in continuous(space)}


@dataclasses.dataclass(frozen=True)
class OuterConfig:
    """``strategy:`` settings of the strategies that learn hyperparameters online by gradients
    (hypergrad, implicit)."""

    outer_lr: float = 0.05  # outer learning rate, unconstrained coordinates
    outer: str = "adam"  # outer optimizer: adam | sgd
    sampler: str = "random"  # the first population: random | sobol samples of the space
    #: explicit first members (name -> value); the rest are sampled
    points: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        check_outer(self.outer, self.outer_lr)
        if self.sampler not in ("random", "sobol"):
            raise ValueError(
                f"strategy.sampler: unknown {self.sampler!r} (choose from random, sobol)"
            )


@dataclasses.dataclass(frozen=True)
class HypergradConfig(OuterConfig):
    """``strategy:`` settings of the unrolled hypergradient strategy."""

    remat: bool = True  # jax.checkpoint every inner step of the window
    chunk: int = 0  # also checkpoint chunks of this many steps (0: no)

    def __post_init__(self):
        super().__post_init__()
        if self.chunk < 0:
            raise ValueError(f"strategy.chunk: must be >= 0, got {self.chunk}")


class HypergradState(StrategyState):
    """The state of the strategies that learn hyperparameters by gradients (hypergrad, implicit)."""

    space: Space = static()  # the search space (structure)
    outer: dict[str, Any]  # per-member outer optimizer state (to_state_dict; {} before a window)
    proposed: dict[str, np.ndarray]  # name -> float64 [P]: next segment's values ({}: none)
    val: np.ndarray  # float64 [P]: the last window's validation losses
    windows: np.ndarray  # int64 []: windows trained so far
    #: float64 [P, M]: each member's weights of the M objectives ([P, 0]: one objective)
    weights: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))


class UnrolledHypergrad(Strategy):
    """Online truncated unrolled hypergradients; see the module docstring.

    Settings: :class:`HypergradConfig`.
    """

    name = "hypergrad"
    Config = HypergradConfig
    State = HypergradState
    capabilities = Capabilities(own_segments=True, objectives=True)

    @classmethod
    def check_objectives(cls, config: Any, objectives: tuple, constraints: tuple) -> None:
        """Several objectives: each member descends its own weighting of them
        (:func:`jaxhpo.objectives.scalarise`), so they must depend on the learned
        hyperparameters through training; constraints have no gradient form here."""
        del config
        if constraints:
            raise ValueError(
                f"strategy.constraints: the {cls.name} strategy descends weighted objectives "
                "and has no constraint form; drop the constraints or use pbt, halving or bo"
            )
        for o in objectives:
            if o.metric in MEASURED:
                raise ValueError(
                    f"strategy.objectives.{o.metric}: measured from the model's shape, it does "
                    f"not depend on what the {cls.name} strategy learns (no hypergradient)"
                )

    def __init__(self, config: OuterConfig | None = None, /, **fields):
        super().__init__(config, **fields)
        self.outer_opt = outer_optimizer(self.config.outer, self.config.outer_lr)
        #: compiled windows, keyed by (population, steps, space): a compile cache, no state
        self._windows: dict[Any, Any] = {}

    def check(self, train_steps: int, segment_steps: int) -> None:
        if self.config.chunk and segment_steps % self.config.chunk:
            raise ValueError(
                f"strategy.chunk: {self.config.chunk} does not divide train.segment_steps="
                f"{segment_steps}"
            )

    def init(self, seed: int, space: Space, size: int | None):
        if size is None or size < 1:
            raise ValueError(f"population.size: the hypergrad strategy needs >= 1, got {size}")
        check_continuous(space, self.name)
        if not space.searched:
            raise ValueError("space: the hypergrad strategy needs a searched dimension")
        cols = (
            space.sobol(seed, size) if self.config.sampler == "sobol" else space.sample(seed, size)
        )
        cols = fill_points(space, cols, self.config.points)
        n = len(self.objectives)
        state = HypergradState(
            space=space,
            outer={},
            proposed={},
            val=np.zeros(0),
            windows=np.asarray(0, np.int64),
            weights=spread_weights(size, n, seed) if n > 1 else np.zeros((size, 0)),
        )
        return state, cols

    # -- the window ----------------------------------------------------------------------------
    def _window(self, population, num_steps: int, space: Space):
        cache_key = (id(population), num_steps, space)
        if cache_key in self._windows:
            return self._windows[cache_key]
        names = continuous(space)
        outer, remat, chunk = self.outer_opt, self.config.remat, self.config.chunk
        objectives = self.objectives

        def program(pop, z, outer_state, weights, train_data, val_data, valid):
            step_fn = member.make_step(population, train_data, valid)
            val_fn = member.make_val(population, val_data, objectives)

            def one(args):
                m, z, o, w = args
                hp = member.member_hparams(population, m)
                fixed = {k: v for k, v in hp.items() if k not in names}
                val, g, final, losses = unrolled.hypergradient(
                    step_fn,
                    lambda c, h: val_fn(c, h, w if objectives else None),
                    m,
                    z,
                    fixed,
                    num_steps=num_steps,
                    remat=remat,
                    chunk=chunk,
                )
                updates, new_o = outer.update(g, o, z)
                new_z = optax.apply_updates(z, updates)
                finite = [jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(g)]
                ok = jnp.isfinite(val) & jnp.all(jnp.stack(finite)) & m.active & ~m.diverged
                keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(ok, x, y), a, b)
                return final, keep(new_z, z), keep(new_o, o), val, losses

            f = over_members(one, population.mode, population.chunk_size)
            return f((pop, z, outer_state, weights))

        fn = jax.jit(program)
        self._windows = {cache_key: fn}  # one population structure at a time
        return fn

    def train_segment(self, state, population, pop, data, num_steps, valid_steps):
        space = state.space
        names = continuous(space)
        hp = population.get_hparams(pop)
        z = unrolled.to_unconstrained({k: hp[k] for k in names})
        z = {k: jnp.nan_to_num(v) for k, v in z.items()}  # inactive (NaN): not read, no gradient
        template = jax.vmap(self.outer_opt.init)(z)
        if state.outer:
            outer_state = serialization.from_state_dict(template, state.outer)
        else:
            outer_state = template
        fn = self._window(population, num_steps, space)
        valid = jnp.asarray(valid_steps, jnp.int32)
        weights = member_weights(state, pop.step.shape[0])
        pop, new_z, outer_state, val, losses = fn(
            pop, z, outer_state, weights, data[0], data[1], valid
        )
        new = {k: np.asarray(v, np.float64) for k, v in unrolled.from_unconstrained(new_z).items()}
        for k, (lo, hi) in bounds(space).items():
            new[k] = np.where(np.isnan(np.asarray(hp[k])), np.nan, np.clip(new[k], lo, hi))
        state = next_window(state, outer_state, new, val)
        return state, population.place(pop), losses

    def update(self, state: HypergradState, obs: Observation):
        proposed = state.proposed
        if not proposed:
            return state, PopulationUpdate()
        P = len(obs.member_id)
        new = {k: np.asarray(v, np.float64).reshape(P) for k, v in proposed.items()}
        events = []
        for i in range(P):
            before = {k: float(obs.hparams[k][i]) for k in new}
            after = {k: float(np.float32(new[k][i])) for k in new}
            was = [float(np.float32(v)) for v in before.values()]  # NaN: inactive, no event
            if not np.array_equal(list(after.values()), was, equal_nan=True):
                events.append(
                    {
                        "kind": "explore",
                        "member": int(obs.member_id[i]),
                        "before": before,
                        "after": after,
                    }
                )
        return state.replace(proposed={}), PopulationUpdate(hparams=new, events=events)


def member_weights(state: HypergradState, size: int) -> jax.Array:
    """The members' objective weights [P, M] as the program takes them ([P, 0]: one
    objective); under k-fold cross-validation (``size`` = trials x folds) each trial's weights
    repeat over its folds, as :class:`~jaxhpo.strategies.cv.CrossValidated` lays members out."""
    w = np.asarray(state.weights, np.float32).reshape(len(state.weights), -1)
    if w.shape[1] == 0:
        return jnp.zeros((size, 0), jnp.float32)
    return jnp.asarray(np.repeat(w, size // w.shape[0], axis=0))


def next_window(state: HypergradState, outer_state, proposed, val) -> HypergradState:
    """``state`` after a window: the outer state, the proposal and the validation losses."""
    return state.replace(
        outer=jax.tree.map(np.asarray, serialization.to_state_dict(outer_state)),
        proposed=proposed,
        val=np.asarray(val, np.float64),
        windows=np.asarray(int(state.windows) + 1, np.int64),
    )
