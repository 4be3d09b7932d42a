"""The pieces behind exact side outputs on resume (issue 26), without a run: a checkpoint is
moved aside only when its files do not read, the events of a checkpoint's step reach callbacks
after a resume, TensorBoard is rebuilt from the committed tables, and a run killed inside its
finish is resumed, not refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jaxhpo.checkpoint import Checkpointer, CheckpointNotRestoredError
from jaxhpo.reporting.callbacks import CallbackList, history
from jaxhpo.reporting.tensorboard import TensorBoard
from jaxhpo.run.resume import finished

ROWS = "run,member,step,segment,wall_time,diverged,active,lr,train_loss,val_loss\n"


def _saved(tmp_path: Path) -> Checkpointer:
    ckpt = Checkpointer(tmp_path / "checkpoints")
    ckpt.save(1, {"pop": {"w": np.arange(3.0)}}, {"step": 4})
    return ckpt


def _abstract(meta):
    return {"pop": {"w": np.zeros(3)}}


def test_restore_leaves_a_checkpoint_in_place_when_preparing_its_shapes_fails(tmp_path):
    """Regression: any error while preparing the shapes to restore into (a bug, a changed
    task) moved the good checkpoint to checkpoints-corrupted/ and the run started again."""
    ckpt = _saved(tmp_path)

    def broken(meta):
        raise TypeError("the task's init changed")

    with pytest.raises(CheckpointNotRestoredError) as err:
        ckpt.restore_latest(broken, report=lambda m: pytest.fail(f"reported: {m}"))
    said = str(err.value)
    assert "checkpoint 1" in said and "TypeError: the task's init changed" in said
    assert "left in place" in said
    assert (tmp_path / "checkpoints" / "1").is_dir()
    assert not (tmp_path / "checkpoints-corrupted").exists()
    segment, tree, meta = ckpt.restore_latest(_abstract)  # still restores
    assert segment == 1 and meta == {"step": 4}
    np.testing.assert_array_equal(tree["pop"]["w"], np.arange(3.0))


def test_restore_moves_aside_a_checkpoint_whose_files_do_not_read(tmp_path):
    ckpt = _saved(tmp_path)
    for f in (tmp_path / "checkpoints" / "1").rglob("*"):
        if f.is_file() and f.parent.name in ("meta", "state"):
            f.write_bytes(b"\0garbage")
    said = []
    assert ckpt.restore_latest(_abstract, report=said.append) is None
    assert len(said) == 1 and "cannot be restored" in said[0]
    assert (tmp_path / "checkpoints-corrupted" / "1").is_dir()


def _tables(run_dir: Path, rows: list[str], events: list[dict]) -> None:
    run_dir.mkdir(exist_ok=True)
    (run_dir / "metrics.csv").write_text(ROWS + "".join(rows))
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


class _Seen:
    def __init__(self):
        self.calls = []

    def on_evaluation(self, rows, events, run_dir):
        self.calls.append(([r["step"] for r in rows], [e["step"] for e in events]))


def test_events_decided_at_the_checkpoint_step_reach_callbacks_after_a_resume(tmp_path):
    """Regression: the events decided at the checkpoint's step waited in the writer's list,
    empty after a resume: no callback ever got them."""
    events = [{"step": 0, "kind": "a"}, {"step": 4, "kind": "exploit"}]
    _tables(
        tmp_path, ["r,0,0,0,0,False,True,0.1,nan,1\n", "r,0,4,1,1,False,True,0.1,1,1\n"], events
    )
    calls, left = history(tmp_path)
    assert [([r["step"] for r in rows], ev) for rows, ev in calls] == [([0], []), ([4], events[:1])]
    assert left == events[1:]  # decided at step 4, after its rows
    seen = _Seen()
    hooks = CallbackList([seen])
    hooks.resume(tmp_path, {}, 4)
    hooks.on_evaluation([{"step": 8}], [], tmp_path)
    assert seen.calls == [([8], [4])]


def _points(member_dir: Path) -> list[tuple[int, float]]:
    ea = EventAccumulator(str(member_dir))
    ea.Reload()
    return [(e.step, e.value) for e in ea.Scalars("val/loss")]


def test_tensorboard_step_0_written_once_after_a_kill_before_the_first_checkpoint(tmp_path):
    """Regression: a run killed before its first checkpoint and resumed showed step 0 twice
    (the restart purged points from step 1 on)."""
    info = {"searched": ["lr"], "hparam_names": ["lr"], "objective": "val_loss"}
    row = {"member": 0, "step": 0, "train_loss": float("nan"), "lr": 0.1, "val_loss": 2.0}
    killed = TensorBoard()
    killed.on_start(tmp_path, info)
    killed.on_evaluation([row], [], tmp_path)
    killed.close()  # what the killed process got onto the disk
    _tables(tmp_path, [], [])  # the resume cut the tables back to nothing
    resumed = TensorBoard()
    resumed.on_start(tmp_path, {**info, "resumed_at_step": -1})  # no checkpoint
    resumed.on_evaluation([row], [], tmp_path)
    resumed.close()
    assert _points(tmp_path / "tensorboard" / "member-0") == [(0, 2.0)]


def test_tensorboard_rebuilt_from_the_committed_rows_on_resume(tmp_path):
    info = {"searched": ["lr"], "hparam_names": ["lr"], "objective": "val_loss"}
    _tables(tmp_path, ["r,0,0,0,0,False,True,0.1,nan,2\n", "r,0,4,1,1,False,True,0.1,1,1.5\n"], [])
    (tmp_path / "tensorboard" / "member-0").mkdir(parents=True)  # the killed run's file: none
    tb = TensorBoard()
    tb.on_start(tmp_path, {**info, "resumed_at_step": 4})
    tb.close()
    assert _points(tmp_path / "tensorboard" / "member-0") == [(0, 2.0), (4, 1.5)]


@pytest.mark.parametrize(
    ("info", "done"), [({"finished": False}, False), ({"finished": True}, True), ({}, True)]
)
def test_run_killed_inside_its_finish_is_resumed_not_refused(tmp_path, info, done):
    """Regression: a run killed after members.csv but before the callbacks' end and the report
    was refused ('finished already'); the mark is run.json's "finished", written last (runs
    from before it count as finished)."""
    (tmp_path / "run.json").write_text(json.dumps(info))
    assert not finished(tmp_path)
    (tmp_path / "members.csv").write_text("member\n0\n")
    assert finished(tmp_path) is done


def test_cli_resume_with_a_checkpoint_that_does_not_restore_is_one_line(monkeypatch, capsys):
    """Regression: a checkpoint left in place (not corrupt, its shapes failed) gave a traceback
    on the command line."""
    import jaxhpo.experiment
    from jaxhpo.cli import main

    def fail(*args, **kwargs):
        raise CheckpointNotRestoredError("checkpoint 3 was not restored: ValueError: shapes\nmore")

    monkeypatch.setattr(jaxhpo.experiment, "resume_run", fail)
    assert main(["resume", "/nonexistent"]) == 1
    err = capsys.readouterr().err
    assert err == "jaxhpo: error: checkpoint 3 was not restored: ValueError: shapes\n"


def test_tensorboard_keeps_no_file_or_thread_open_per_member(tmp_path):
    """Regression: one tensorboardX SummaryWriter per member held a file, a pipe and a thread
    each, so a run of 400 members failed under Linux's default 1,024 open files; and every
    evaluation flushed (fsync) every member's writer so far."""
    import os
    import threading

    info = {"searched": ["lr"], "hparam_names": ["lr"], "objective": "val_loss"}
    fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
    tb = TensorBoard()
    tb.on_start(tmp_path, info)
    for step in (0, 4):
        rows = [
            {"member": m, "step": step, "train_loss": 1.0, "lr": 0.1, "val_loss": m + step / 8}
            for m in range(600)
        ]
        tb.on_evaluation(rows, [{"kind": "stop", "step": step, "member": 599}], tmp_path)
        assert len(os.listdir("/proc/self/fd")) <= fds + 2
        assert threading.active_count() <= threads  # (other tests' threads may end meanwhile)
    for m in (0, 599):
        assert _points(tmp_path / "tensorboard" / f"member-{m}") == [(0, m), (4, m + 0.5)]
    ea = EventAccumulator(str(tmp_path / "tensorboard" / "member-599"))
    ea.Reload()
    assert [e.step for e in ea.Tensors("events/text_summary")] == [0, 4]
