"""A run or a resume in a process of its own, killed with SIGKILL at a chosen point (for
tests/test_side_outputs_resume.py).

``python tests/killpoints.py run OUT_DIR KILL PRESET [OVERRIDES...]`` or
``python tests/killpoints.py resume RUN_DIR KILL``. ``KILL`` is ``none``, ``start`` (the fresh
run's ``on_start``: before any checkpoint), ``eval:STEP`` (right after the rows of evaluation
``STEP`` reached the callbacks, the ones before this one included), ``events`` (the first
evaluation that hands events over) or ``end`` (``on_end``: after ``members.csv``, inside the
finish). Every process records what its callbacks saw in ``RUN_DIR/../seen.jsonl``
(:class:`Recorder`: a callback that keeps what it saw across a kill, as the README says).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

#: Row fields that differ between two runs of one study (the run's name, the clock).
VARYING = ("run", "wall_time")


class Recorder:
    """Appends every call to a JSON-lines file; on resume it drops what it got after the
    rows of the resumed step (the contract in jaxhpo.reporting.callbacks)."""

    def __init__(self, path: Path):
        self.path = path

    def _write(self, record) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def on_start(self, run_dir, info):
        step = info.get("resumed_at_step")
        if step is None:
            self.path.write_text("")
            return
        kept = []
        for line in self.path.read_text().splitlines(keepends=True):
            call = json.loads(line)
            if call["hook"] != "evaluation" or not call["rows"]:
                break
            if call["rows"][0]["step"] > step:
                break
            kept.append(line)
        self.path.write_text("".join(kept))

    def on_evaluation(self, rows, events, run_dir):
        rows = [{k: v for k, v in r.items() if k not in VARYING} for r in rows]
        self._write({"hook": "evaluation", "rows": rows, "events": list(events)})

    def on_end(self, run_dir, members):
        self._write({"hook": "end", "members": members.to_dict("records")})


class Killer:
    """SIGKILLs its own process at ``kill`` (it runs after every other callback)."""

    def __init__(self, kill: str):
        self.kill = kill

    def _die(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def on_start(self, run_dir, info):
        if self.kill == "start":
            self._die()

    def on_evaluation(self, rows, events, run_dir):
        if self.kill == "events" and events:
            self._die()
        if rows and self.kill == f"eval:{int(rows[0]['step'])}":
            self._die()

    def on_end(self, run_dir, members):
        if self.kill == "end":
            self._die()


def main(argv: list[str]) -> None:
    mode, where, kill = argv[0], Path(argv[1]), argv[2]
    if mode == "run":
        from jaxhpo.cli import load_config
        from jaxhpo.run.loop import run

        cfg = load_config(argv[3], [*argv[4:], f"out_dir={where}"])
        recorder = Recorder(where / "seen.jsonl")
        run(cfg, quiet=True, callbacks=[recorder, Killer(kill)])
    else:
        from jaxhpo.run.resume_dir import resume_run

        recorder = Recorder(where.parent / "seen.jsonl")
        resume_run(where, quiet=True, callbacks=[recorder, Killer(kill)])


if __name__ == "__main__":
    main(sys.argv[1:])
