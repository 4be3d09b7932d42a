"""NSGA-II over the population, in generations (``strategy.name: nsga2``).

Deb, Pratap, Agarwal & Meyarivan 2002, "A fast and elitist multiobjective genetic algorithm:
NSGA-II", IEEE TEVC 6(2), 182-197 (doi:10.1109/4235.996017); simulated binary crossover (SBX):
Deb & Agrawal 1995, "Simulated binary crossover for continuous search space", Complex Systems
9(2); polynomial mutation: Deb & Goyal 1996, "A combined genetic adaptive search (GeneAS) for
engineering design", Computer Science and Informatics 26(4). The operators follow pymoo's
(Blank & Deb 2020, arXiv:2002.04504) ``SBX`` and ``PM``.

**Search coordinates.** The space's unit coordinates (:meth:`jaxhpo.space.Space.to_unit`):
``D = len(space.searched)`` variables in ``[0, 1]``; log-scaled floats are uniform in ``log``;
ints and choices own equal-width bins (as the evosax adapter's coordinates, before its logit).

**A generation.** Every ``generation_steps`` (default: one segment) the ``P`` members' objectives
are told (:meth:`Observation.fitness_matrix`: each objective minimised; with constraints, Deb's
constrained domination puts feasible members first). The parents and the told offspring
(``2P`` points; ``P`` in the first generation) are sorted by :func:`jaxhpo.pareto.order`
(non-dominated rank, then crowding distance) and the best ``P`` survive as the next parents.
``P`` offspring are bred from them: binary tournaments on (rank, crowding), SBX on each pair
(probability ``crossover_prob``, each variable exchanged with probability 0.5, distribution
index ``crossover_eta``), then polynomial mutation of each variable with probability
``mutation_prob`` (default ``1 / D``, index ``mutation_eta``). Every member is re-initialised
with its offspring's hyperparameters (a fresh member with a new id), so each generation trains
from scratch for ``generation_steps``. With one objective it is a real-coded genetic algorithm
with elitist survival.

The first generation is uniform in unit coordinates, its first members ``strategy.points`` (and
a warm start's best members). Diverged members are infeasible with an infinite violation: they
survive only when nothing else can.

**Randomness and state.** ``root = jax.random.key(seed)``; the first generation is drawn with
``fold_in(root, 0)``, generation ``g + 1`` bred with ``fold_in(root, g + 1)``. The state
(:class:`NSGA2State`) holds the key, the generation, the current members' coordinates and the
parents' coordinates, objectives and violations: a resumed run breeds what the uninterrupted one
would. Selection and variation are one jitted ``jax.numpy`` function.

Events: one ``generation`` event per tell: ``generation``, ``algorithm`` (``nsga2``), ``front``
(parents on the first front after survival), ``diverged``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo import pareto
from jaxhpo.objectives import violation
from jaxhpo.space import Space
from jaxhpo.strategies.base import Capabilities, StrategyState, static
from jaxhpo.strategies.decision import Observation, PopulationUpdate, check_proposed
from jaxhpo.strategies.warm import GenerationalConfig, GenerationalSearch, apply_points


@dataclasses.dataclass(frozen=True)
class NSGA2Config(GenerationalConfig):
    """``strategy:`` settings of NSGA-II (and :class:`GenerationalConfig`'s)."""

    crossover_prob: float = 0.9  # probability that a pair of parents is crossed (SBX)
    crossover_eta: float = 15.0  # SBX distribution index (larger: children nearer the parents)
    mutation_eta: float = 20.0  # polynomial mutation's distribution index
    mutation_prob: float | None = None  # per variable (None: 1 / number of searched dims)

    def __post_init__(self):
        super().__post_init__()
        for name in ("crossover_prob", "mutation_prob"):
            p = getattr(self, name)
            if p is None and name == "mutation_prob":
                continue
            if isinstance(p, bool) or not (isinstance(p, int | float) and 0 <= p <= 1):
                raise ValueError(f"strategy.{name}: must be a probability in [0, 1], got {p!r}")
        for name in ("crossover_eta", "mutation_eta"):
            eta = getattr(self, name)
            if isinstance(eta, bool) or not (isinstance(eta, int | float) and 0 <= eta < 1e6):
                raise ValueError(f"strategy.{name}: must be a number >= 0, got {eta!r}")


class NSGA2State(StrategyState):
    """NSGA-II's state: ``P`` members, ``D`` searched dims, ``M`` objectives, ``Q`` parents
    (0 before the first tell, then ``P``)."""

    space: Space = static()  # the search space (structure)
    key: np.ndarray  # uint32 [2]: the root key's data
    generation: np.ndarray  # int64 []: generations told so far
    x: np.ndarray  # float32 [P, D]: the current members' unit coordinates
    parents_x: np.ndarray  # float32 [Q, D]: the parents' unit coordinates
    parents_f: np.ndarray  # float64 [Q, M]: their objectives, minimised (+inf: diverged)
    parents_v: np.ndarray  # float64 [Q]: their constraint violations (0: feasible)


class NSGA2(GenerationalSearch):
    """NSGA-II in the space's unit coordinates; see the module docstring.

    Settings: :class:`NSGA2Config`.
    """

    name = "nsga2"
    Config = NSGA2Config
    State = NSGA2State
    capabilities = Capabilities(objectives=True)

    def init(self, seed: int, space: Space, size: int | None):
        if size is None or isinstance(size, bool) or size < 2:
            raise ValueError(f"population.size: nsga2 needs at least 2 members, got {size}")
        D = len(space.searched)
        if D == 0:
            raise ValueError("space: nsga2 needs at least one searched dimension")
        P = int(size)
        key_data = np.asarray(jax.random.key_data(jax.random.key(seed)))
        x = np.asarray(jax.random.uniform(_key(key_data, 0), (P, D)), np.float32)
        seeded = self.seed(space, P)
        if seeded.points:
            cols = apply_points(space, space.from_unit(x), seeded)
            x = np.asarray(space.to_unit(cols), np.float32)
        state = NSGA2State(
            space=space,
            key=key_data,
            generation=np.asarray(0, np.int64),
            x=x,
            parents_x=np.zeros((0, D), np.float32),
            parents_f=np.zeros((0, 0), np.float64),
            parents_v=np.zeros((0,), np.float64),
        )
        return state, space.from_unit(np.asarray(x, np.float64))

    def update(self, state: NSGA2State, obs: Observation):
        if not self.due(int(obs.step)):
            return state, PopulationUpdate()
        x = np.asarray(state.x, np.float32)
        P = x.shape[0]
        check_proposed(self.name, P, obs)
        F = obs.fitness_matrix()
        v = violation(obs.metrics, obs.constraints, P)
        v = np.where(np.all(np.isfinite(F), axis=1), v, np.inf)
        px, pf = np.asarray(state.parents_x, np.float32), np.asarray(state.parents_f)
        pv = np.asarray(state.parents_v, np.float64)
        if len(px):
            x_pool = np.concatenate([px, x])
            f_pool = np.concatenate([pf.reshape(len(px), -1), F])
            v_pool = np.concatenate([pv, v])
        else:
            x_pool, f_pool, v_pool = x, F, v
        keep = np.asarray(pareto.order(f_pool, v_pool))[:P]
        px, pf, pv = x_pool[keep], f_pool[keep], v_pool[keep]
        rank = pareto.rank(pf, pv)
        crowd = pareto.crowding_distance(pf, rank)  # non-finite rows count as 0 there
        g = int(state.generation)
        event = {
            "kind": "generation",
            "generation": g,
            "algorithm": "nsga2",
            "front": int(np.sum((np.asarray(rank) == 0) & (pv <= 0))),
            "diverged": int(np.sum(~np.all(np.isfinite(F), axis=1))),
        }
        new_state = state.replace(
            generation=np.asarray(g + 1, np.int64),
            parents_x=px,
            parents_f=pf.astype(np.float64),
            parents_v=pv.astype(np.float64),
        )
        if self.last(obs):
            return new_state, PopulationUpdate(events=[event], done=True)
        cfg = self.config
        p_m = cfg.mutation_prob if cfg.mutation_prob is not None else 1.0 / x.shape[1]
        settings = (cfg.crossover_prob, cfg.crossover_eta, cfg.mutation_eta, p_m)
        child = offspring(_key(state.key, g + 1), jnp.asarray(px), rank, crowd, *settings)
        child = np.asarray(child, np.float32)
        new_state = new_state.replace(x=child)
        hparams = state.space.from_unit(np.asarray(child, np.float64))
        fresh = np.ones(P, bool)
        return new_state, PopulationUpdate(reinit=fresh, hparams=hparams, events=[event])


def _key(key_data: np.ndarray, generation: int) -> jax.Array:
    root = jax.random.wrap_key_data(jnp.asarray(key_data, jnp.uint32))
    return jax.random.fold_in(root, generation)


@jax.jit
def offspring(
    key: jax.Array,
    x_PxD: jax.Array,
    rank_P: jax.Array,
    crowd_P: jax.Array,
    crossover_prob: float,
    crossover_eta: float,
    mutation_eta: float,
    mutation_prob: float,
) -> jax.Array:
    """``P`` children of the parents ``x_PxD`` (unit coordinates): binary tournaments on
    (rank, crowding), SBX, polynomial mutation; float32 [P, D] in ``[0, 1]``."""
    P, D = x_PxD.shape
    k_sel, k_sbx, k_pm = jax.random.split(key, 3)
    pairs = (P + 1) // 2
    a_2Q, b_2Q = jax.random.randint(k_sel, (2, 2 * pairs), 0, P)
    better = (rank_P[a_2Q] < rank_P[b_2Q]) | (
        (rank_P[a_2Q] == rank_P[b_2Q]) & (crowd_P[a_2Q] >= crowd_P[b_2Q])
    )
    win_2Q = jnp.where(better, a_2Q, b_2Q)
    p1_QxD, p2_QxD = x_PxD[win_2Q[:pairs]], x_PxD[win_2Q[pairs:]]
    c1_QxD, c2_QxD = sbx(k_sbx, p1_QxD, p2_QxD, crossover_prob, crossover_eta)
    children_PxD = jnp.concatenate([c1_QxD, c2_QxD])[:P]
    return polynomial_mutation(k_pm, children_PxD, mutation_prob, mutation_eta)


def sbx(key, p1_QxD, p2_QxD, prob, eta):
    """Simulated binary crossover in ``[0, 1]`` (bounded, as pymoo's ``SBX``): each pair is
    crossed with probability ``prob``, each variable of a crossed pair with probability 0.5."""
    k_pair, k_var, k_u, k_swap = jax.random.split(key, 4)
    Q, D = p1_QxD.shape
    y1, y2 = jnp.minimum(p1_QxD, p2_QxD), jnp.maximum(p1_QxD, p2_QxD)
    gap = jnp.maximum(y2 - y1, 1e-12)
    u = jax.random.uniform(k_u, (Q, D))

    def betaq(beta):
        alpha = 2.0 - beta ** -(eta + 1.0)
        lo = (u * alpha) ** (1.0 / (eta + 1.0))
        hi = (1.0 / jnp.maximum(2.0 - u * alpha, 1e-12)) ** (1.0 / (eta + 1.0))
        return jnp.where(u <= 1.0 / alpha, lo, hi)

    c1 = 0.5 * (y1 + y2 - betaq(1.0 + 2.0 * y1 / gap) * (y2 - y1))
    c2 = 0.5 * (y1 + y2 + betaq(1.0 + 2.0 * (1.0 - y2) / gap) * (y2 - y1))
    c1, c2 = jnp.clip(c1, 0.0, 1.0), jnp.clip(c2, 0.0, 1.0)
    swap = jax.random.bernoulli(k_swap, 0.5, (Q, D))
    c1, c2 = jnp.where(swap, c2, c1), jnp.where(swap, c1, c2)
    crossed = jax.random.bernoulli(k_pair, prob, (Q, 1)) & jax.random.bernoulli(k_var, 0.5, (Q, D))
    crossed = crossed & (p2_QxD - p1_QxD != 0)
    return jnp.where(crossed, c1, p1_QxD), jnp.where(crossed, c2, p2_QxD)


def polynomial_mutation(key, x_PxD, prob, eta):
    """Polynomial mutation in ``[0, 1]`` (as pymoo's ``PM``): each variable with probability
    ``prob``."""
    k_do, k_u = jax.random.split(key)
    u = jax.random.uniform(k_u, x_PxD.shape)
    power = 1.0 / (eta + 1.0)
    low = 2.0 * u + (1.0 - 2.0 * u) * (1.0 - x_PxD) ** (eta + 1.0)
    high = 2.0 * (1.0 - u) + 2.0 * (u - 0.5) * x_PxD ** (eta + 1.0)
    delta = jnp.where(u < 0.5, low**power - 1.0, 1.0 - high**power)
    do = jax.random.bernoulli(k_do, prob, x_PxD.shape)
    return jnp.clip(jnp.where(do, x_PxD + delta, x_PxD), 0.0, 1.0)
