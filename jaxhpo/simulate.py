"""A host (numpy) stand-in for the run loop, with analytic learning curves as members.

It drives a strategy exactly as :func:`jaxhpo.experiment.run` does (same segments, same
:class:`~jaxhpo.strategies.base.Observation`, updates applied in the same order), so strategies
can be studied on synthetic learning curves in milliseconds (e.g. to check the budget claims of
Li et al. 2017, Hyperband, arXiv:1603.06560, in ``experiments/hyperband_curves.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from jaxhpo.space import Space
from jaxhpo.strategies.base import Observation, PopulationUpdate, Strategy

#: ``curve(hparams, member_ids, t_steps, rng) -> val_loss``: columns ``name -> [n]``, int ``[n]``
#: ids, int ``[n]`` steps trained; NaN/inf means the member diverged.
Curve = Callable[[dict[str, np.ndarray], np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


@dataclasses.dataclass
class SimResult:
    """What a simulated study did.

    Attributes:
        table: One row per member per segment, like the run's metrics table: ``member``,
            ``step``, the hyperparameters, ``val_loss``, ``diverged``, ``active``,
            ``t`` (steps the member has trained). The untrained step-0 rows are left out.
        members: The final population, like ``members.csv`` (``steps``: steps trained).
        events: Lineage events of the applied updates, with ``step`` added.
        member_steps: Member-steps actually trained.
        steps: Training steps the study reached (``obs.step`` of the last observation).
        best_loss: Lowest validation loss seen (``inf`` if none was finite).
        best_member: Id of the member that reached it (-1 if none).
        anytime: One row per segment: ``member_steps`` (cumulative), ``step``, ``best_loss``
            and ``best_member`` so far (anytime performance).
    """

    table: pd.DataFrame
    members: pd.DataFrame
    events: list[dict[str, Any]]
    member_steps: int
    steps: int
    best_loss: float
    best_member: int
    anytime: pd.DataFrame

    def hparams_of(self, member: int) -> dict[str, float]:
        """The hyperparameters a member was first seen with."""
        row = self.table[self.table["member"] == member].iloc[0]
        return {k: float(row[k]) for k in self.table.columns if k not in _NOT_HPARAMS}


_NOT_HPARAMS = ("member", "step", "val_loss", "diverged", "active", "t")


def _check(upd: PopulationUpdate, size: int, names: tuple[str, ...]) -> None:
    for field in ("parents", "reinit", "active"):
        value = getattr(upd, field)
        if value is not None and np.shape(value) != (size,):
            raise ValueError(f"strategy update: {field} must have shape ({size},)")
    if upd.parents is not None and not np.all(
        (np.asarray(upd.parents) >= 0) & (np.asarray(upd.parents) < size)
    ):
        raise ValueError(f"strategy update: parents must lie in [0, {size})")
    for name in upd.hparams or {}:
        if name not in names:
            raise ValueError(f"strategy update: unknown hyperparameter '{name}'")
    if upd.keep is not None and (
        len(upd.keep) == 0 or len(set(np.asarray(upd.keep))) != len(upd.keep)
    ):
        raise ValueError("strategy update: keep must list distinct slots, at least one")


def _table(rows: list[dict[str, np.ndarray]], anytime: list[tuple]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame()
    n = [len(r["member"]) for r in rows]
    cols = {c: np.concatenate([r[c] for r in rows]) for c in rows[0]}
    step = np.repeat([a[1] for a in anytime], n)
    return pd.DataFrame({"member": cols.pop("member"), "step": step} | cols)


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
) -> SimResult:
    """Runs a study whose members are learning curves.

    Semantics of :func:`jaxhpo.experiment.run`: segments of ``segment_steps`` (a shorter last one);
    only active, non-diverged members train (and count as member-steps); every member is evaluated
    after each segment, where a member that did not train keeps its last value; a non-finite loss
    marks a trained member diverged (NaN metrics from then on). The strategy is told every segment,
    the last included; its update is applied (parents, reinit, hparams, active, keep) unless it
    says ``done`` or training is over. Stops early before a segment that would take the study
    past ``budget`` member-steps.

    Args:
        strategy: The strategy under study (``check`` is called first).
        space: The search space handed to ``strategy.init``.
        curve: Validation loss after ``t`` steps (see :data:`Curve`); called only for the members
            whose value changed (in slot order), with one rng seeded from ``seed``.
        steps: ``train.steps``.
        segment_steps: ``train.segment_steps``.
        size: ``population.size`` (``None`` when the strategy decides).
        seed: The study's seed (strategy and curve noise).
        budget: Optional cap on member-steps.

    Returns:
        The :class:`SimResult`.
    """
    strategy.check(steps, segment_steps)
    state, cols = strategy.init(seed, space, size)
    hp = {k: np.asarray(v, np.float64) for k, v in cols.items()}
    P = len(next(iter(hp.values())))
    # Per-slot member state (hp lives beside it); a copy moves everything but the id.
    m = {
        "t": np.zeros(P, np.int64),
        "loss": np.full(P, np.nan),
        "diverged": np.zeros(P, bool),
        "active": np.ones(P, bool),
        "fresh": np.ones(P, bool),  # not evaluated since (re-)initialised
    }
    ids, next_id = np.arange(P), P
    rng = np.random.default_rng([seed, 0x51])
    used, step, best, best_member = 0, 0, np.inf, -1
    rows, events, anytime = [], [], []
    n_segments = -(-steps // segment_steps)
    for segment in range(1, n_segments + 1):
        k = min(segment_steps, steps - step)
        train = m["active"] & ~m["diverged"]
        if budget is not None and used + k * int(train.sum()) > budget:
            break
        used += k * int(train.sum())
        step += k
        m["t"][train] += k
        ev = train | m["fresh"]  # a member that did not train evaluates to its last value
        if ev.any():
            val = curve({n: v[ev] for n, v in hp.items()}, ids[ev], m["t"][ev], rng)
            m["loss"][ev] = np.asarray(val, np.float64)
            m["diverged"][ev] |= train[ev] & ~np.isfinite(m["loss"][ev])
            m["loss"][m["diverged"]] = np.nan
        m["fresh"][:] = False
        cur = {"member": ids, **hp, "val_loss": m["loss"], "diverged": m["diverged"]}
        rows.append({**cur, "active": m["active"], "t": m["t"]})
        rows[-1] = {c: v.copy() for c, v in rows[-1].items()}
        obs = Observation(
            step,
            ids.copy(),
            {n: v.copy() for n, v in hp.items()},
            {"loss": m["loss"].copy()},
            m["diverged"].copy(),
            m["active"].copy(),
        )
        fit = obs.fitness()
        if fit.min() < best:
            best, best_member = float(fit.min()), int(ids[np.argmin(fit)])
        anytime.append((used, step, best, best_member))
        state, upd = strategy.update(state, obs)
        if upd.done or segment == n_segments:
            break
        _check(upd, len(ids), tuple(hp))
        events += [{"step": step, **e} for e in upd.events]
        if upd.parents is not None:
            p = np.asarray(upd.parents)
            m = {c: v[p] for c, v in m.items()}
            hp = {n: v[p] for n, v in hp.items()}
        if upd.reinit is not None and np.any(upd.reinit):
            r = np.asarray(upd.reinit, bool)
            ids = ids.copy()
            ids[r] = np.arange(next_id, next_id + int(r.sum()))
            next_id += int(r.sum())
            fresh = {"t": 0, "loss": np.nan, "diverged": False, "active": True, "fresh": True}
            for c, v in fresh.items():
                m[c][r] = v
        for n, v in (upd.hparams or {}).items():
            hp[n] = np.broadcast_to(np.asarray(v, np.float64), ids.shape).copy()
        if upd.active is not None:
            m["active"] = np.asarray(upd.active, bool).copy()
        if upd.keep is not None:
            q = np.asarray(upd.keep)
            ids, m, hp = ids[q], {c: v[q] for c, v in m.items()}, {n: v[q] for n, v in hp.items()}
    members = pd.DataFrame(
        {"member": ids, **hp, "val_loss": m["loss"], "diverged": m["diverged"], "steps": m["t"]}
    )
    return SimResult(
        table=_table(rows, anytime),
        members=members,
        events=events,
        member_steps=used,
        steps=step,
        best_loss=best,
        best_member=best_member,
        anytime=pd.DataFrame(anytime, columns=["member_steps", "step", "best_loss", "best_member"]),
    )
