"""A member's lineage: which members' weights its final weights continue, and the schedule of
hyperparameters that produced them, from a run's metrics table and ``exploit`` events.

An ``exploit`` event at step ``s`` means that after the evaluation at ``s`` member ``child``
received the whole state of member ``parent`` (weights, optimizer state, hyperparameters), then
new hyperparameters. :func:`lineage_schedule` follows these copies backwards;
:func:`write_schedule` / :func:`read_schedule` store the schedule as CSV so that it can be re-run
as a fixed schedule (:mod:`jaxhpo.strategies.replay`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jaxhpo.results import best_member_id, final_members, hparam_columns, read_events, read_metrics

SCHEDULE_COLUMNS = ("start_step", "end_step", "source_member")


def _exploits_by_child(events: Sequence[Mapping[str, Any]]) -> dict[int, list[tuple[int, int]]]:
    """``child -> [(step, parent), ...]`` sorted by step; at one step the last event wins."""
    by_child: dict[int, dict[int, int]] = {}
    for ev in events:
        if ev.get("kind") != "exploit":
            continue
        try:
            step, child, parent = int(ev["step"]), int(ev["child"]), int(ev["parent"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"exploit event without a valid step/child/parent: {ev!r}") from e
        by_child.setdefault(child, {})[step] = parent
    return {c: sorted(d.items()) for c, d in by_child.items()}


def exploit_events(events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The ``exploit`` events, in file order."""
    return [ev for ev in events if ev.get("kind") == "exploit"]


def lineage_schedule(
    table: pd.DataFrame, events: Sequence[Mapping[str, Any]], member: int
) -> pd.DataFrame:
    """The hyperparameter schedule that produced the final weights of ``member``.

    Follows ``exploit`` events backwards: from the member's last evaluation back to its latest
    exploit at step ``s`` the member's own rows give the hyperparameters; before ``s`` the weights
    came from the parent, whose rows (and own exploits, strictly before ``s``) are followed in the
    same way. Other event kinds (``explore``, ``stop``, ``compact``) need no special handling:
    the metrics rows already hold the hyperparameters each member trained with.

    Trailing evaluations in which ``member`` was not active (stopped: no training step) are not
    part of the schedule. A member created by re-initialisation starts from fresh weights, so its
    schedule starts at the evaluation before its first row rather than at 0.

    Args:
        table: The metrics table (:func:`read_metrics`).
        events: The run's events (:func:`read_events`).
        member: A member id.

    Returns:
        One row per training segment, in order, covering ``[first start_step, final step]``
        without gaps: ``start_step``, ``end_step`` (ints; the segment is ``(start, end]``),
        ``source_member`` (whose rows give the values: ``member`` or an ancestor), then every
        hyperparameter column of ``table``. Empty (no rows) if the member never trained.

    Raises:
        ValueError: if ``member`` (or an ancestor named by an exploit) has no rows in ``table``.
    """
    member = int(member)
    hp = hparam_columns(table)
    ids = table["member"].astype(int)
    rows = {
        int(m): g.sort_values("step", kind="stable").drop_duplicates("step", keep="last")
        for m, g in table.assign(member=ids).groupby("member")
    }
    if member not in rows:
        known = ", ".join(str(m) for m in sorted(rows)) or "none"
        raise ValueError(f"member {member}: no rows in the metrics table (members: {known})")
    grid = np.array(sorted({int(s) for s in table["step"]}), dtype=np.int64)
    exploits = _exploits_by_child(events)

    own = rows[member]
    if "active" in own:
        trained = own[(own["step"] > 0) & own["active"].astype(bool)]
        end = int(trained["step"].max()) if not trained.empty else 0
    else:
        end = int(own["step"].max())

    pieces: list[pd.DataFrame] = []
    cur = member
    while True:
        if cur not in rows:
            raise ValueError(
                f"member {member}: its ancestor {cur} (named by an exploit event) has no rows in "
                "the metrics table"
            )
        before = [(s, p) for s, p in exploits.get(cur, []) if s < end]
        start = before[-1][0] if before else -1
        r = rows[cur]
        part = r[(r["step"] > max(start, 0)) & (r["step"] <= end)]
        pieces.append(part.assign(source_member=cur))
        if not before:
            break
        end, cur = before[-1]
    cols = ["step", "source_member", *hp]
    out = pd.concat([p[cols] for p in reversed(pieces)], ignore_index=True)
    ends = out["step"].to_numpy(np.int64)
    # A segment starts at the evaluation before it (in the whole run's grid of steps).
    starts = grid[np.maximum(np.searchsorted(grid, ends) - 1, 0)]
    sched = pd.DataFrame(
        {
            "start_step": starts.astype(np.int64),
            "end_step": ends,
            "source_member": out["source_member"].astype(np.int64).to_numpy(),
        }
    )
    for c in hp:
        sched[c] = out[c].to_numpy()
    return sched


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return a == b


def compress_schedule(schedule: pd.DataFrame, by_source: bool = True) -> pd.DataFrame:
    """Merges consecutive segments with identical hyperparameters.

    With ``by_source`` (default) segments merge only when they also share ``source_member`` (the
    form to read: where the weights came from). With ``by_source=False`` only the hyperparameters
    count and the ``source_member`` column is dropped (the form to re-run).
    """
    hp = [c for c in schedule.columns if c not in SCHEDULE_COLUMNS]
    keys = hp + (["source_member"] if by_source and "source_member" in schedule else [])
    out: list[dict[str, Any]] = []
    for rec in schedule.to_dict("records"):
        if out and all(_same(out[-1][k], rec[k]) for k in keys):
            out[-1]["end_step"] = rec["end_step"]
        else:
            out.append(dict(rec))
    cols = [c for c in schedule.columns if by_source or c != "source_member"]
    res = pd.DataFrame(out, columns=list(schedule.columns))[cols]
    for c in ("start_step", "end_step", "source_member"):
        if c in res:
            res[c] = res[c].astype(np.int64)
    return res


def lineage_schedule_from_dir(run_dir: str | Path, member: int | None = None) -> pd.DataFrame:
    """:func:`lineage_schedule` of a run directory.

    ``member=None`` picks the best member by the run's objective (``run.json``: ``objective``,
    ``maximize``; diverged members excluded).

    Raises:
        ValueError: on an unknown member, or when every member diverged.
    """
    run_dir = Path(run_dir)
    table = read_metrics(run_dir)
    events = read_events(run_dir)
    if member is None:
        path = run_dir / "run.json"
        info = json.loads(path.read_text()) if path.exists() else {}
        objective = info.get("objective", "val_loss")
        member = best_member_id(
            final_members(run_dir, table), objective, bool(info.get("maximize", False))
        )
        if member is None:
            raise ValueError(f"{run_dir}: every member diverged, no best member")
    return lineage_schedule(table, events, member)


def write_schedule(schedule: pd.DataFrame, path: str | Path) -> Path:
    """Writes a schedule as CSV (read back with :func:`read_schedule`); returns the path."""
    path = Path(path)
    schedule.to_csv(path, index=False)  # floats as their shortest exact repr
    return path


def read_schedule(path: str | Path) -> pd.DataFrame:
    """Reads a schedule written by :func:`write_schedule`.

    Raises:
        ValueError: naming the file, if ``start_step`` / ``end_step`` are missing, or the segments
            are empty, out of order or leave gaps.
    """
    path = Path(path)
    df = pd.read_csv(path)
    missing = [c for c in ("start_step", "end_step") if c not in df]
    if missing:
        raise ValueError(f"{path}: not a schedule (missing column(s) {', '.join(missing)})")
    for c in df.columns:
        if c in SCHEDULE_COLUMNS:
            df[c] = df[c].astype(np.int64)
        elif pd.api.types.is_numeric_dtype(df[c]):
            df[c] = df[c].astype(np.float64)  # hyperparameters are floats, as in the table
    starts, ends = df["start_step"].to_numpy(), df["end_step"].to_numpy()
    if np.any(ends <= starts):
        raise ValueError(f"{path}: every segment needs end_step > start_step")
    if np.any(starts[1:] != ends[:-1]):
        raise ValueError(f"{path}: segments must follow each other (start_step = previous end)")
    return df
