"""Evolution strategies and other black-box optimisers from evosax, as a population strategy.

:class:`EvoSearch` is a thin adapter: it re-implements no evolution strategy. It hands the
population's fitness to an `evosax <https://github.com/RobertTLange/evosax>`_ 0.3 algorithm
(Lange 2023, "evosax: JAX-based Evolution Strategies", arXiv:2212.04180) through its
``init / ask / tell`` interface and turns the points it asks for into hyperparameters. Algorithms
of note (any name of ``evosax.algorithms`` works, see :data:`ALIASES`):

* CMA-ES — Hansen 2016, "The CMA Evolution Strategy: A Tutorial", arXiv:1604.00772;
  Sep-CMA-ES, its diagonal variant (Ros & Hansen 2008);
* OpenAI-ES — Salimans, Ho, Chen, Sidor & Sutskever 2017, "Evolution Strategies as a Scalable
  Alternative to Reinforcement Learning", arXiv:1703.03864;
* SNES and xNES — Wierstra, Schaul, Glasmachers, Sun, Peters & Schmidhuber 2014, "Natural
  Evolution Strategies", JMLR 15;
* PGPE — Sehnke, Osendorfer, Rückstieß, Graves, Peters & Schmidhuber 2010, "Parameter-exploring
  policy gradients", Neural Networks 23(4);
* PSO — Kennedy & Eberhart 1995, "Particle swarm optimization", ICNN'95;
* a simple genetic algorithm (Such et al. 2017, arXiv:1712.06567) and differential evolution
  (Storn & Price 1997).

**Search coordinates.** The ES searches the space's *unconstrained* coordinates
(:meth:`jaxhpo.space.Space.to_unconstrained`): ``z = logit(u)`` of the unit coordinate ``u`` of
every searched dimension, so ``D = len(space.searched)`` and every ``z`` in ``R^D`` decodes to a
valid configuration (:meth:`~jaxhpo.space.Space.from_unconstrained`: ``u = sigmoid(z)``).
``Float`` dimensions are linear in ``u`` (in ``log`` for log-scaled ones, so a log-scaled range is
log-uniform in ``u``); an ``Int`` ``low..high`` maps ``[low - 0.5, high + 0.5]`` to ``[0, 1]``
and rounds, so every integer owns an equal-width bin of ``u``; a ``Choice`` of ``k`` values splits
``[0, 1]`` into ``k`` equal bins, in the order the space lists them. Ints and choices are thus
piecewise-constant in ``z``: the ES still moves continuously, and a member trains with the value
of the bin its point falls in. ``z = 0`` is the centre of the space; a standard deviation of about
1.8 in ``z`` (the logistic distribution's) spreads over the whole range, so ``sigma_init=1`` covers
most of it.

**Population.** The ES population size is the population's member count (``population.size``);
the first generation is asked around the centre of the space (``z = 0``), or around the mean of
``points`` (each a full or partial assignment; a missing name sits at the centre). Distribution
based algorithms (CMA-ES, NES, ...) start from that mean with standard deviation
``sigma_init`` (``params.std_init`` and/or a constant ``std_schedule``); population based ones
(GA, PSO, DE, ...) need an evaluated population to start, so their first generation is drawn here
as ``mean + sigma_init * N(0, I)`` and their ``init`` receives it with its fitness at the first
tell.

**Schedules.**

* ``generational`` (the default): every ``generation_steps`` (a multiple of
  ``train.segment_steps``; default one segment) the fitness of the generation is told to the ES,
  the next generation is asked, and every member is re-initialised (a fresh member with a new id,
  ``reinit``) with its new hyperparameters, so each generation trains from scratch for
  ``generation_steps``. ``train.steps`` must be a whole number of generations.
* ``online``: every ``ready_steps`` (after ``min_steps``) the fitness of the live members is told
  and the new points are set as the hyperparameters of the *same* members, whose weights keep
  training (as in PBT, with the ES as the explore step and no copying). A diverged member cannot
  recover its weights, so it alone is re-initialised. The fitness of a live member changes as it
  trains, which distribution based algorithms absorb (they forget old generations) but elitist
  ones take at face value (PSO's personal bests, the GA's elites, DE's parents).

**Fitness.** The ES minimises :meth:`Observation.fitness` (the objective, negated when
maximised). A diverged member (NaN/inf) gets the *worst finite fitness of its generation plus the
generation's finite range* (``max - min``, or 1 when that is 0): strictly worse than every finite
member, on the objective's own scale (a huge constant would swamp algorithms that use raw fitness
differences, such as ARS). When no member is finite, all get 0.

**Several objectives** (``strategy.objectives``, or constraints): the population is cut into
``strategy.groups`` groups, each its own evosax algorithm on its own Chebyshev weighting of
the objectives (:mod:`jaxhpo.strategies.evo_groups`); one objective keeps one group.

**Randomness.** With ``root = jax.random.key(seed)`` and, for generation ``g``,
``k_init, k_ask, k_tell = jax.random.split(jax.random.fold_in(root, g), 3)``: ``init`` calls
``es.init(k_init(0), mean, params)`` then asks generation 0 with ``k_ask(0)`` (population based:
``x0 = mean + sigma_init * normal(k_ask(0), (P, D))``); the update that ends generation ``g``
tells it with ``k_tell(g)`` (population based, the first time: ``es.init(k_tell(0), x0, fitness,
params)``) and asks generation ``g + 1`` with ``k_ask(g + 1)``. Fitness is told as float32. So
the adapter's proposals equal driving the evosax algorithm by hand with these keys (the tests
check this), and a resumed run proposes what the uninterrupted one would have.

**State.** :class:`EvoState`: the evosax state as ``flax.serialization.to_state_dict`` (``es``),
the root key's data, the generation, whether the ES was told once, the current points and the
space. It survives :func:`jaxhpo.checkpoint.pack_tree` / ``unpack_tree``; ``update`` restores the
evosax state with ``flax.serialization.from_state_dict`` against a template from ``es.init``. The
evosax algorithm itself is structure, rebuilt from the settings, the population size and the
dimension (and cached, :data:`_ES_CACHE`), never kept on the strategy.

Events: one ``generation`` event per tell — ``generation``, ``algorithm``, ``best_fitness`` (the
minimised objective, as in ``exploit`` events) and ``best_member`` of the told generation,
``best`` (its hyperparameters), ``mean`` (the ES mean after the tell,
decoded to hyperparameters; population based algorithms: the decoded mean of the told points),
``diverged`` (how many members diverged).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jaxhpo.objectives import spread_weights
from jaxhpo.space import Space
from jaxhpo.strategies import evo_groups, evo_steps
from jaxhpo.strategies.base import (
    Capabilities,
    Strategy,
    StrategyState,
    check_between_segments,
    fill_points,
    static,
)
from jaxhpo.strategies.decision import (  # noqa: F401  (shape_fitness re-exported)
    Observation,
    PopulationUpdate,
    check_proposed,
    generation_event,
    shape_fitness,
)
from jaxhpo.strategies.evo_algorithms import (  # noqa: F401  (re-exported)
    _ES_CACHE,
    ALIASES,
    DEFAULT_LEARNING_RATES,
    UNSUPPORTED,
    _build_es,
    _freeze,
    _is_population_based,
    resolve_algorithm,
)
from jaxhpo.strategies.warm import GenerationalConfig, WarmSource

SCHEDULES = ("generational", "online")


@dataclasses.dataclass(frozen=True)
class EvoConfig(GenerationalConfig):
    """``strategy:`` settings of the evosax strategy (and :class:`GenerationalConfig`'s)."""

    #: an evosax 0.3 algorithm by alias (:data:`ALIASES`: cma_es, sep_cma_es, open_es, snes,
    #: xnes, pgpe, ars, ga, pso, de, ...) or registry name, case-insensitive
    algorithm: str = "cma_es"
    schedule: str = "generational"  # generational (fresh members) | online (live members)
    #: initial search std, unconstrained coordinates (params.std_init / a constant schedule)
    sigma_init: float = 1.0
    #: the mean's learning rate of algorithms with an optax optimizer (None: the adapter's)
    learning_rate: float | None = None
    ready_steps: int | None = None  # online: tell/ask every this many steps (None: a segment)
    min_steps: int = 0  # online: no update before this step
    params: dict[str, float] = dataclasses.field(default_factory=dict)  # default_params fields
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # constructor arguments
    #: several objectives: this many ES groups, each with its own scalarisation weights
    #: (:mod:`jaxhpo.strategies.evo_groups`; None: groups of at least 4 members)
    groups: int | None = None

    def __post_init__(self):
        super().__post_init__()
        resolve_algorithm(self.algorithm)
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"strategy.schedule: unknown {self.schedule!r} (choose from {', '.join(SCHEDULES)})"
            )
        ready = self.ready_steps
        if ready is not None and (
            isinstance(ready, bool) or not isinstance(ready, int | np.integer) or ready < 1
        ):
            raise ValueError(
                f"strategy.ready_steps: must be an integer >= 1 or null, got {ready!r}"
            )
        if not (isinstance(self.min_steps, int | np.integer) and self.min_steps >= 0):
            raise ValueError(f"strategy.min_steps: must be an integer >= 0, got {self.min_steps!r}")
        if not (np.isfinite(self.sigma_init) and self.sigma_init > 0):
            raise ValueError(f"strategy.sigma_init: must be > 0, got {self.sigma_init!r}")
        lr = self.learning_rate
        if lr is not None and not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"strategy.learning_rate: must be > 0, got {lr!r}")
        g = self.groups
        if g is not None and (isinstance(g, bool) or not isinstance(g, int | np.integer) or g < 1):
            raise ValueError(f"strategy.groups: must be an integer >= 1 or null, got {g!r}")


class EvoState(StrategyState):
    """The evosax adapter's state."""

    space: Space = static()  # the search space (structure)
    es: dict[str, Any]  # the evosax state, as flax.serialization.to_state_dict (K > 1: stacked)
    key: np.ndarray  # uint32 [2]: the root key's data
    generation: np.ndarray  # int64 []: generations told so far
    started: np.ndarray  # bool []: the ES was told once (population based: built at that tell)
    x: np.ndarray  # float32 [P, D]: the points the current members were given (unconstrained)
    #: float64 [K, M]: each ES group's objective weights ([1, 0]: one objective, one group)
    weights: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((1, 0)))


class EvoSearch(Strategy):
    """An evosax algorithm searching the space's unconstrained coordinates; see the module
    docstring.

    Settings: :class:`EvoConfig`.
    """

    name = "evo"
    Config = EvoConfig
    State = EvoState
    capabilities = Capabilities(objectives=True)

    def __init__(self, config: EvoConfig | None = None, /, *, metric: str = "loss", **fields):
        super().__init__(config, **fields)
        self.algorithm = resolve_algorithm(self.config.algorithm)
        self.warm = WarmSource.from_config(self.config, metric)  # its best members join points

    @classmethod
    def from_config(cls, config, train, metric="loss"):
        del train
        return cls(config, metric=metric)

    # -- schedule ------------------------------------------------------------------------------

    @property
    def interval(self) -> int | None:
        """Steps between tells (``None``: every update, i.e. every segment)."""
        return (
            self.config.generation_steps
            if self.config.schedule == "generational"
            else self.config.ready_steps
        )

    def member_steps(self, train_steps: int, segment_steps: int) -> int:
        if self.config.schedule == "generational":  # fresh members every generation
            return self.config.generation_steps or segment_steps
        return train_steps

    def check(self, train_steps: int, segment_steps: int) -> None:
        gen = self.config.schedule == "generational"
        field = "generation_steps" if gen else "ready_steps"
        every = self.interval or segment_steps
        check_between_segments(field, every, segment_steps, "the ES is told between segments")
        if gen and train_steps % every:
            raise ValueError(
                f"strategy.generation_steps: train.steps={train_steps} is not a whole number of "
                f"generations of {every} steps (the last generation would train fewer steps)"
            )

    def _due(self, step: int) -> bool:
        every = self.interval
        if self.config.schedule == "online" and step < max(self.config.min_steps, 1):
            return False
        return every is None or step % every == 0

    # -- points ------------------------------------------------------------------------------

    @staticmethod
    def _decode(space: Space, x: np.ndarray) -> dict[str, np.ndarray]:
        cols = space.from_unconstrained(np.asarray(x, np.float64))
        return {k: np.asarray(cols[k]) for k in space.searched}

    def _point(self, space: Space, x: np.ndarray) -> dict[str, Any]:
        cols = self._decode(space, np.asarray(x)[None])
        return {k: _scalar(v[0]) for k, v in cols.items()}

    # -- Strategy ------------------------------------------------------------------------------

    def init(self, seed: int, space: Space, size: int | None):
        if size is None or isinstance(size, bool) or size < 2:
            raise ValueError(
                f"population.size: the evo strategy needs at least 2 members, got {size}"
            )
        D = len(space.searched)
        if D == 0:
            raise ValueError("space: the evo strategy needs at least one searched dimension")
        several = len(self.objectives) > 1
        K = self.config.groups or evo_groups.default_groups(int(size), several)
        evo_groups.check_groups(K, int(size))
        es, params = evo_steps.make_es(self.algorithm, self.config, int(size) // K, D)
        mean = self._initial_mean(space)
        key_data = np.asarray(jax.random.key_data(jax.random.key(seed)))
        xs, states = [], []
        for k in range(K):
            kd = evo_groups.group_key_data(key_data, k, K)
            x, es_state = evo_steps.first(
                self.algorithm, self.config.sigma_init, es, params, kd, mean
            )
            xs.append(x)
            states.append(evo_steps.to_dict(es_state))
        x = np.concatenate(xs)
        M = len(self.objectives)
        state = EvoState(
            space=space,
            es=evo_groups.stack(states),
            key=key_data,
            generation=np.asarray(0, np.int64),
            started=np.asarray(False),
            x=x,
            weights=spread_weights(K, M, seed) if several else np.zeros((K, 0)),
        )
        cols = space.from_unconstrained(np.asarray(x, np.float64))
        return state, cols

    def _initial_mean(self, space: Space) -> np.ndarray:
        D = len(space.searched)
        points = self.config.points + (self.warm.points(space) if self.warm else [])
        if not points:
            return np.zeros((D,), np.float32)
        centre = space.from_unconstrained(np.zeros((len(points), D)))
        cols = fill_points(space, {k: centre[k] for k in space.searched}, points)
        z = np.asarray(space.to_unconstrained(cols), np.float64)
        return z.mean(axis=0).astype(np.float32)

    def update(self, state: EvoState, obs: Observation) -> tuple[EvoState, PopulationUpdate]:
        if not self._due(int(obs.step)):
            return state, PopulationUpdate()
        space = state.space
        x = np.asarray(state.x, np.float32)
        P = x.shape[0]
        check_proposed(self.name, P, obs)
        K = len(state.weights)
        scalarised = evo_groups.group_fitness(obs, state.weights, K)
        raw = obs.fitness() if scalarised is None else scalarised
        es, params = evo_steps.make_es(self.algorithm, self.config, P // K, x.shape[1])
        g = int(np.asarray(state.generation))
        new_x, means, states = [], [], []
        for k, es_dict in enumerate(evo_groups.unstack(state.es, K)):
            rows = slice(k * (P // K), (k + 1) * (P // K))
            kd = evo_groups.group_key_data(np.asarray(state.key, np.uint32), k, K)
            started = bool(np.asarray(state.started))
            xk, es_state, mean = evo_steps.tell_ask(
                self.algorithm, es, params, kd, g, space, started, x[rows], raw[rows], es_dict
            )
            new_x.append(xk)
            means.append(mean)
            states.append(evo_steps.to_dict(es_state))
        new_x = np.concatenate(new_x)
        best, event = generation_event(obs, raw, g, self.algorithm)
        mean = means[0]
        event |= {
            "best": self._point(space, x[best]),
            "mean": self._point(space, mean) if K == 1 and np.isfinite(mean).all() else None,
            "diverged": int(np.sum(~np.isfinite(raw))),
        }
        if K > 1:
            event["groups"] = K
        new_state = state.replace(
            es=evo_groups.stack(states),
            generation=np.asarray(g + 1, np.int64),
            started=np.asarray(True),
            x=new_x,
        )
        hparams = self._decode(space, new_x)
        if self.config.schedule == "generational":
            reinit = np.ones(P, bool)
        else:
            reinit = np.asarray(obs.diverged, bool).copy()
        return new_state, PopulationUpdate(
            reinit=reinit if reinit.any() else None, hparams=hparams, events=[event]
        )


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v
