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
(:func:`jaxhpo.reporting.callbacks.history`), then goes on live. Whatever a kill left in a
half-written file is not used, so every (tag, step) has one value, the uninterrupted run's.
Each member's file is appended to and closed again at every evaluation (:class:`EventFiles`):
no file or thread stays open per member, however many members a run has.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import struct
import time
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
        self._files = EventFiles(Path(SUBDIR))
        self._searched: list[str] = []
        self._names: list[str] = []
        self._objective = "val_loss"
        self._front: Any = None

    def on_start(self, run_dir: Path, info: Mapping[str, Any]) -> None:
        self._files = EventFiles(Path(run_dir) / SUBDIR)
        self._searched = list(info.get("searched", []))
        self._names = list(info.get("hparam_names", []))
        self._objective = str(info.get("objective", "val_loss"))
        self._front = study_front(run_dir)
        if info.get("resumed_at_step") is not None:  # rebuilt from the committed tables
            shutil.rmtree(self._files.root, ignore_errors=True)
            for rows, events in history(run_dir)[0]:
                self.on_evaluation(rows, events, run_dir)

    def on_evaluation(
        self, rows: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]], run_dir: Path
    ) -> None:
        from tensorboardX.summary import text

        add = self._files.add
        for row in rows:
            member, step = int(row["member"]), int(row["step"])
            add(member, _scalar("loss/train", row.get("train_loss")), step)
            for key, value in row.items():
                if key.startswith("val_"):
                    add(member, _scalar(f"val/{key[4:]}", value), step)
            for name in self._searched:
                add(member, _scalar(f"hparams/{name}", row.get(name)), step)
        for ev in events:
            for member in _members_of(ev):
                add(member, text("events", json.dumps(ev, default=str)), int(ev.get("step") or 0))
        self._files.write()

    def on_end(self, run_dir: Path, members: Any) -> None:
        from tensorboardX.summary import hparams

        names = [n for n in self._names if n in members.columns]
        metrics = [c for c in members.columns if c.startswith(("val_", "test_"))]
        wanted = [self._objective] if self._front is None else self._front.columns()
        on_front = None
        if self._front is not None:
            on_front = pareto.front_mask(*self._front.matrix(members))
        for i, (_, row) in enumerate(members.iterrows()):
            member = int(row["member"])
            hp = {n: float(row[n]) for n in names if finite(row[n])}
            mv = {m: float(row[m]) for m in metrics if finite(row[m])}
            for m in wanted:  # every objective in every session (NaN: none, e.g. diverged)
                mv.setdefault(m, math.nan)
            if on_front is not None:
                mv["pareto_front"] = float(on_front[i])
            for summary in hparams(hp, mv):
                self._files.add(member, summary)
            for m, v in mv.items():
                self._files.add(member, _scalar(m, v, keep_nan=True))
        self._files.write()

    def close(self) -> None:
        """Writes what is queued (every hook already has: no file stays open)."""
        self._files.write()


class EventFiles:
    """One TensorBoard event file per member under ``root/member-<id>/``, written by appending
    whole records and closed again after every write.

    tensorboardX's ``SummaryWriter`` keeps, per writer, an open file, a queue (a pipe) and a
    thread, and flushes with an ``fsync``: one writer per member held three files per member, so
    a run of 400 members hit Linux's default limit of 1,024 open files and failed, and every
    evaluation flushed every member's writer so far. The records are those of tensorboardX's
    own ``RecordWriter`` (TFRecord framing with masked CRC-32C), the events its ``Event``s."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._paths: dict[int, Path] = {}
        self._pending: dict[int, list[Any]] = {}

    def add(self, member: int, summary: Any, step: int | None = None) -> None:
        """Queues a ``Summary`` for ``member`` (``None``: nothing), at ``step`` if given."""
        from tensorboardX.proto.event_pb2 import Event

        if summary is None:
            return
        event = Event(summary=summary, wall_time=time.time())
        if step is not None:
            event.step = int(step)
        self._pending.setdefault(member, []).append(event)

    def write(self) -> None:
        """Appends every member's queued events to its file (one open and close per member)."""
        from tensorboardX.proto.event_pb2 import Event

        for member, events in self._pending.items():
            path = self._paths.get(member)
            if path is None:  # a new file starts with its version record, as tensorboardX's
                folder = self.root / f"member-{member}"
                folder.mkdir(parents=True, exist_ok=True)
                stamp = f"{time.time():.0f}.{socket.gethostname()}"
                path = self._paths[member] = folder / f"events.out.tfevents.{stamp}"
                events = [Event(wall_time=time.time(), file_version="brain.Event:2"), *events]
            with open(path, "ab") as f:
                f.write(b"".join(_record(e.SerializeToString()) for e in events))
        self._pending.clear()


def _record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC-32C, the data, its masked CRC-32C."""
    from tensorboardX.record_writer import masked_crc32c

    header = struct.pack("Q", len(data))
    crc = struct.pack("I", masked_crc32c(header))
    return header + crc + data + struct.pack("I", masked_crc32c(data))


def study_front(run_dir: Path) -> Any:
    """The run's objectives and constraints (:class:`jaxhpo.reporting.front.Front`, from its
    ``config.yaml``); ``None`` for a run of one metric."""
    path = Path(run_dir) / "config.yaml"
    cfg = yaml.safe_load(path.read_text()) if path.exists() else None
    return Front.of((cfg or {}).get("strategy") or {})


def _scalar(tag: str, value: Any, keep_nan: bool = False) -> Any:
    """A scalar ``Summary``; ``None`` for a missing or non-finite value (unless ``keep_nan``)."""
    from tensorboardX.summary import scalar

    if value is None or not (keep_nan or finite(value)):
        return None
    return scalar(tag, float(value))


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
