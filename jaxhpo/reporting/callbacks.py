"""Callbacks: where a run's results go besides its own tables.

A callback is any object with (some of) these methods; the run calls them on process 0 only:

* ``on_start(run_dir, info)``: once per process, with ``run.json``'s fields (hyperparameter
  names, objective, strategy, ...). On a resumed run ``info["resumed_at_step"]`` gives the step
  of the checkpoint the run continues from (-1: no checkpoint, it starts again from step 0).
* ``on_evaluation(rows, events, run_dir)``: after every evaluation, with the rows just written
  to ``metrics.csv`` (one dict per member: ``member``, ``step``, ``segment``, ``train_loss``,
  the hyperparameters, ``val_<metric>``, ``diverged``, ``active``) and the strategy's events
  decided since the previous call (exploits, stops, generations; as in ``events.jsonl``, each
  with a ``step`` before the rows' step). The last call, before ``on_end``, has no rows and the
  events decided at the last evaluation.
* ``on_end(run_dir, members)``: once the run is finished, with the final members table (one row
  per member: hyperparameters, ``val_*``, ``test_*``, ``steps``, ``diverged``).

**Resume.** The calls a run makes follow from its committed tables (:func:`history`), so a run
killed anywhere and resumed makes the same calls as the uninterrupted run, with one cut: a
resumed run's ``on_start`` has ``resumed_at_step = S``; the calls up to the one with the rows
of step ``S`` were made before the kill (they led to the checkpoint), the calls after it are
made again from the next one on, beginning with the events decided at step ``S``. A callback
that keeps what it saw drops what it got after the rows of step ``S`` (or rebuilds it from
:func:`history`, as :class:`jaxhpo.reporting.tensorboard.TensorBoard` does); ``on_end`` follows
the whole
run once a resumed finish completes.

Built-in callbacks: :class:`jaxhpo.reporting.tensorboard.TensorBoard` (every run,
``RUN_DIR/tensorboard``),
:class:`jaxhpo.reporting.optuna_export.OptunaExport` (``report.optuna_storage``), and the offline
W&B and
MLflow adapters in :mod:`jaxhpo.reporting.trackers`. A callback that raises is reported once and
switched off; it never stops the run.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxhpo.results import read_events


def finite(value: Any) -> bool:
    """Whether a table value is a finite number (rows hold NaN for members without one)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class Callback:
    """Base class with no-op hooks (subclassing it is optional)."""

    def on_start(self, run_dir: Path, info: Mapping[str, Any]) -> None:
        """Once, before the first segment (also when resuming)."""

    def on_evaluation(
        self, rows: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]], run_dir: Path
    ) -> None:
        """After every evaluation: the metrics rows just written, the events since the last."""

    def on_end(self, run_dir: Path, members: Any) -> None:
        """Once the run finished: the final members table (a pandas DataFrame)."""


class CallbackList:
    """Calls every callback's hook; a callback that raises is reported and switched off (with
    ``strict``, its error propagates)."""

    def __init__(self, callbacks: Sequence[Any] = (), strict: bool = False):
        self.callbacks = list(callbacks)
        self.strict = strict
        self._carried: list[dict[str, Any]] = []  # events of a checkpoint not given yet

    def _call(self, hook: str, *args: Any) -> None:
        for cb in list(self.callbacks):
            fn = getattr(cb, hook, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - a callback never stops a run
                if self.strict:
                    raise
                print(
                    f"jaxhpo: callback {type(cb).__name__}.{hook} failed ({type(e).__name__}: "
                    f"{e}); switched off for the rest of the run",
                    file=sys.stderr,
                )
                self.callbacks.remove(cb)

    def on_start(self, run_dir: Path, info: Mapping[str, Any]) -> None:
        self._call("on_start", run_dir, info)

    def resume(self, run_dir: Path, info: Mapping[str, Any], step: int) -> None:
        """``on_start`` of a run resumed at ``step``, whose tables are cut back to the
        checkpoint: the events decided at ``step`` (committed, not given to callbacks before
        the kill) go with the next evaluation, as in the uninterrupted run."""
        self._carried = undelivered(run_dir)
        self._call("on_start", run_dir, {**info, "resumed_at_step": int(step)})

    def on_evaluation(self, rows, events, run_dir: Path) -> None:
        carried, self._carried = self._carried, []
        self._call("on_evaluation", rows, [*carried, *events], run_dir)

    def on_end(self, run_dir: Path, members: Any) -> None:
        self._call("on_end", run_dir, members)


def history(run_dir: str | Path) -> tuple[list[tuple[list, list]], list[dict[str, Any]]]:
    """The ``on_evaluation`` calls a run made, read back from its tables: ``(calls, left)``,
    ``calls`` a list of ``(rows, events)`` (one per evaluation step of ``metrics.csv``, with the
    events decided before that step and after the previous one), ``left`` the events decided
    at or after the last evaluation (given with the next evaluation, or before ``on_end``).
    Values are plain Python scalars, as the live calls give them."""
    run_dir = Path(run_dir)
    events = read_events(run_dir)
    calls, done = [], 0
    path = run_dir / "metrics.csv"
    table = _read_rows(path) if path.exists() and path.stat().st_size else []
    for step, rows in _by_step(table):
        now = []
        while done < len(events) and _step_of(events[done]) < step:
            now.append(events[done])
            done += 1
        calls.append((rows, now))
    return calls, events[done:]


def undelivered(run_dir: str | Path) -> list[dict[str, Any]]:
    """The committed events no ``on_evaluation`` call has given yet (:func:`history`)."""
    return history(run_dir)[1]


def _step_of(event: Mapping[str, Any]) -> int:
    return int(event.get("step", 0) or 0)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    table = pd.read_csv(path, float_precision="round_trip")  # floats back exactly
    rows = table.to_dict("records")
    return [{k: v.item() if hasattr(v, "item") else v for k, v in r.items()} for r in rows]


def _by_step(rows: list[dict[str, Any]]):
    """Consecutive rows of one step (one evaluation each)."""
    group: list[dict[str, Any]] = []
    for row in rows:
        if group and int(row["step"]) != int(group[0]["step"]):
            yield int(group[0]["step"]), group
            group = []
        group.append(row)
    if group:
        yield int(group[0]["step"]), group


def replay(run_dir: str | Path, callbacks: Sequence[Any]) -> None:
    """Feeds a finished run directory to callbacks as the run did: ``on_start`` with its
    ``run.json``, the ``on_evaluation`` calls of :func:`history`, the last events, ``on_end``
    with ``members.csv`` (e.g. ``jaxhpo report RUN_DIR --to-optuna``).

    Raises:
      ValueError: naming the missing file when the run is not finished.
    """
    import json

    import pandas as pd

    run_dir = Path(run_dir)
    for name in ("run.json", "config.yaml", "metrics.csv", "members.csv"):
        if not (run_dir / name).exists():
            raise ValueError(f"RUN_DIR: {run_dir / name} is missing (a finished run is needed)")
    hooks = CallbackList(callbacks, strict=True)
    hooks.on_start(run_dir, json.loads((run_dir / "run.json").read_text()))
    calls, left = history(run_dir)
    for rows, events in calls:
        hooks.on_evaluation(rows, events, run_dir)
    hooks.on_evaluation([], left, run_dir)
    hooks.on_end(run_dir, pd.read_csv(run_dir / "members.csv", float_precision="round_trip"))
