"""Callbacks: where a run's results go besides its own tables.

A callback is any object with (some of) these methods; the run calls them on process 0 only:

* ``on_start(run_dir, info)``: once, with ``run.json``'s fields (hyperparameter names,
  objective, strategy, ...). On a resumed run ``info["resumed_at_step"]`` gives the step the
  run continues from (what was logged after it is logged again).
* ``on_evaluation(rows, events, run_dir)``: after every evaluation, with the rows just written
  to ``metrics.csv`` (one dict per member: ``member``, ``step``, ``segment``, ``train_loss``,
  the hyperparameters, ``val_<metric>``, ``diverged``, ``active``) and the strategy's events
  written since the previous call (exploits, stops, generations; as in ``events.jsonl``).
* ``on_end(run_dir, members)``: once the run is finished, with the final members table (one row
  per member: hyperparameters, ``val_*``, ``test_*``, ``steps``, ``diverged``).

Built-in callbacks: :class:`jaxhpo.tensorboard.TensorBoard` (every run, ``RUN_DIR/tensorboard``),
:class:`jaxhpo.optuna_export.OptunaExport` (``report.optuna_storage``), and the offline W&B and
MLflow adapters in :mod:`jaxhpo.trackers`. A callback that raises is reported once and
switched off; it never stops the run.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


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

    def on_evaluation(self, rows, events, run_dir: Path) -> None:
        self._call("on_evaluation", rows, events, run_dir)

    def on_end(self, run_dir: Path, members: Any) -> None:
        self._call("on_end", run_dir, members)


def replay(run_dir: str | Path, callbacks: Sequence[Any]) -> None:
    """Feeds a finished run directory to callbacks as the run would have: ``on_start`` with its
    ``run.json``, ``on_evaluation`` per evaluation step with its rows and the events up to that
    step, ``on_end`` with ``members.csv`` (e.g. ``jaxhpo report RUN_DIR --to-optuna``).

    Raises:
      ValueError: naming the missing file when the run is not finished.
    """
    import json

    import pandas as pd

    from jaxhpo.results import read_events

    run_dir = Path(run_dir)
    for name in ("run.json", "config.yaml", "metrics.csv", "members.csv"):
        if not (run_dir / name).exists():
            raise ValueError(f"RUN_DIR: {run_dir / name} is missing (a finished run is needed)")
    hooks = CallbackList(callbacks, strict=True)
    hooks.on_start(run_dir, json.loads((run_dir / "run.json").read_text()))
    events = read_events(run_dir)
    done = 0
    for step, rows in pd.read_csv(run_dir / "metrics.csv").groupby("step", sort=True):
        now = [e for e in events[done:] if int(e.get("step", 0) or 0) <= int(step)]
        done += len(now)
        hooks.on_evaluation(rows.to_dict("records"), now, run_dir)
    hooks.on_evaluation([], events[done:], run_dir)
    hooks.on_end(run_dir, pd.read_csv(run_dir / "members.csv"))
