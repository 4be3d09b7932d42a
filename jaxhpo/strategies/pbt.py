"""Population Based Training (Jaderberg et al. 2017, arXiv:1711.09846).

Every ``ready_steps`` steps (after ``min_steps``), members are ranked by the validation objective;

* **exploit** — *truncation*: each member of the bottom ``fraction`` copies a random member of the
  top ``fraction``; *tournament*: each member meets a random other member and copies it if it
  ranks higher. A copy is the *whole member* — parameters, optimizer state with its moments and
  hyperparameters, step — done as one gather inside jit by the population (a member is an index
  in one array, so a member can never load another's checkpoint with its own configuration);
* **explore** — each member that copied perturbs the searched hyperparameters: ``multiply`` by a
  factor drawn from ``factors`` (e.g. x0.8 / x1.2), or add ``gaussian`` noise of std ``sigma`` in
  the space's unit coordinates (log space for log-scaled dimensions); with probability
  ``resample_prob`` a value is redrawn from the space instead. ``Int`` dimensions move to a
  neighbouring integer, ``Choice`` dimensions to a neighbouring value. Values are always clipped
  to the space. Only members that copied explore (the paper's Algorithm 1), unless
  ``explore_all``: then every member perturbs at every ready step (the toy problem's setup).

The "explore only" ablation (no weights copied) comes in two named forms: ``exploit="none"``
(alias ``none_all``): every member explores at every ready step; ``exploit="none_bottom"``:
Algorithm 1 without its copy, only the members truncation would replace (the bottom
``fraction``, and diverged ones) perturb their own hyperparameters and keep their weights.

Ranking is total and deterministic: equal scores rank by slot, so a population with two
identical scores still exploits. Diverged members (NaN/inf) rank last and are always replaced.

The decision is one pure ``jax.numpy`` function (:func:`pbt_step`) of a key, the step, the fitness
and the hyperparameters; the host strategy (:class:`PBT`) calls it between segments, and the
compiled loop (``train.compiled``) calls the same function inside one ``lax.scan`` over segments.
The strategy's state (:class:`PBTState`) is its key and the space; the random numbers at a step
depend only on the seed and the step, so a resumed run makes the same decisions.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo import conditions
from jaxhpo.space import Choice, Float, Int, Space, _numeric_from_unit, _numeric_to_unit
from jaxhpo.strategies.base import (
    Capabilities,
    Strategy,
    StrategyState,
    check_between_segments,
    fill_points,
    static,
)
from jaxhpo.strategies.decision import Observation, PopulationUpdate, lineage_events

EXPLOIT = ("truncation", "tournament", "none", "none_all", "none_bottom")
EXPLORE = ("perturb", "none")
PERTURB = ("multiply", "gaussian")
SAMPLERS = ("random", "sobol")


def rank(fitness_P: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Ranks (0 = best) and the order best-first; equal fitness ranks by slot index."""
    order = jnp.argsort(fitness_P, stable=True)
    ranks = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
    return ranks, order


def select_parents(
    key: jax.Array,
    fitness_P: jax.Array,
    method: str,
    fraction: float,
    groups_P: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Exploit: which member each slot copies.

    Args:
      key: PRNG key.
      fitness_P: objective to minimise, float [P]; NaN/inf count as diverged.
      method: ``truncation``, ``tournament`` or ``none`` (also ``none_all``, ``none_bottom``:
        nobody copies).
      fraction: size of the top and bottom groups of truncation selection (of P).
      groups_P: int [P]; when given, selection runs within each group (shape buckets: a member
        copies only members of its own shape), with the group's size in place of P.

    Returns:
      ``parents`` int32 [P] (``i`` where slot ``i`` keeps itself) and ``copied`` bool [P].
    """
    P = fitness_P.shape[0]
    slots = jnp.arange(P, dtype=jnp.int32)
    if method.startswith("none") or P < 2:
        return slots, jnp.zeros((P,), bool)
    fit = jnp.where(jnp.isfinite(fitness_P), fitness_P, jnp.inf)
    if groups_P is not None:
        return _select_in_groups(key, fit, method, fraction, jnp.asarray(groups_P, jnp.int32))
    ranks, order = rank(fit)
    order = order.astype(jnp.int32)
    n_top = max(1, int(P * fraction))
    k_top, k_opp = jax.random.split(key)
    donors = order[jax.random.randint(k_top, (P,), 0, n_top)]  # a random member of the top
    bad = ~jnp.isfinite(fit)
    if method == "truncation":
        copied = ranks >= P - n_top
    else:  # binary tournament against a random other member
        opponent = (slots + jax.random.randint(k_opp, (P,), 1, P)) % P
        copied = ranks[opponent] < ranks
        donors = jnp.where(bad, donors, opponent)
    copied = (copied | bad) & jnp.isfinite(fit[donors]) & (donors != slots)
    return jnp.where(copied, donors, slots), copied


def _select_in_groups(key, fit, method: str, fraction: float, groups):
    """:func:`select_parents` within each group: members are sorted by (group, fitness, slot);
    a member's rank and the group's size come from its position in that order."""
    P = fit.shape[0]
    slots = jnp.arange(P, dtype=jnp.int32)
    order = jnp.lexsort((slots, fit, groups)).astype(jnp.int32)  # last key is the primary one
    pos = jnp.zeros_like(order).at[order].set(slots)
    sorted_groups = groups[order]
    start = jnp.searchsorted(sorted_groups, groups, side="left").astype(jnp.int32)
    count = jnp.searchsorted(sorted_groups, groups, side="right").astype(jnp.int32) - start
    rank_g = pos - start
    n_top = jnp.maximum(1, jnp.floor(count * fraction)).astype(jnp.int32)
    k_top, k_opp = jax.random.split(key)
    u = jax.random.uniform(k_top, (P,))
    donors = order[start + jnp.minimum((u * n_top).astype(jnp.int32), n_top - 1)]
    bad = ~jnp.isfinite(fit)
    if method == "truncation":
        copied = rank_g >= count - n_top
    else:  # binary tournament against a random other member of the group
        v = jax.random.uniform(k_opp, (P,))
        shift = 1 + jnp.minimum((v * (count - 1)).astype(jnp.int32), jnp.maximum(count - 2, 0))
        opponent = order[start + (rank_g + shift) % count]
        copied = pos[opponent] < pos
        donors = jnp.where(bad, donors, opponent)
    copied = (copied | bad) & jnp.isfinite(fit[donors]) & (donors != slots) & (count > 1)
    return jnp.where(copied, donors, slots), copied


def explore(
    key: jax.Array,
    hparams: Mapping[str, jax.Array],
    mask_P: jax.Array,
    space: Space,
    *,
    perturb: str = "multiply",
    factors: Sequence[float] = (0.8, 1.2),
    sigma: float = 0.1,
    resample_prob: float = 0.0,
    frozen: Sequence[str] = (),
) -> dict[str, jax.Array]:
    """Perturbs the searched hyperparameters of the members in ``mask_P``; others unchanged.

    Args:
      key: PRNG key.
      hparams: name -> float [P]; every searched dimension of ``space`` must be present.
      mask_P: bool [P], members that explore.
      space: the search space (structure only; a Python loop over its dimensions at trace time).
      perturb: ``multiply`` (by a random element of ``factors``) or ``gaussian`` (noise of std
        ``sigma`` in unit coordinates).
      factors: multiplicative factors.
      sigma: std of the Gaussian perturbation in unit coordinates.
      resample_prob: probability of redrawing a value uniformly from the space (unit coords).
      frozen: names never perturbed (a member's structure in shape buckets); left out of the
        result.

    Returns:
      name -> float32 [P] new values of the searched dimensions, inside the space.
    """
    out = {}
    for i, name in enumerate(space.searched):
        if name in frozen:
            continue
        dim = space[name]
        v = jnp.asarray(hparams[name], jnp.float32)
        P = v.shape[0]
        k_f, k_n, k_r, k_u = jax.random.split(jax.random.fold_in(key, i), 4)
        f = jnp.asarray(factors, jnp.float32)[jax.random.randint(k_f, (P,), 0, len(factors))]
        if isinstance(dim, Choice):  # a neighbouring value, in the order the space lists them
            vals = jnp.asarray(dim.values, jnp.float32)
            idx = jnp.argmin(jnp.abs(v[:, None] - vals[None, :]), axis=1)
            step = jnp.where(jax.random.bernoulli(k_n, 0.5, (P,)), 1, -1)
            new = vals[jnp.clip(idx + step, 0, len(dim.values) - 1)]
        elif perturb == "multiply":
            new = v * f
            if isinstance(dim, Int):  # round; if that lands back on v, move one integer
                r = jnp.round(new)
                new = jnp.where(r == v, v + jnp.sign(f - 1.0), r)
        else:
            u = _numeric_to_unit(dim, v, jnp) + sigma * jax.random.normal(k_n, (P,))
            new = _numeric_from_unit(dim, jnp.clip(u, 0.0, 1.0), jnp)
            if isinstance(dim, Int):
                new = jnp.where(new == v, v + jnp.where(u > 0.5, 1.0, -1.0), new)
        if resample_prob > 0:
            fresh = _numeric_from_unit(dim, jax.random.uniform(k_u, (P,)), jnp)
            new = jnp.where(jax.random.bernoulli(k_r, resample_prob, (P,)), fresh, new)
        if isinstance(dim, Float | Int):
            new = jnp.clip(new, dim.low, dim.high)
        out[name] = jnp.where(mask_P, new.astype(jnp.float32), v)
    return out


@dataclasses.dataclass(frozen=True)
class PBTConfig:
    """``strategy:`` settings of PBT."""

    ready_steps: int | None = None  # exploit/explore every this many steps (None: one segment)
    min_steps: int = 0  # no exploit before this many steps
    exploit: str = "truncation"  # truncation | tournament | none (=none_all) | none_bottom
    fraction: float = 0.25  # truncation's top/bottom fraction, in (0, 0.5]
    explore: str = "perturb"  # perturb | none (exploit only)
    perturb: str = "multiply"  # multiply | gaussian
    factors: list[float] = dataclasses.field(default_factory=lambda: [0.8, 1.2])  # multiply's
    sigma: float = 0.1  # gaussian perturbation std, unit coordinates
    resample_prob: float = 0.0  # probability of resampling from the space during explore
    explore_all: bool = False  # every member explores at a ready step (else only those copied)
    sampler: str = "random"  # the first population: random | sobol samples of the space
    #: explicit first members (name -> value); the rest are sampled
    points: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        ready, factors = self.ready_steps, self.factors
        checks = [
            ("ready_steps", ready is None or ready >= 1, f"must be >= 1, got {ready}"),
            ("min_steps", self.min_steps >= 0, f"must be >= 0, got {self.min_steps}"),
            (
                "exploit",
                self.exploit in EXPLOIT,
                f"unknown '{self.exploit}' ({', '.join(EXPLOIT)})",
            ),
            ("fraction", 0 < self.fraction <= 0.5, f"must lie in (0, 0.5], got {self.fraction}"),
            (
                "explore",
                self.explore in EXPLORE,
                f"unknown '{self.explore}' ({', '.join(EXPLORE)})",
            ),
            (
                "perturb",
                self.perturb in PERTURB,
                f"unknown '{self.perturb}' ({', '.join(PERTURB)})",
            ),
            (
                "factors",
                len(factors) > 0 and all(f > 0 for f in factors),
                f"must be a non-empty list of positive numbers, got {list(factors)}",
            ),
            ("sigma", self.sigma > 0, f"must be > 0, got {self.sigma}"),
            (
                "resample_prob",
                0 <= self.resample_prob <= 1,
                f"must lie in [0, 1], got {self.resample_prob}",
            ),
            (
                "sampler",
                self.sampler in SAMPLERS,
                f"unknown '{self.sampler}' ({', '.join(SAMPLERS)})",
            ),
        ]
        for field, ok, msg in checks:
            if not ok:
                raise ValueError(f"strategy.{field}: {msg}")


class PBTState(StrategyState):
    """PBT's state: constant over a study (every decision folds the step into the key)."""

    space: Space = static()  # the search space explore perturbs in (structure, not traced)
    key: np.ndarray  # uint32 [2]: the root key's data (jax.random.key_data of key(seed))


class PBT(Strategy):
    """Population Based Training; see the module docstring.

    Settings: :class:`PBTConfig`.
    """

    name = "pbt"
    Config = PBTConfig
    State = PBTState
    # several objectives: exploit and explore by Pareto rank and crowding (MO-PBT)
    capabilities = Capabilities(compiled=True, objectives=True)

    def __init__(self, config: PBTConfig | None = None, /, **fields):
        super().__init__(config, **fields)
        if self.config.ready_steps is None:
            raise ValueError("strategy.ready_steps: required (from_config fills in one segment)")

    @classmethod
    def from_config(cls, config, train, metric="loss"):
        del metric
        return cls(config, ready_steps=config.ready_steps or train.segment_steps)

    def check(self, train_steps: int, segment_steps: int) -> None:
        ready = self.config.ready_steps
        check_between_segments("ready_steps", ready, segment_steps, "exploit happens between them")

    def init(self, seed: int, space: Space, size: int | None):
        if size is None or size < 2:
            raise ValueError(f"population.size: PBT needs at least 2 members, got {size}")
        cols = initial_population(space, seed, size, self.config.sampler, self.config.points)
        key = np.asarray(jax.random.key_data(jax.random.key(seed)))
        return PBTState(space=space, key=key), cols

    def ready(self, step: jax.Array | int) -> jax.Array | bool:
        return (step % self.config.ready_steps == 0) & (step >= max(self.config.min_steps, 1))

    def device_update(self, state, step, fitness_P, hparams, groups_P=None, frozen=()):
        """The decision as a pure function (also run inside the compiled loop).

        Returns ``(state, parents [P], copied [P], explored [P], hparams)``; all no-ops when the
        step is not a ready step. With ``groups_P`` (shape buckets) members exploit within their
        group; ``frozen`` names are not explored.
        """
        space = state.space
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), step)
        k_sel, k_exp = jax.random.split(key)
        parents, copied = select_parents(
            k_sel, fitness_P, self.config.exploit, self.config.fraction, groups_P
        )
        moved = {k: jnp.asarray(v, jnp.float32)[parents] for k, v in hparams.items()}
        everyone = self.config.exploit in ("none", "none_all") or self.config.explore_all
        explored = jnp.ones_like(copied) if everyone else copied
        if (
            self.config.exploit == "none_bottom" and not self.config.explore_all
        ):  # would have been replaced
            _, explored = select_parents(
                k_sel, fitness_P, "truncation", self.config.fraction, groups_P
            )
        if self.config.explore == "none":
            explored = jnp.zeros_like(copied)
        new = explore(
            k_exp,
            moved,
            explored,
            space,
            perturb=self.config.perturb,
            factors=self.config.factors,
            sigma=self.config.sigma,
            resample_prob=self.config.resample_prob,
            frozen=frozen,
        )
        # conditional dimensions: inactive ones emptied, ones a new parent value activates drawn
        new = conditions.complete_traced(space, {**moved, **new}, jax.random.fold_in(k_exp, 1))
        ready = self.ready(step)
        slots = jnp.arange(parents.shape[0], dtype=parents.dtype)
        hp = {
            k: jnp.where(ready, new.get(k, moved[k]), jnp.asarray(v, jnp.float32))
            for k, v in hparams.items()
        }
        return (
            state,
            jnp.where(ready, parents, slots),
            copied & ready,
            explored & ready,
            hp,
        )

    @functools.cached_property
    def _jitted(self):
        """:meth:`device_update`, jitted once per strategy object (a compile cache: it holds
        no state; the space is static in the state's tree definition)."""
        return jax.jit(self.device_update, static_argnames="frozen")

    def update(self, state: PBTState, obs: Observation) -> tuple[PBTState, PopulationUpdate]:
        if not self.ready(obs.step):
            return state, PopulationUpdate()
        space = state.space
        fit = obs.fitness().astype(np.float32)
        searched = {k: np.asarray(obs.hparams[k], np.float32) for k in space.searched}
        _, parents, copied, explored, hp = jax.device_get(
            self._jitted(state, np.int32(obs.step), fit, searched, obs.groups, frozen=obs.frozen)
        )
        parents, copied, explored = np.asarray(parents), np.asarray(copied), np.asarray(explored)
        # conditional dimensions: inactive ones emptied, ones a new parent value activates drawn
        hp = space.complete(hp, np.random.default_rng([*np.ravel(state.key), obs.step]))
        events = lineage_events(obs, fit, parents, copied, explored, hp)
        upd = PopulationUpdate(
            parents=parents if copied.any() else None,
            hparams={k: np.asarray(v) for k, v in hp.items()} if explored.any() else None,
            events=events,
        )
        return state, upd


def initial_population(
    space: Space, seed: int, size: int, sampler: str, points: Sequence[Mapping[str, float]]
) -> dict[str, np.ndarray]:
    """``points`` first (each a full or partial assignment of the searched dimensions; missing
    names are sampled), then samples of the space; checked against the space."""
    if len(points) > size:
        raise ValueError(f"strategy.points: {len(points)} points for a population of {size}")
    cols = space.sobol(seed, size) if sampler == "sobol" else space.sample(seed, size)
    return fill_points(space, cols, points)
