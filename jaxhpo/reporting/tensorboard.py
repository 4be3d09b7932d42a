"""TensorBoard event files for every run: ``RUN_DIR/tensorboard/member-<id>/``.

One TensorBoard run per member (written with tensorboardX), so members can be compared, filtered
and shown in the HParams dashboard:

* scalars at every evaluation: ``loss/train`` (the mean training loss of the segment),
  ``val/<metric>`` for each validation metric, ``hparams/<name>`` for each searched
  hyperparameter (PBT and hypergradients change them over a member's life);
* text ``events``: the strategy's events concerning the member (exploits with their parent,
  stops, restarts);
* at the end, the HParams plugin's session: the member's final hyperparameters with its final
  ``val_*`` and ``test_*`` metrics, so the HParams table lists every member. With several
  objectives (``strategy.objectives``) every objective's final value is a metric of every
  member's session (NaN where it has none: diverged), and ``pareto_front`` is 1 for the members
  on the Pareto front (feasible, non-dominated; :mod:`jaxhpo.pareto`), 0 otherwise, so the
  dashboard can filter the front.

Open with ``tensorboard --logdir RUN_DIR/tensorboard`` (or a folder of run directories).

The files follow from the run's committed tables: a resumed run deletes ``RUN_DIR/tensorboard``
and writes it again from ``metrics.csv`` and ``events.jsonl`` as cut back to the checkpoint
(:func:`jaxhpo.reporting.callbacks.history`), then goes on live. Whatever a kill left in
tensorboardX's
queue or in a half-written file is not used, so every (tag, step) has one value, the
uninterrupted run's.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from jaxhpo import pareto
from jaxhpo.objectives import Front
from jaxhpo.reporting.callbacks import Callback, finite, history

SUBDIR = "tensorboard"


class TensorBoard(Callback):
    """Writes a run's curves, hyperparameters and events as TensorBoard event files."""

    def __init__(self) -> None:
        self._writers: dict[int, Any] = {}
        self._searched: list[str] = []
        self._names: list[str] = []
        self._objective = "val_loss"
        self._front: Any = None

    def on_start(self, run_dir: Path, info: Mapping[str, Any]) -> None:
        self._root = Path(run_dir) / SUBDIR
        self._searched = list(info.get("searched", []))
        self._names = list(info.get("hparam_names", []))
        self._objective = str(info.get("objective", "val_loss"))
        self._front = study_front(run_dir)
        self.close()
        if info.get("resumed_at_step") is not None:  # rebuilt from the committed tables
            shutil.rmtree(self._root, ignore_errors=True)
            for rows, events in history(run_dir)[0]:
                self.on_evaluation(rows, events, run_dir)

    def _writer(self, member: int):
        w = self._writers.get(member)
        if w is None:
            from tensorboardX import SummaryWriter

            w = SummaryWriter(str(self._root / f"member-{member}"), flush_secs=30)
            self._writers[member] = w
        return w

    def on_evaluation(
        self, rows: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]], run_dir: Path
    ) -> None:
        for row in rows:
            w = self._writer(int(row["member"]))
            step = int(row["step"])
            _scalar(w, "loss/train", row.get("train_loss"), step)
            for key, value in row.items():
                if key.startswith("val_"):
                    _scalar(w, f"val/{key[4:]}", value, step)
            for name in self._searched:
                _scalar(w, f"hparams/{name}", row.get(name), step)
        for ev in events:
            for member in _members_of(ev):
                w = self._writer(member)
                w.add_text("events", json.dumps(ev, default=str), int(ev.get("step", 0) or 0))
        for w in self._writers.values():
            w.flush()

    def on_end(self, run_dir: Path, members: Any) -> None:
        from tensorboardX.summary import hparams

        names = [n for n in self._names if n in members.columns]
        metrics = [c for c in members.columns if c.startswith(("val_", "test_"))]
        wanted = [self._objective] if self._front is None else self._front.columns()
        on_front = None
        if self._front is not None:
            on_front = pareto.front_mask(*self._front.matrix(members))
        for i, (_, row) in enumerate(members.iterrows()):
            w = self._writer(int(row["member"]))
            hp = {n: float(row[n]) for n in names if finite(row[n])}
            mv = {m: float(row[m]) for m in metrics if finite(row[m])}
            for m in wanted:  # every objective in every session (NaN: none, e.g. diverged)
                mv.setdefault(m, math.nan)
            if on_front is not None:
                mv["pareto_front"] = float(on_front[i])
            exp, ssi, sei = hparams(hp, mv)
            for summary in (exp, ssi, sei):
                w.file_writer.add_summary(summary)
            for m, v in mv.items():
                w.add_scalar(m, v)
        self.close()

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()


def study_front(run_dir: Path) -> Any:
    """The run's objectives and constraints (:class:`jaxhpo.reporting.front.Front`, from its
    ``config.yaml``); ``None`` for a run of one metric."""
    path = Path(run_dir) / "config.yaml"
    cfg = yaml.safe_load(path.read_text()) if path.exists() else None
    return Front.of((cfg or {}).get("strategy") or {})


def _scalar(writer: Any, tag: str, value: Any, step: int) -> None:
    if value is not None and finite(value):
        writer.add_scalar(tag, float(value), step)


def _members_of(event: Mapping[str, Any]) -> list[int]:
    out = []
    for key in ("member", "child"):
        if isinstance(event.get(key), int):
            out.append(int(event[key]))
    for key in ("members", "stopped"):
        value = event.get(key)
        if isinstance(value, list):
            out += [int(v) for v in value if isinstance(v, int)]
    return sorted(set(out))
