"""The run directory: everything a run produced, readable back with pandas.

Layout::

    RUN_DIR/
      config.yaml        the resolved configuration (re-runnable: jaxhpo run RUN_DIR/config.yaml)
      run.json           task, population size, devices, jax version; timings at the end
      metrics.csv        tidy table, one row per member per evaluation (appended as the run goes)
      metrics.parquet    the same table, written at the end
      members.csv        one row per member: hyperparameters, final validation and test metrics
      events.jsonl       lineage and strategy events (one JSON object per line)
      summary.md         best member, its hyperparameters, lineage, budget, figures
      best_schedule.csv  the best member's reconstructed hyperparameter schedule (written by
                         ``jaxhpo report`` when hyperparameters changed during the run)
      plots/*.png        written by ``jaxhpo report``
      .lock              held (``fcntl.flock``) by the process writing the run (run_dir_lock)

``metrics.csv`` is flushed after every evaluation, so a killed run keeps every row it reported.

Lineage: the row of member ``m`` at step ``s`` holds the hyperparameters ``m`` trained with during
the segment that ended at ``s`` (the row at step 0 is the initial evaluation). An ``exploit`` event
at step ``s`` means that after the evaluation at ``s`` member ``child`` received the whole state of
member ``parent`` (weights, optimizer state, hyperparameters), then new hyperparameters.
:func:`jaxhpo.lineage.lineage_schedule` follows these copies backwards and gives the schedule of
hyperparameters that produced a member's final weights (stored as CSV, re-run as a fixed
schedule).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

#: Columns every metrics row has, before the hyperparameter and metric columns.
BASE_COLUMNS = ("run", "member", "step", "segment", "wall_time", "diverged", "active")


def new_run_dir(out_dir: str | Path, name: str) -> Path:
    """``out_dir/name-YYYYmmdd-HHMMSS`` (with a numeric suffix if it exists), created by this
    call: two processes started in the same second get two directories."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(out_dir) / f"{name}-{stamp}"
    base.parent.mkdir(parents=True, exist_ok=True)
    path, i = base, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            path = base.with_name(f"{base.name}-{i}")
            i += 1


#: Run directories this process holds (resolved path -> the open, locked ``RUN_DIR/.lock``).
_HELD: dict[str, Any] = {}


@contextlib.contextmanager
def run_dir_lock(run_dir: str | Path) -> Iterator[None]:
    """Holds ``RUN_DIR/.lock`` (``fcntl.flock``, exclusive) while the block runs, so one process
    writes a run directory at a time. The OS releases the lock when the process ends however it
    ends, so a killed run never leaves it stuck; the file stays (it holds the last holder's pid).
    Re-entrant within a process (``resume_run`` holds it around ``run``).

    Raises:
      ValueError: ``RUN_DIR: ... is in use by another process (pid N)``, if another process
        holds it; nothing in the run directory is changed.
    """
    key = str(Path(run_dir).resolve())
    if key in _HELD:
        yield
        return
    f = open(Path(run_dir) / ".lock", "a+")  # noqa: SIM115 (held past this frame)
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        by = f" (pid {holder})" if holder.isdigit() else ""
        raise ValueError(
            f"RUN_DIR: {run_dir} is in use by another process{by}; wait for it to end or stop it"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _HELD[key] = f
    try:
        yield
    finally:
        del _HELD[key]
        f.close()  # releases the lock


def _clean(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


class RunWriter:
    """Appends metrics rows and events to a run directory as the run goes."""

    def __init__(
        self,
        path: Path,
        run_name: str,
        hparam_names: Sequence[str],
        metric_names: Sequence[str],
        resume: tuple[int, int] | None = None,
        callbacks: Any = None,
    ):
        """``resume=(rows, events)``: continue a run directory, keeping its first ``rows``
        metrics rows and ``events`` events (what the checkpoint resumed from had written) and
        dropping anything after them, so no row is lost or written twice. ``callbacks``
        (:class:`jaxhpo.reporting.callbacks.CallbackList`) get every evaluation's rows and the
        events."""
        self.path = Path(path)
        self.callbacks = callbacks
        self._pending: list[dict[str, Any]] = []
        self.run_name = run_name
        self.hparam_names = tuple(hparam_names)
        self.metric_names = tuple(metric_names)
        self.columns = (
            list(BASE_COLUMNS)
            + list(self.hparam_names)
            + ["train_loss"]
            + [f"val_{m}" for m in self.metric_names]
        )
        self.rows = self.events = 0  # written so far (kept ones included)
        if resume is not None:
            self.rows, self.events = resume
            _keep_lines(self.path / "metrics.csv", 1 + self.rows)  # header + rows
            _keep_lines(self.path / "events.jsonl", self.events)
            (self.path / "metrics.parquet").unlink(missing_ok=True)
        mode = "a" if resume is not None else "w"
        self._csv = open(self.path / "metrics.csv", mode, newline="")  # noqa: SIM115
        self._writer = csv.DictWriter(self._csv, fieldnames=self.columns)
        if resume is None:
            self._writer.writeheader()
        self._events = open(self.path / "events.jsonl", mode)  # noqa: SIM115

    def write_config(self, config: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        atomic_write(self.path / "config.yaml", yaml.safe_dump(dict(config), sort_keys=False))
        atomic_write(self.path / "run.json", json.dumps(dict(info), indent=2, default=str))

    def update_info(self, extra: Mapping[str, Any]) -> None:
        """Adds fields to ``run.json`` (timings, counts)."""
        path = self.path / "run.json"
        info = json.loads(path.read_text()) if path.exists() else {}
        info.update(extra)
        atomic_write(path, json.dumps(info, indent=2, default=str))

    def log(
        self,
        *,
        step: int,
        segment: int,
        wall_time: float,
        member_id: np.ndarray,
        hparams: Mapping[str, np.ndarray],
        train_loss: np.ndarray,
        metrics: Mapping[str, np.ndarray],
        diverged: np.ndarray,
        active: np.ndarray,
    ) -> None:
        """One row per member for one evaluation."""
        rows = []
        for i in range(len(member_id)):
            row = {
                "run": self.run_name,
                "member": int(member_id[i]),
                "step": int(step),
                "segment": int(segment),
                "wall_time": round(float(wall_time), 4),
                "diverged": bool(diverged[i]),
                "active": bool(active[i]),
                "train_loss": float(train_loss[i]),
            }
            row.update({k: float(hparams[k][i]) for k in self.hparam_names})
            row.update({f"val_{k}": float(metrics[k][i]) for k in self.metric_names})
            self._writer.writerow(row)
            rows.append(row)
        self._csv.flush()
        self.rows += len(member_id)
        if self.callbacks is not None:
            events, self._pending = self._pending, []
            self.callbacks.on_evaluation(rows, events, self.path)

    def event(self, record: Mapping[str, Any]) -> None:
        clean = {k: _clean(v) for k, v in record.items()}
        if self.callbacks is not None:
            self._pending.append(clean)
        self._events.write(json.dumps(clean, default=str))
        self._events.write("\n")
        self._events.flush()
        self.events += 1

    def flush_events(self) -> list[dict[str, Any]]:
        """The events written since the last evaluation (given to callbacks at the end)."""
        events, self._pending = self._pending, []
        return events

    def close(self) -> None:
        self._csv.close()
        self._events.close()
        table = read_metrics(self.path)
        tmp = self.path / ".metrics.parquet.tmp"
        table.to_parquet(tmp, index=False)
        os.replace(tmp, self.path / "metrics.parquet")


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Replaces ``path`` with ``data`` in one step: written to a temporary file beside it, synced,
    then renamed over it (``os.replace``). A process killed at any moment leaves either the old
    file or the new one, never a cut one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _keep_lines(path: Path, n: int) -> None:
    """Cuts a text file back to its first ``n`` complete lines (a line cut short by a kill is
    dropped with everything after it), atomically (:func:`atomic_write`): a resume killed while
    it cuts the tables back leaves them whole for the next resume."""
    if not path.exists():
        raise ValueError(f"RUN_DIR: {path.name} is missing from {path.parent}")
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    complete = lines[:-1]  # the part after the last newline is incomplete (or empty)
    if len(complete) < n:
        raise ValueError(
            f"RUN_DIR: {path.name} has {len(complete)} complete lines, the checkpoint expects {n}"
        )
    if len(complete) == n and not lines[-1]:
        return  # nothing to cut
    atomic_write(path, b"".join(line + b"\n" for line in complete[:n]))


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """The tidy metrics table of a run (parquet if present, else the CSV written live)."""
    run_dir = Path(run_dir)
    pq = run_dir / "metrics.parquet"
    if pq.exists():
        return pd.read_parquet(pq)
    return pd.read_csv(run_dir / "metrics.csv", float_precision="round_trip")


def read_members(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / "members.csv", float_precision="round_trip")


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- lineage -----------------------------------------------------------------------------------


#: Columns of a schedule before its hyperparameter columns (``source_member`` may be absent in a
#: schedule compressed with ``by_source=False``).
def hparam_columns(table: pd.DataFrame) -> list[str]:
    """The hyperparameter columns of a metrics table, in table order."""
    return [
        c
        for c in table.columns
        if c not in BASE_COLUMNS and c != "train_loss" and not c.startswith(("val_", "test_"))
    ]


def best_member_id(
    members: pd.DataFrame, objective: str = "val_loss", maximize: bool = False
) -> int | None:
    """The id of the member with the best final ``objective`` among those that did not diverge
    (``None`` if there is none)."""
    if objective not in members:
        raise ValueError(f"objective '{objective}' is not a column of the members table")
    row = best_member(members, objective, maximize)
    return None if row is None else int(row["member"])


def best_member(
    members: pd.DataFrame, metric: str = "val_loss", maximize: bool = False
) -> pd.Series | None:
    """The row of the member with the best final ``metric`` among those that did not diverge
    (``None`` if there is none)."""
    ok = members[~members["diverged"].astype(bool) & np.isfinite(members[metric])]
    if ok.empty:
        return None
    return ok.loc[ok[metric].idxmax() if maximize else ok[metric].idxmin()]


def final_members(run_dir: str | Path, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """``members.csv``, or for an interrupted run the last row of each member in the table."""
    run_dir = Path(run_dir)
    if (run_dir / "members.csv").exists():
        return read_members(run_dir)
    table = read_metrics(run_dir) if table is None else table
    return table.sort_values("step", kind="stable").groupby("member").last().reset_index()


def claim_status(check: Callable[..., Any], summary: Any, out: Path | str) -> int:
    """A reproduction's exit status: 0 when ``check(summary)`` holds (it raises
    ``AssertionError`` naming what failed otherwise), with one line saying which."""
    try:
        check(summary)
    except AssertionError as e:
        print(f"claim FAILED: {e}")
        return 1
    print(f"claim holds; results in {out}")
    return 0


def add_override_args(p: argparse.ArgumentParser, applies_to: str) -> None:
    """The options every reproduction takes: ``--set KEY=VALUE`` (repeatable config overrides,
    in ``args.overrides``) and ``--no-plot``."""

    def override(text: str) -> str:
        if "=" not in text:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
        return text

    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=override,
        metavar="KEY=VALUE",
        help=f"config override {applies_to} (repeatable), e.g. model.d_model=32",
    )
    p.add_argument("--no-plot", action="store_true")


def best_so_far(table: pd.DataFrame, column: str = "val_loss") -> tuple[list[int], list[float]]:
    """Lowest ``column`` seen up to each evaluation step of a metrics table (NaN before any
    finite one): ``(steps, values)``."""
    per_step = table.groupby("step")[column].min().sort_index()  # min skips NaN
    best = np.fmin.accumulate(per_step.to_numpy(np.float64))
    return per_step.index.astype(int).tolist(), [float(v) for v in best]
