"""Early stopping over one population: successive halving, Hyperband and the median stopping rule.

* Successive halving: Jamieson & Talwalkar 2016, "Non-stochastic Best Arm Identification and
  Hyperparameter Optimization", arXiv:1502.07943; as used by Li et al. 2017.
* Hyperband: Li, Jamieson, DeSalvo, Rostamizadeh & Talwalkar 2017, "Hyperband: A Novel
  Bandit-Based Approach to Hyperparameter Optimization", JMLR 18, arXiv:1603.06560.
* Median stopping rule: Golovin et al. 2017, "Google Vizier: A Service for Black-Box
  Optimization", KDD 2017, section 3.2.1.

Every member starts at step 0 and the whole population trains side by side. A stopped member stops
training (``active=False``, costs no update); in *compact* mode the population is also re-packed
to the survivors (``keep``), so later segments train a smaller array (one new shape per rung).
Hyperband runs all its brackets at once in one population: bracket ``s`` is a contiguous block of
members, halved at its own rungs.

Strategy state (:class:`HalvingState`, :class:`MedianState`) holds numpy arrays indexed by the
strategy's own member order, with the member ids (slots may be re-packed); it is checkpointed
like any pytree.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import numpy as np

from jaxhpo.space import Space
from jaxhpo.strategies.base import Capabilities, Strategy, StrategyState
from jaxhpo.strategies.decision import Observation, PopulationUpdate
from jaxhpo.strategies.search import with_points

HALVING_MODES = ("masked", "compact")
SAMPLERS = ("random", "sobol")


def _int_field(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ValueError(f"{field}: must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{field}: must be >= {minimum}, got {value}")
    return int(value)


def _choice_field(value: Any, field: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{field}: unknown {value!r} (choose from {', '.join(choices)})")
    return value


def _sample(space: Space, sampler: str, seed: int, n: int, points=()) -> dict[str, np.ndarray]:
    """``n`` sampled members, the first ones ``strategy.points``."""
    cols = space.sobol(seed, n) if sampler == "sobol" else space.sample(seed, n)
    return with_points(space, cols, points)


#: ``state.member_id`` before the first observation: the strategy learns its members' ids from
#: the first population it is shown (slot order = the order ``init`` made them). The run loop
#: numbers them ``0..P-1``, but under k-fold cross-validation (:mod:`jaxhpo.strategies.cv`) a
#: trial is shown with its first fold's id (``0, k, 2k, ...``).
_UNBOUND = -1


class HalvingState(StrategyState):
    """Successive halving's and Hyperband's state; ``N`` members in the order ``init`` made them."""

    member_id: np.ndarray  # int64 [N]: their ids (-1 until the first observation)
    bracket: np.ndarray  # int64 [N]: each member's bracket
    alive: np.ndarray  # bool [N]: still training
    next_rung: np.ndarray  # int64 [brackets]: the next rung of each bracket


class MedianState(StrategyState):
    """The median stopping rule's state; ``N`` members in the order ``init`` made them."""

    member_id: np.ndarray  # int64 [N]: their ids (-1 until the first observation)
    alive: np.ndarray  # bool [N]: still training
    sum: np.ndarray  # float64 [N]: sum of each member's finite reports
    count: np.ndarray  # int64 [N]: how many finite reports
    best: np.ndarray  # float64 [N]: best (lowest) report so far


def _bind_ids(state, ids: np.ndarray, name: str):
    """``state`` with the member ids of the first observation, in the order ``init`` made them."""
    known = state.member_id
    if not np.all(known == _UNBOUND):
        return state
    ids = np.asarray(ids, np.int64)
    if ids.shape != known.shape:
        raise ValueError(
            f"strategy update: {name} made {known.size} members but was first shown {ids.size}"
        )
    return state.replace(member_id=ids.copy())


def _observed(state: Any, obs: Observation, name: str):
    """``(state with the ids bound, ids, their positions in the state's arrays, fitness)``."""
    ids = np.asarray(obs.member_id, np.int64)
    state = _bind_ids(state, ids, name)
    return state, ids, _positions(state.member_id, ids, name), obs.fitness()


def _positions(known: np.ndarray, ids: np.ndarray, name: str) -> np.ndarray:
    """Index of each observed member id in the strategy's per-member arrays."""
    ids = np.asarray(ids, np.int64)
    order = np.argsort(known, kind="stable")
    pos = order[np.minimum(np.searchsorted(known[order], ids), len(known) - 1)]
    if np.any(known[pos] != ids):
        unknown = sorted(set(ids.tolist()) - set(known.tolist()))
        raise ValueError(f"strategy update: {name} did not create members {unknown[:5]}")
    return pos


def _stop_event(member: int, fitness: float, reason: str) -> dict[str, Any]:
    return {"kind": "stop", "member": int(member), "fitness": float(fitness), "reason": reason}


@dataclasses.dataclass(frozen=True)
class HalvingConfig:
    """``strategy:`` settings of successive halving and Hyperband (the largest resource is
    ``train.steps``)."""

    eta: int = 3  # keep the top 1/eta of a bracket at each rung
    min_steps: int = 0  # the first rung, in steps (0: one segment)
    mode: str = "masked"  # masked (stopped members stay, inactive) | compact (re-pack)
    sampler: str = "random"  # the first members: random | sobol samples of the space
    #: explicit first members (name -> value); the rest are sampled
    points: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        _int_field(self.eta, "strategy.eta", 2)
        _int_field(self.min_steps, "strategy.min_steps", 0)
        _choice_field(self.mode, "strategy.mode", HALVING_MODES)
        _choice_field(self.sampler, "strategy.sampler", SAMPLERS)


class _Halving(Strategy):
    """Shared machinery: brackets of members, each halved at its own rungs (steps)."""

    Config = HalvingConfig
    # several objectives: promotion by non-dominated rank, then crowding
    capabilities = Capabilities(objectives=True)
    State = HalvingState

    def __init__(self, config: HalvingConfig | None = None, /, *, max_steps: int, **fields):
        super().__init__(config, **fields)
        self.max_steps = _int_field(max_steps, "strategy.max_steps", 1)
        if self.config.min_steps < 1:
            raise ValueError(f"strategy.min_steps: must be >= 1, got {self.config.min_steps}")
        if self.config.min_steps >= self.max_steps:
            raise ValueError(
                f"strategy.min_steps: must be < strategy.max_steps={self.max_steps}, "
                f"got {self.config.min_steps}"
            )
        self.rungs: tuple[tuple[int, ...], ...] = self._make_rungs()  # per bracket, steps

    @abc.abstractmethod
    def _make_rungs(self) -> tuple[tuple[int, ...], ...]:
        """The steps of each bracket's rungs (validated settings are on ``self``)."""

    @abc.abstractmethod
    def _bracket_sizes(self, size: int | None) -> tuple[int, ...]:
        """Members per bracket (checks ``population.size``)."""

    @classmethod
    def from_config(cls, config, train, metric="loss"):
        """``strategy.min_steps`` 0 is one segment; the largest resource is ``train.steps``."""
        del metric
        min_steps = config.min_steps or train.segment_steps
        return cls(config, min_steps=min_steps, max_steps=train.steps)

    def init(self, seed: int, space: Space, size: int | None):
        sizes = self._bracket_sizes(size)
        n = sum(sizes)
        state = HalvingState(
            member_id=np.full(n, _UNBOUND, np.int64),  # the first observation's ids
            bracket=np.repeat(np.arange(len(sizes), dtype=np.int64), sizes),
            alive=np.ones(n, bool),
            next_rung=np.zeros(len(sizes), np.int64),  # per bracket
        )
        return state, _sample(space, self.config.sampler, seed, n, self.config.points)

    def check(self, train_steps: int, segment_steps: int) -> None:
        cfg = self.config
        if train_steps != self.max_steps:
            raise ValueError(
                f"strategy.max_steps: {self.name} is set up for {self.max_steps} steps but "
                f"train.steps={train_steps}; they must be equal"
            )
        for b, rungs in enumerate(self.rungs):
            for i, r in enumerate(rungs):
                if r % segment_steps:
                    raise ValueError(
                        f"train.segment_steps: rung {i} of bracket {b} of {self.name} is at step "
                        f"{r} (strategy.min_steps={cfg.min_steps}, strategy.eta={cfg.eta}), "
                        f"not a multiple of train.segment_steps={segment_steps}"
                    )

    def update(self, state: HalvingState, obs: Observation):
        state, ids, pos, fit = _observed(state, obs, self.name)
        bracket = np.asarray(state.bracket)[pos]
        alive = np.array(state.alive, bool)
        next_rung = np.array(state.next_rung, np.int64)
        events: list[dict[str, Any]] = []
        for b, rungs in enumerate(self.rungs):
            while next_rung[b] < len(rungs) and obs.step >= rungs[next_rung[b]]:
                i = int(next_rung[b])
                next_rung[b] += 1
                slots = np.flatnonzero(alive[pos] & (bracket == b))
                if slots.size == 0:
                    continue
                k = max(1, slots.size // self.config.eta)
                # Best first; ties by member id; diverged (+inf) last and never kept.
                order = slots[np.lexsort((ids[slots], fit[slots]))]
                stop = np.concatenate([order[:k][~np.isfinite(fit[order[:k]])], order[k:]])
                where = f"rung {i} of bracket {b} (step {rungs[i]})"
                for s in stop[np.argsort(ids[stop], kind="stable")]:
                    alive[pos[s]] = False
                    why = (
                        f"not in the top {k} of {slots.size}" if np.isfinite(fit[s]) else "diverged"
                    )
                    events.append(_stop_event(ids[s], fit[s], f"{where}: {why}"))
        live = np.flatnonzero(alive[pos])
        if live.size and not np.any(np.isfinite(fit[live])):
            # Nothing can train any more (every member left diverged): end the study.
            for s in live:
                alive[pos[s]] = False
                events.append(_stop_event(ids[s], fit[s], "diverged: no member left to train"))
        new_state = state.replace(alive=alive, next_rung=next_rung)
        done = not alive.any()
        if not events:
            return new_state, PopulationUpdate(done=done)
        active = alive[pos]
        upd = PopulationUpdate(active=active, events=events, done=done)
        if self.config.mode == "compact" and not done:
            upd.keep = np.flatnonzero(active)
            events.append({"kind": "compact", "keep": ids[upd.keep].tolist()})
        return new_state, upd


class SuccessiveHalving(_Halving):
    """Successive halving over the whole population (one bracket).

    All ``P`` members start together; at each rung ``min_steps * eta**i < max_steps`` the top
    ``max(1, n_alive // eta)`` alive members by fitness keep training (ties: lower member id wins;
    diverged members are always stopped), the others stop. P=27, eta=3: 27 -> 9 -> 3 -> 1.

    Args:
        eta: Halving rate (``strategy.eta``), an integer >= 2.
        min_steps: Steps before the first rung (``strategy.min_steps``).
        max_steps: Training length; must equal ``train.steps`` (``strategy.max_steps``).
        mode: ``"masked"`` (stopped members stay, inactive) or ``"compact"`` (the population is
            re-packed to the survivors at each rung) (``strategy.mode``).
        sampler: ``"random"`` or ``"sobol"`` initial configurations (``strategy.sampler``).
    """

    name = "halving"

    def _make_rungs(self):
        rungs, r = [], self.config.min_steps
        while r < self.max_steps:
            rungs.append(r)
            r *= self.config.eta
        return (tuple(rungs),)

    def _bracket_sizes(self, size):
        if size is None or isinstance(size, bool) or size < 1:
            raise ValueError(f"population.size: successive halving needs a size >= 1, got {size}")
        return (int(size),)


class Hyperband(_Halving):
    """Hyperband: every bracket of successive halving at once, in one population.

    With ``R = max_steps / min_steps`` and ``s_max = floor(log_eta R)``, bracket ``s`` (for
    ``s = s_max .. 0``, bracket index ``b = s_max - s``) starts ``n_s = ceil((s_max + 1) /
    (s + 1) * eta**s)`` configurations and halves them at steps ``r_s * eta**i < max_steps`` with
    ``r_s = max_steps * eta**-s`` (Li et al. 2017, Algorithm 1). The population size is
    ``sum(n_s)``: R=81, eta=3 gives brackets of 81, 34, 15, 8, 5 members starting at 1, 3, 9, 27,
    81 units of ``min_steps`` (143 members).

    Args:
        eta: Halving rate (``strategy.eta``), an integer >= 2.
        min_steps: Smallest resource (``strategy.min_steps``).
        max_steps: Largest resource R, must equal ``train.steps``; every rung
            ``max_steps / eta**k`` (k = 1..s_max) must be a whole number of steps
            (``strategy.max_steps``).
        mode: ``"masked"`` or ``"compact"`` (``strategy.mode``).
        sampler: ``"random"`` or ``"sobol"`` initial configurations (``strategy.sampler``).
    """

    name = "hyperband"
    capabilities = Capabilities(decides_size=True, objectives=True)

    def _make_rungs(self):
        cfg = self.config
        s_max = 0
        while self.config.min_steps * self.config.eta ** (s_max + 1) <= self.max_steps:
            s_max += 1
        if self.max_steps % self.config.eta**s_max:
            raise ValueError(
                f"strategy.max_steps: Hyperband rungs fall at max_steps / eta**k (k=1..{s_max}), "
                f"so {self.max_steps} must be a multiple of {self.config.eta**s_max} "
                f"(e.g. min_steps * eta**{s_max} = {cfg.min_steps * cfg.eta**s_max})"
            )
        self.s_max = s_max
        self.brackets: list[dict[str, Any]] = []
        for s in range(s_max, -1, -1):
            r = self.max_steps // self.config.eta**s
            n = -(-((s_max + 1) * self.config.eta**s) // (s + 1))
            rungs = tuple(r * self.config.eta**i for i in range(s))
            self.brackets.append({"s": s, "n": n, "r_steps": r, "rungs": rungs})
        return tuple(b["rungs"] for b in self.brackets)

    def _bracket_sizes(self, size):
        cfg = self.config
        sizes = tuple(b["n"] for b in self.brackets)
        if size is not None and size != sum(sizes):
            raise ValueError(
                f"population.size: Hyperband with eta={cfg.eta}, min_steps={cfg.min_steps}, "
                f"max_steps={self.max_steps} runs {sum(sizes)} members (brackets of "
                f"{', '.join(map(str, sizes))}) but population.size={size}; set "
                f"population.size={sum(sizes)} or leave it unset"
            )
        return sizes


@dataclasses.dataclass(frozen=True)
class MedianConfig:
    """``strategy:`` settings of the median stopping rule."""

    min_steps: int = 0  # grace period in steps (0: one segment)
    sampler: str = "random"  # the first members: random | sobol samples of the space
    #: explicit first members (name -> value); the rest are sampled
    points: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        _int_field(self.min_steps, "strategy.min_steps", 0)
        _choice_field(self.sampler, "strategy.sampler", SAMPLERS)


class MedianStopping(Strategy):
    """The median stopping rule (Golovin et al. 2017), masked.

    After the grace period ``min_steps``, at every segment an active member stops if its best
    objective so far is strictly worse than the median of the running averages (mean of all its
    reports so far) of the other members (active ones, and stopped ones over their history up to
    their stop). Diverged members stop at once.

    Args:
        min_steps: Grace period in steps (``strategy.min_steps``).
        sampler: ``"random"`` or ``"sobol"`` initial configurations (``strategy.sampler``).
    """

    name = "median"
    Config = MedianConfig
    State = MedianState

    def __init__(self, config: MedianConfig | None = None, /, **fields):
        super().__init__(config, **fields)
        if self.config.min_steps < 1:
            raise ValueError(f"strategy.min_steps: must be >= 1, got {self.config.min_steps}")

    @classmethod
    def from_config(cls, config, train, metric="loss"):
        del metric
        return cls(config, min_steps=config.min_steps or train.segment_steps)

    def init(self, seed: int, space: Space, size: int | None):
        if size is None or isinstance(size, bool) or size < 1:
            raise ValueError(f"population.size: median stopping needs a size >= 1, got {size}")
        state = MedianState(
            member_id=np.full(size, _UNBOUND, np.int64),  # the first observation's ids
            alive=np.ones(size, bool),
            sum=np.zeros(size),
            count=np.zeros(size, np.int64),
            best=np.full(size, np.inf),
        )
        return state, _sample(space, self.config.sampler, seed, size, self.config.points)

    def check(self, train_steps: int, segment_steps: int) -> None:
        if self.config.min_steps >= train_steps:
            raise ValueError(
                f"strategy.min_steps: the grace period ({self.config.min_steps}) must be < "
                f"train.steps={train_steps}"
            )

    def update(self, state: MedianState, obs: Observation):
        state, ids, pos, fit = _observed(state, obs, self.name)
        alive = np.array(state.alive, bool)
        total, count = np.array(state.sum, np.float64), np.array(state.count, np.int64)
        best = np.array(state.best, np.float64)
        report = alive[pos]  # members that trained in this segment report a new value
        good = report & np.isfinite(fit)
        total[pos[good]] += fit[good]
        count[pos[good]] += 1
        best[pos[report]] = np.minimum(best[pos[report]], fit[report])
        events: list[dict[str, Any]] = []
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = total / count
        has = count > 0
        for s in np.flatnonzero(report):
            p = pos[s]
            if not np.isfinite(fit[s]):
                alive[p] = False
                events.append(_stop_event(ids[s], fit[s], f"diverged at step {obs.step}"))
                continue
            if obs.step < self.config.min_steps:
                continue
            others = has.copy()
            others[p] = False
            if not others.any():
                continue
            med = float(np.median(avg[others]))
            if best[p] > med:
                alive[p] = False
                reason = (
                    f"step {obs.step}: best {best[p]:.6g} worse than the median running "
                    f"average {med:.6g} of {int(others.sum())} others"
                )
                events.append(_stop_event(ids[s], fit[s], reason))
        new_state = state.replace(alive=alive, sum=total, count=count, best=best)
        done = not alive.any()
        if not events:
            return new_state, PopulationUpdate(done=done)
        return new_state, PopulationUpdate(active=alive[pos], events=events, done=done)


HALVING_STRATEGIES = {
    "halving": SuccessiveHalving,
    "hyperband": Hyperband,
    "median": MedianStopping,
}
