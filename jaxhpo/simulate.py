"""A host (numpy) stand-in for the run loop, with analytic learning curves as members.

It drives a strategy exactly as :func:`jaxhpo.run.loop.run` does (same segments, same
:class:`~jaxhpo.strategies.base.Observation`, updates checked and applied by the same
:func:`jaxhpo.run.update.apply_update`), so strategies
can be studied on synthetic learning curves in milliseconds (e.g. to check the budget claims of
Li et al. 2017, Hyperband, arXiv:1603.06560, in ``experiments/hyperband_curves.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from jaxhpo import pareto
from jaxhpo.objectives import Constraint, Objective, fitness_matrix, violation
from jaxhpo.run.update import apply_update
from jaxhpo.space import Space
from jaxhpo.strategies.base import Observation, Strategy

#: ``curve(hparams, member_ids, t_steps, rng) -> val_loss``: columns ``name -> [n]``, int ``[n]``
#: ids, int ``[n]`` steps trained; NaN/inf means the member diverged. A curve may return several
#: metrics as a mapping ``{metric: [n]}`` (the same metrics every call); a member with a non-finite
#: value in any of them diverged.
Curve = Callable[
    [dict[str, np.ndarray], np.ndarray, np.ndarray, np.random.Generator],
    np.ndarray | Mapping[str, np.ndarray],
]


@dataclasses.dataclass
class SimResult:
    """What a simulated study did.

    Attributes:
        table: One row per member per segment, like the run's metrics table: ``member``,
            ``step``, the hyperparameters, ``val_<metric>`` for every metric (``val_loss`` for
            a curve that returns one array), ``diverged``, ``active``,
            ``t`` (steps the member has trained). The untrained step-0 rows are left out.
        members: The final population, like ``members.csv`` (``steps``: steps trained).
        events: Lineage events of the applied updates, with ``step`` added.
        member_steps: Member-steps actually trained.
        steps: Training steps the study reached (``obs.step`` of the last observation).
        best_loss: Lowest fitness seen (``inf`` if none was finite): the validation loss, or
            the one objective minimised; with several objectives, the first objective
            minimised (see ``front`` and ``hypervolume`` instead).
        best_member: Id of the member that reached it (-1 if none).
        anytime: One row per segment: ``member_steps`` (cumulative), ``step``, ``best_loss``
            and ``best_member`` so far (anytime performance), and ``hypervolume`` (of every
            feasible evaluation so far, against ``reference``; NaN with one objective).
        front: With several objectives (or constraints): the table's rows on the Pareto front
            of every feasible evaluation of the study (one row per point, the first
            evaluation that reached it), else an empty frame.
        reference: The hypervolume's reference point, minimised objectives ``[M]`` (the one
            given, or the worst feasible value of each objective plus a tenth of its range,
            as the run's report); ``None`` with one objective.
    """

    table: pd.DataFrame
    members: pd.DataFrame
    events: list[dict[str, Any]]
    member_steps: int
    steps: int
    best_loss: float
    best_member: int
    anytime: pd.DataFrame
    front: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    reference: np.ndarray | None = None

    @property
    def hypervolume(self) -> float:
        """The final hypervolume (NaN with one objective)."""
        return float(self.anytime["hypervolume"].iloc[-1]) if len(self.anytime) else np.nan

    def hparams_of(self, member: int) -> dict[str, float]:
        """The hyperparameters a member was first seen with."""
        row = self.table[self.table["member"] == member].iloc[0]
        return {
            k: float(row[k])
            for k in self.table.columns
            if k not in _NOT_HPARAMS and not k.startswith("val_")
        }


_NOT_HPARAMS = ("member", "step", "diverged", "active", "t")


@dataclasses.dataclass(frozen=True)
class _Members:
    """The simulated population: per-slot ids, hyperparameters and curve state."""

    member_id: np.ndarray  # int [P]
    hp: dict[str, np.ndarray]  # name -> float64 [P]
    m: dict[str, np.ndarray]  # t, diverged, active, fresh, val_<metric>: [P] each

    @classmethod
    def first(cls, hp: dict[str, np.ndarray]) -> _Members:
        """The first population: every slot a fresh member, ids ``0..P-1``."""
        P = len(next(iter(hp.values())))
        m = {
            "t": np.zeros(P, np.int64),
            "diverged": np.zeros(P, bool),
            "active": np.ones(P, bool),
            "fresh": np.ones(P, bool),  # not evaluated since (re-)initialised
        }
        return cls(np.arange(P), hp, m)

    @property
    def size(self) -> int:
        return len(self.member_id)

    def row(self) -> dict[str, np.ndarray]:
        """A copy of the table's columns for this segment."""
        m = self.m
        cols = {"member": self.member_id, **self.hp}
        cols |= {c: v for c, v in m.items() if c.startswith("val_")}
        cols |= {"diverged": m["diverged"], "active": m["active"], "t": m["t"]}
        return {c: v.copy() for c, v in cols.items()}

    def observation(self, step: int, objectives=(), constraints=()) -> Observation:
        """What the strategy is told (copies: it may keep them): every metric, and the
        objectives (one: the study's metric and direction) and constraints."""
        r = self.row()
        hp = {n: r[n] for n in self.hp}
        metrics = {c[4:]: v for c, v in r.items() if c.startswith("val_")}
        extra: dict[str, Any] = {}
        if len(objectives) == 1 and not constraints:
            extra = {"objective": objectives[0].metric, "maximize": objectives[0].maximize}
        elif objectives:
            extra = {"objectives": tuple(objectives), "constraints": tuple(constraints)}
        return Observation(step, r["member"], hp, metrics, r["diverged"], r["active"], **extra)

    def take(self, slots: np.ndarray) -> _Members:
        return _Members(
            self.member_id[slots],
            {n: v[slots] for n, v in self.hp.items()},
            {c: v[slots] for c, v in self.m.items()},
        )


@dataclasses.dataclass(frozen=True)
class _Curves:
    """Learning curves behind the population interface :func:`jaxhpo.run.update.apply_update`
    drives, so a simulated study applies a strategy's update with the run loop's own code."""

    hparam_names: tuple[str, ...]

    @property
    def optional_names(self) -> tuple[str, ...]:
        """A curve reads NaN itself (an inactive conditional dimension)."""
        return self.hparam_names

    def copy_members(self, pop: _Members, parents) -> _Members:
        """Slot ``i`` receives everything of slot ``parents[i]`` but its id."""
        moved = pop.take(np.asarray(parents))
        return dataclasses.replace(moved, member_id=pop.member_id)

    def reinit_members(self, pop: _Members, root_key, mask, member_ids) -> _Members:
        """Slots in ``mask`` start a fresh curve with new ids (their hyperparameters kept)."""
        del root_key
        r = np.asarray(mask, bool)
        m = {c: v.copy() for c, v in pop.m.items()}
        fresh = {"t": 0, "diverged": False, "active": True, "fresh": True}
        fresh |= {c: np.nan for c in m if c.startswith("val_")}
        for c, v in fresh.items():
            m[c][r] = v
        return _Members(np.asarray(member_ids).copy(), pop.hp, m)

    def set_hparams(self, pop: _Members, values) -> _Members:
        hp = dict(pop.hp)
        for n, v in values.items():
            hp[n] = np.broadcast_to(np.asarray(v, np.float64), (pop.size,)).copy()
        return dataclasses.replace(pop, hp=hp)

    def set_active(self, pop: _Members, active) -> _Members:
        return dataclasses.replace(pop, m={**pop.m, "active": np.asarray(active, bool).copy()})

    def keep_members(self, pop: _Members, keep) -> _Members:
        return pop.take(np.asarray(keep))

    def for_size(self, size: int) -> _Curves:
        del size
        return self

    def place(self, pop: _Members) -> _Members:
        return pop


def _table(rows: list[dict[str, np.ndarray]], anytime: list[tuple]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame()
    n = [len(r["member"]) for r in rows]
    cols = {c: np.concatenate([r[c] for r in rows]) for c in rows[0]}
    step = np.repeat([a[1] for a in anytime], n)
    return pd.DataFrame({"member": cols.pop("member"), "step": step} | cols)


def _train(m, hp, ids, train, k, curve: Curve, rng) -> None:
    """One segment of ``k`` steps for the slots in ``train``, evaluated in place: a member
    that did not train keeps its last value; a non-finite value of any metric marks a trained
    member diverged (all its metrics NaN)."""
    m["t"][train] += k
    ev = train | m["fresh"]
    if ev.any():
        val = curve({n: v[ev] for n, v in hp.items()}, ids[ev], m["t"][ev], rng)
        val = dict(val) if isinstance(val, Mapping) else {"loss": val}
        cols = [c for c in m if c.startswith("val_")]
        if cols and sorted(cols) != sorted(f"val_{n}" for n in val):
            raise ValueError(
                f"simulate: the curve returned metrics {sorted(val)}, earlier "
                f"{sorted(c[4:] for c in cols)} (a curve returns the same metrics every call)"
            )
        finite = np.ones(int(ev.sum()), bool)
        for name, v in val.items():
            col = m.setdefault(f"val_{name}", np.full(len(ids), np.nan))
            col[ev] = np.asarray(v, np.float64)
            finite &= np.isfinite(col[ev])
        m["diverged"][ev] |= train[ev] & ~finite
        for c in m:
            if c.startswith("val_"):
                m[c][m["diverged"]] = np.nan
    m["fresh"][:] = False


def simulate(
    strategy: Strategy,
    space: Space,
    curve: Curve,
    *,
    steps: int,
    segment_steps: int,
    size: int | None = None,
    seed: int = 0,
    budget: int | None = None,
    objectives: Sequence[Objective] = (),
    constraints: Sequence[Constraint] = (),
    reference: Sequence[float] | None = None,
) -> SimResult:
    """Runs a study whose members are learning curves.

    Semantics of :func:`jaxhpo.run.loop.run`: segments of ``segment_steps`` (a shorter last one);
    only active, non-diverged members train (and count as member-steps); every member is evaluated
    after each segment, where a member that did not train keeps its last value; a non-finite loss
    marks a trained member diverged (NaN metrics from then on). The strategy is told every segment,
    the last included; its update is applied (parents, reinit, hparams, active, keep) unless it
    says ``done`` or training is over. Stops early before a segment that would take the study
    past ``budget`` member-steps.

    Args:
        strategy: The strategy under study (``check`` is called first).
        space: The search space handed to ``strategy.init``.
        curve: Validation metrics after ``t`` steps (see :data:`Curve`); called only for the
            members whose value changed (in slot order), with one rng seeded from ``seed``.
        steps: ``train.steps``.
        segment_steps: ``train.segment_steps``.
        size: ``population.size`` (``None`` when the strategy decides).
        seed: The study's seed (strategy and curve noise).
        budget: Optional cap on member-steps.
        objectives: Parsed ``strategy.objectives`` (:func:`jaxhpo.objectives.parse_objectives`)
            over the curve's metrics; empty: the one metric ``loss``, minimised.
        constraints: Parsed ``strategy.constraints``.
        reference: The hypervolume's reference point (minimised objectives, ``[M]``); ``None``:
            from the whole table, as the run's report does.

    Returns:
        The :class:`SimResult`.
    """
    objectives, constraints = tuple(objectives), tuple(constraints)
    strategy.check(steps, segment_steps)
    if len(objectives) > 1:  # a strategy that needs them before its first observation
        strategy = strategy.for_study(objectives)
    state, cols = strategy.init(seed, space, size)
    pop = _Members.first({k: np.asarray(v, np.float64) for k, v in cols.items()})
    curves, next_id = _Curves(tuple(pop.hp)), pop.size
    rng = np.random.default_rng([seed, 0x51])
    used, step, best, best_member = 0, 0, np.inf, -1
    rows, events, anytime = [], [], []
    n_segments = -(-steps // segment_steps)
    for segment in range(1, n_segments + 1):
        k = min(segment_steps, steps - step)
        ids, hp, m = pop.member_id, pop.hp, pop.m
        train = m["active"] & ~m["diverged"]
        if budget is not None and used + k * int(train.sum()) > budget:
            break
        used += k * int(train.sum())
        step += k
        _train(m, hp, ids, train, k, curve, rng)
        rows.append(pop.row())
        obs = pop.observation(step, objectives, constraints)
        obs = dataclasses.replace(obs, train_steps=steps)  # the run's length
        fit = obs.fitness_matrix()[:, 0]
        if fit.min() < best:
            best, best_member = float(fit.min()), int(ids[np.argmin(fit)])
        anytime.append((used, step, best, best_member))
        state, upd = strategy.update(state, obs)
        if upd.done or segment == n_segments:
            break
        curves, pop, next_id = apply_update(curves, pop, upd, None, next_id)
        events += [{"step": step, **e} for e in upd.events]
    ids, hp, m = pop.member_id, pop.hp, pop.m
    vals = {c: v for c, v in m.items() if c.startswith("val_")}
    members = pd.DataFrame(
        {"member": ids, **hp, **vals, "diverged": m["diverged"], "steps": m["t"]}
    )
    table = _table(rows, anytime)
    several = (len(objectives) > 1 or bool(constraints)) and len(table) > 0
    hv, front, ref = _front(table, objectives, constraints, reference) if several else (None,) * 3
    anytime = pd.DataFrame(anytime, columns=["member_steps", "step", "best_loss", "best_member"])
    anytime["hypervolume"] = np.nan if hv is None else hv
    return SimResult(
        table=table,
        members=members,
        events=events,
        member_steps=used,
        steps=step,
        best_loss=best,
        best_member=best_member,
        anytime=anytime,
        front=pd.DataFrame() if front is None else front,
        reference=ref,
    )


def _front(table: pd.DataFrame, objectives, constraints, reference):
    """``(hypervolume after each segment [S], the front's rows, the reference point)`` of
    every feasible evaluation in ``table``."""
    metrics = {o.metric: table[f"val_{o.metric}"].to_numpy() for o in objectives}
    metrics |= {c.metric: table[f"val_{c.metric}"].to_numpy() for c in constraints}
    F = fitness_matrix(metrics, objectives, table["diverged"].to_numpy(bool))
    ok = (violation(metrics, constraints, len(table)) <= 0) & np.all(np.isfinite(F), axis=1)
    if reference is None:
        lo, hi = (F[ok].min(axis=0), F[ok].max(axis=0)) if ok.any() else (0.0, 0.0)
        ref = hi + 0.1 * np.where(hi > lo, hi - lo, 1.0) * np.ones(F.shape[1])
    else:
        ref = np.asarray(reference, np.float64)
    step = table["step"].to_numpy()
    hv = [pareto.hypervolume(F[ok & (step <= s)], ref) for s in np.unique(step)]
    feasible = table[ok]
    Ff = F[ok]
    _, first = np.unique(Ff, axis=0, return_index=True)  # one row per point, the first
    first = np.sort(first)
    on = np.zeros(len(Ff), bool)
    if len(first):
        on[first] = np.asarray(pareto.rank(Ff[first])) == 0
    return np.asarray(hv), feasible[on].reset_index(drop=True), ref
