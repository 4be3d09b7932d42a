"""Persistent evolution strategies (and truncated ES) over the live members of a population.

Vicol, Metz & Sohl-Dickstein 2021, "Unbiased Gradient Estimation in Unrolled Computation Graphs
with Persistent Evolution Strategies", arXiv:2112.13835 (:mod:`jaxhpo.hypergrad.pes`; the
estimator is evosax's ``PersistentES``).

The study has ONE point ``theta`` in the space's unconstrained coordinates
(:meth:`jaxhpo.space.Space.to_unconstrained`, as the ``evo`` strategy: every searched
dimension, ints and choices included, ``z = 0`` the centre of the space). The ``P`` members are
the ES particles, in antithetic pairs (``P`` even): member ``i`` trains with the hyperparameters
``decode(theta + eps_i)``, a fresh ``eps_i ~ N(0, sigma^2)`` every segment, and keeps its
weights from segment to segment (a *persistent* particle: its inner state is its own). Each
segment is one truncation; its fitness is the member's validation objective after the segment
(the minimised :meth:`~jaxhpo.strategies.base.Observation.fitness`). After every segment the ES
tells the fitnesses (``pes``: with every perturbation each particle has accumulated since the
run began, an unbiased estimate of the gradient of the loss summed over the run;
``truncated_es``: with this segment's only), steps ``theta`` with the outer optimizer
(``strategy.outer``, ``strategy.outer_lr``) and asks the next perturbations.

**Inner-problem horizon** (``strategy.horizon``, ``T`` steps; the paper's setting): the
inner problem restarts every ``T`` steps. After the segment that ends at a multiple of ``T``, the
ES tells as usual, then every member is re-initialised (``reinit``: fresh weights, a fresh
optimizer state) and every particle's accumulated perturbation is reset, so the next sums cover
one inner problem only. ``None`` (the default): one inner problem, the whole run. ``T`` must be
a multiple of ``train.segment_steps``.

A diverged member cannot go on: it is re-initialised (``reinit``) and its accumulated
perturbation cleared (its fitness counts as the worst finite one, as in ``evo``). Events: one
``explore`` per member per segment (before/after hyperparameters) and one ``generation`` with the
decoded mean ``theta`` (``mean``) and the best member.

State: :class:`PESState` (numpy, checkpointable). The evosax ``PersistentES`` object is
structure (the dimension, the particle count and the settings), rebuilt through a cache
(:func:`_make_es`), never kept on the strategy.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jaxhpo import conditions
from jaxhpo.hypergrad import pes
from jaxhpo.space import Space
from jaxhpo.strategies.base import (
    Capabilities,
    Strategy,
    StrategyState,
    check_between_segments,
    fill_points,
    static,
)
from jaxhpo.strategies.decision import Observation, PopulationUpdate
from jaxhpo.strategies.hypergrad import check_outer, outer_optimizer


@dataclasses.dataclass(frozen=True)
class PESConfig:
    """``strategy:`` settings of persistent and truncated ES."""

    sigma: float = 0.3  # perturbation std, unconstrained coordinates
    horizon: int | None = None  # inner problems restart every this many steps (None: never)
    outer_lr: float = 0.05  # outer learning rate, unconstrained coordinates
    outer: str = "adam"  # outer optimizer: adam | sgd
    #: explicit members whose mean is the first theta (name -> value)
    points: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if not self.sigma > 0:
            raise ValueError(f"strategy.sigma: must be > 0, got {self.sigma}")
        h = self.horizon
        if h is not None and (isinstance(h, bool) or not isinstance(h, int | np.integer) or h < 1):
            raise ValueError(f"strategy.horizon: must be an integer >= 1, got {h!r}")
        check_outer(self.outer, self.outer_lr)


class PESState(StrategyState):
    """The state of persistent (and truncated) ES."""

    space: Space = static()  # the search space (structure)
    es: dict[str, Any]  # the evosax PersistentES state, as flax.serialization.to_state_dict
    key: np.ndarray  # uint32 [2]: the root key's data
    generation: np.ndarray  # int64 []: segments told so far
    x: np.ndarray  # float32 [P, D]: the members' current points (unconstrained)


@functools.lru_cache(maxsize=32)
def _make_es(D: int, P: int, sigma: float, outer: str, outer_lr: float, persistent: bool):
    """The evosax ``PersistentES`` and its params (one object, so one compile, per structure)."""
    optimizer = outer_optimizer(outer, outer_lr)
    return pes.make_es(D, P, sigma=sigma, optimizer=optimizer, persistent=persistent)


class PersistentES(Strategy):
    """PES over live members; see the module docstring.

    Settings: :class:`PESConfig`.
    """

    name = "pes"
    Config = PESConfig
    State = PESState
    capabilities = Capabilities(
        no_buckets="it perturbs every searched value of members that keep training"
    )
    persistent = True

    def __init__(self, config: PESConfig | None = None, /, **fields):
        super().__init__(config, **fields)
        outer_optimizer(self.config.outer, self.config.outer_lr)  # checks the settings

    def check(self, train_steps: int, segment_steps: int) -> None:
        if self.config.horizon is not None:
            why = "inner problems restart between segments"
            check_between_segments("horizon", self.config.horizon, segment_steps, why)

    def _keys(self, key_data, generation: int):
        root = jax.random.wrap_key_data(jnp.asarray(key_data, jnp.uint32))
        return jax.random.split(jax.random.fold_in(root, generation), 3)

    @staticmethod
    def _decode(space: Space, x) -> dict[str, np.ndarray]:
        cols = space.from_unconstrained(np.asarray(x, np.float64))
        return {k: np.asarray(cols[k]) for k in space.searched}

    def _es(self, D: int, P: int):
        cfg = self.config
        return _make_es(D, P, cfg.sigma, cfg.outer, cfg.outer_lr, self.persistent)

    def init(self, seed: int, space: Space, size: int | None):
        if size is None or size < 2 or size % 2:
            raise ValueError(
                f"population.size: the {self.name} strategy needs an even number of members "
                f"(antithetic pairs), got {size}"
            )
        D = len(space.searched)
        if D == 0:
            raise ValueError(f"space: the {self.name} strategy needs a searched dimension")
        es, params = self._es(D, int(size))
        mean = np.zeros((D,), np.float32)
        if self.config.points:
            centre = space.from_unconstrained(np.zeros((len(self.config.points), D)))
            cols = fill_points(space, {k: centre[k] for k in space.searched}, self.config.points)
            mean = np.asarray(space.to_unconstrained(cols), np.float64).mean(0).astype(np.float32)
        key_data = np.asarray(jax.random.key_data(jax.random.key(seed)))
        k_init, k_ask, _ = self._keys(key_data, 0)
        with jax.numpy_rank_promotion("allow"):
            es_state = es.init(k_init, jnp.asarray(mean), params)
            x, es_state = es.ask(k_ask, es_state, params)
        x = np.asarray(x, np.float32)
        state = PESState(
            space=space,
            es=jax.tree.map(np.asarray, serialization.to_state_dict(es_state)),
            key=key_data,
            generation=np.asarray(0, np.int64),
            x=x,
        )
        return state, space.from_unconstrained(np.asarray(x, np.float64))

    def _template(self, es, params, key_data, D: int):
        with jax.numpy_rank_promotion("allow"):
            k_init, _, _ = self._keys(key_data, 0)
            return es.init(k_init, jnp.zeros((D,)), params)

    def update(self, state: PESState, obs: Observation) -> tuple[PESState, PopulationUpdate]:
        space = state.space
        x = np.asarray(state.x, np.float32)
        P = x.shape[0]
        es, params = self._es(x.shape[1], P)
        fitness = obs.fitness()
        finite = np.isfinite(fitness)
        if finite.any():
            lo, hi = fitness[finite].min(), fitness[finite].max()
            fitness = np.where(finite, fitness, hi + (hi - lo if hi > lo else 1.0))
        else:
            fitness = np.zeros_like(fitness)
        g = int(state.generation)
        _, k_ask, k_tell = self._keys(state.key, g + 1)
        template = self._template(es, params, state.key, x.shape[1])
        es_state = serialization.from_state_dict(template, state.es)
        if space.when:  # inactive coordinates reached no member: no gradient from them
            act = jnp.asarray(conditions.active_coords(space, x))
            es_state = es_state.replace(pert_accum=jnp.where(act, es_state.pert_accum, 0.0))
        with jax.numpy_rank_promotion("allow"):
            es_state, _ = es.tell(
                k_tell, jnp.asarray(x), jnp.asarray(fitness, jnp.float32), es_state, params
            )
            reinit = np.asarray(obs.diverged, bool)
            restart = self.config.horizon is not None and int(obs.step) % self.config.horizon == 0
            if restart:  # the inner problem ends: every particle starts a new one
                reinit = np.ones_like(reinit)
            if reinit.any():  # a restarted particle starts a new accumulation
                accum = jnp.where(jnp.asarray(reinit)[:, None], 0.0, es_state.pert_accum)
                es_state = es_state.replace(pert_accum=accum)
            new_x, es_state = es.ask(k_ask, es_state, params)
        new_x = np.asarray(new_x, np.float32)
        new = self._decode(space, new_x)
        events = []
        for i in range(P):
            events.append(
                {
                    "kind": "explore",
                    "member": int(obs.member_id[i]),
                    "before": {k: float(obs.hparams[k][i]) for k in new},
                    "after": {k: float(new[k][i]) for k in new},
                }
            )
        best = int(np.argmin(fitness))
        mean = self._decode(space, np.asarray(es_state.mean)[None])
        events.append(
            {
                "kind": "generation",
                "generation": g,
                "algorithm": self.name,
                "best_fitness": float(fitness[best]),
                "best_member": int(obs.member_id[best]),
                "mean": {k: float(v[0]) for k, v in mean.items()},
                "diverged": int(np.sum(obs.diverged)),
                "restart": bool(restart),
            }
        )
        state = state.replace(
            es=jax.tree.map(np.asarray, serialization.to_state_dict(es_state)),
            generation=np.asarray(g + 1, np.int64),
            x=new_x,
        )
        upd = PopulationUpdate(hparams=new, reinit=reinit if reinit.any() else None, events=events)
        return state, upd


class TruncatedES(PersistentES):
    """Truncated ES: as :class:`PersistentES` with the perturbation accumulators reset after
    every segment (biased like truncated backpropagation; for comparison)."""

    name = "truncated_es"
    persistent = False
