"""Lineage schedules and the lineage parts of ``jaxhpo report``, on hand-built run directories.

No JAX program runs here: the run directories are written with :class:`RunWriter` from a small
hand-made PBT history, so the expected schedules can be computed by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from jaxhpo.lineage import (
    compress_schedule,
    lineage_schedule,
    lineage_schedule_from_dir,
    read_schedule,
    write_schedule,
)
from jaxhpo.reporting.report import write_report
from jaxhpo.results import RunWriter, read_events, read_metrics

HP = ("lr", "wd", "decay_steps")
METRICS = ("loss", "accuracy")
STEPS = (0, 10, 20, 30, 40)
CONFIG = {
    "name": "toy",
    "space": {"lr": "loguniform(1e-4, 1e-1)", "wd": "uniform(0, 1)"},
    "train": {"steps": 40, "segment_steps": 10},
}

# The history (5 members, ids = slots). Hyperparameters at the start:
INIT = {"lr": [0.001, 0.002, 0.003, 0.004, 0.005], "wd": [0.1, 0.2, 0.3, 0.4, 0.5]}
# Updates after the evaluation at each step: (kind, fields, new lr, new wd).
HISTORY = {
    10: [
        ("exploit", {"child": 0, "parent": 1}, 0.0024, 0.16),
        ("exploit", {"child": 3, "parent": 2}, 0.0036, 0.24),
    ],
    20: [
        # Simultaneous: 2 copies 0 as it was at step 20 (before 0 copies 3).
        ("exploit", {"child": 2, "parent": 0}, 0.00192, 0.192),
        ("exploit", {"child": 0, "parent": 3}, 0.00432, 0.24),
        ("explore", {"member": 4}, 0.006, 0.5),
    ],
    30: [
        ("exploit", {"child": 1, "parent": 2}, 0.002304, 0.192),
        ("stop", {"member": 3, "fitness": 2.0, "reason": "rung 0"}, None, None),
    ],
}
# Final validation loss (member 1 is the best; member 4 diverged).
FINAL_LOSS = [1.5, 1.0, 1.2, 2.0, np.nan]


def _write_run(path, *, events=True, member_steps=None, members_csv=True, close=True):
    """Writes a run directory as the run loop would; returns its path."""
    path.mkdir(parents=True, exist_ok=True)
    writer = RunWriter(path, path.name, HP, METRICS)
    info = {
        "population_size": 5,
        "hparam_names": list(HP),
        "searched": ["lr", "wd"],
        "objective": "val_loss",
        "maximize": False,
    }
    if member_steps is not None:
        info["member_steps"] = member_steps
    writer.write_config(CONFIG, info)
    ids = np.arange(5)
    hp = {k: np.array(v, float) for k, v in INIT.items()}
    hp["decay_steps"] = np.full(5, 40.0)
    active = np.ones(5, bool)
    for seg, step in enumerate(STEPS):
        loss = np.array(FINAL_LOSS) if step == STEPS[-1] else 3.0 - 0.1 * seg - 0.01 * ids
        diverged = np.isnan(loss)
        writer.log(
            step=step,
            segment=seg,
            wall_time=float(step),
            member_id=ids,
            hparams={k: v.copy() for k, v in hp.items()},
            train_loss=np.full(5, np.nan) if step == 0 else loss + 0.05,
            metrics={"loss": loss, "accuracy": 1.0 / (1.0 + np.nan_to_num(loss, nan=9.0))},
            diverged=diverged,
            active=active.copy(),
        )
        if not events:
            continue
        for kind, fields, lr, wd in HISTORY.get(step, []):
            rec = {"step": step, "kind": kind, **fields}
            if kind == "exploit":
                c, p = fields["child"], fields["parent"]
                rec.update(child_slot=c, parent_slot=p, child_fitness=3.0, parent_fitness=2.5)
                rec["before"] = {"lr": float(hp["lr"][c]), "wd": float(hp["wd"][c])}
                rec["after"] = {"lr": lr, "wd": wd}
            elif kind == "explore":
                m = fields["member"]
                rec["before"] = {"lr": float(hp["lr"][m]), "wd": float(hp["wd"][m])}
                rec["after"] = {"lr": lr, "wd": wd}
            writer.event(rec)
        # Apply the update: copies first (from the state before this update), then new values.
        before = {k: v.copy() for k, v in hp.items()}
        for kind, fields, lr, wd in HISTORY.get(step, []):
            if kind == "exploit":
                c, p = fields["child"], fields["parent"]
                for k in hp:
                    hp[k][c] = before[k][p]
                hp["lr"][c], hp["wd"][c] = lr, wd
            elif kind == "explore":
                hp["lr"][fields["member"]], hp["wd"][fields["member"]] = lr, wd
            elif kind == "stop":
                active[fields["member"]] = False
    if members_csv:
        members = pd.DataFrame({"member": ids, **{k: v for k, v in hp.items()}})
        members["val_loss"] = FINAL_LOSS
        members["test_loss"] = np.array(FINAL_LOSS) + 0.01
        members["val_accuracy"] = 1.0 / (1.0 + np.nan_to_num(FINAL_LOSS, nan=9.0))
        members["test_accuracy"] = members["val_accuracy"]
        members["diverged"] = np.isnan(FINAL_LOSS)
        members["steps"] = [40, 40, 40, 30, 40]
        members.to_csv(path / "members.csv", index=False)
    if close:
        writer.close()
    else:  # an interrupted run: only the live CSV and events
        writer._csv.close()
        writer._events.close()
    return path


@pytest.fixture
def run_dir(tmp_path):
    return _write_run(tmp_path / "pbt")


def _expected(rows):
    df = pd.DataFrame(rows, columns=["start_step", "end_step", "source_member", "lr", "wd"])
    df["decay_steps"] = 40.0
    for c in ("start_step", "end_step", "source_member"):
        df[c] = df[c].astype(np.int64)
    return df


def _check(actual, expected):
    pd.testing.assert_frame_equal(
        actual.reset_index(drop=True), expected, check_exact=True, check_dtype=True
    )


def test_schedule_follows_a_chain_of_two_exploits(run_dir):
    # Member 2 copied 0 at step 20, which had copied 1 at step 10.
    table, events = read_metrics(run_dir), read_events(run_dir)
    expected = _expected(
        [
            (0, 10, 1, 0.002, 0.2),
            (10, 20, 0, 0.0024, 0.16),
            (20, 30, 2, 0.00192, 0.192),
            (30, 40, 2, 0.00192, 0.192),
        ]
    )
    _check(lineage_schedule(table, events, 2), expected)


def test_schedule_with_simultaneous_and_repeated_exploits(run_dir):
    table, events = read_metrics(run_dir), read_events(run_dir)
    # Member 1: copied 2 at 30; 2 copied 0 at 20 (0's own copy of 3 at 20 came after); 0 copied
    # 1 at 10.
    _check(
        lineage_schedule(table, events, 1),
        _expected(
            [
                (0, 10, 1, 0.002, 0.2),
                (10, 20, 0, 0.0024, 0.16),
                (20, 30, 2, 0.00192, 0.192),
                (30, 40, 1, 0.002304, 0.192),
            ]
        ),
    )
    # Member 0 exploited twice: 3 at 20 (which had copied 2 at 10), 1 at 10 (superseded).
    _check(
        lineage_schedule(table, events, 0),
        _expected(
            [
                (0, 10, 2, 0.003, 0.3),
                (10, 20, 3, 0.0036, 0.24),
                (20, 30, 0, 0.00432, 0.24),
                (30, 40, 0, 0.00432, 0.24),
            ]
        ),
    )


def test_member_without_exploits_gets_its_own_rows(run_dir):
    table, events = read_metrics(run_dir), read_events(run_dir)
    own = _expected(
        [
            (0, 10, 4, 0.005, 0.5),
            (10, 20, 4, 0.005, 0.5),
            (20, 30, 4, 0.006, 0.5),  # explored (perturbed in place) at step 20
            (30, 40, 4, 0.006, 0.5),
        ]
    )
    _check(lineage_schedule(table, events, 4), own)
    # Without any events every member is its own source.
    sched = lineage_schedule(table, [], 2)
    assert (sched["source_member"] == 2).all()
    rows = table[(table["member"] == 2) & (table["step"] > 0)].sort_values("step")
    np.testing.assert_array_equal(sched["end_step"], rows["step"])
    np.testing.assert_array_equal(sched["lr"], rows["lr"])


def test_stopped_member_schedule_ends_at_its_last_training_segment(run_dir):
    table, events = read_metrics(run_dir), read_events(run_dir)
    _check(
        lineage_schedule(table, events, 3),
        _expected(
            [
                (0, 10, 2, 0.003, 0.3),
                (10, 20, 3, 0.0036, 0.24),
                (20, 30, 3, 0.0036, 0.24),
            ]
        ),
    )


def test_unknown_member_is_an_error(run_dir):
    table, events = read_metrics(run_dir), read_events(run_dir)
    with pytest.raises(ValueError, match="member 7"):
        lineage_schedule(table, events, 7)
    with pytest.raises(ValueError, match="member 7"):
        lineage_schedule_from_dir(run_dir, 7)
    # An exploit naming a parent without rows.
    bad = [{"kind": "exploit", "step": 20, "child": 1, "parent": 9}]
    with pytest.raises(ValueError, match="ancestor 9"):
        lineage_schedule(table, bad, 1)


def test_compress_schedule(run_dir):
    sched = lineage_schedule(read_metrics(run_dir), read_events(run_dir), 2)
    _check(
        compress_schedule(sched),
        _expected(
            [
                (0, 10, 1, 0.002, 0.2),
                (10, 20, 0, 0.0024, 0.16),
                (20, 40, 2, 0.00192, 0.192),
            ]
        ),
    )
    # Equal values from different sources merge only with by_source=False.
    same = sched.copy()
    same["lr"], same["wd"] = 0.01, 0.1
    assert len(compress_schedule(same)) == 3
    flat = compress_schedule(same, by_source=False)
    assert list(flat.columns) == ["start_step", "end_step", *HP]
    assert flat[["start_step", "end_step"]].values.tolist() == [[0, 40]]


def test_schedule_round_trips_through_csv(run_dir, tmp_path):
    sched = lineage_schedule(read_metrics(run_dir), read_events(run_dir), 1)
    path = write_schedule(sched, tmp_path / "s.csv")
    _check(read_schedule(path), sched)
    gap = sched.drop(index=1)
    write_schedule(gap, tmp_path / "gap.csv")
    with pytest.raises(ValueError, match="gap.csv"):
        read_schedule(tmp_path / "gap.csv")
    pd.DataFrame({"lr": [0.1]}).to_csv(tmp_path / "no.csv", index=False)
    with pytest.raises(ValueError, match="start_step"):
        read_schedule(tmp_path / "no.csv")


def test_schedule_from_dir_uses_the_best_member(run_dir):
    table, events = read_metrics(run_dir), read_events(run_dir)
    # Member 4 has no final loss (diverged); member 1 has the lowest.
    _check(lineage_schedule_from_dir(run_dir), lineage_schedule(table, events, 1))
    info = json.loads((run_dir / "run.json").read_text())
    info.update(objective="val_loss", maximize=True)  # now the worst loss wins: member 3
    (run_dir / "run.json").write_text(json.dumps(info))
    _check(lineage_schedule_from_dir(run_dir), lineage_schedule(table, events, 3))


def test_report_draws_lineage_and_writes_the_best_schedule(run_dir):
    summary = write_report(run_dir).read_text()
    for name in ("lineage.png", "hparam_trajectories.png", "curves_lr.png", "train_curves.png"):
        path = run_dir / "plots" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    table, events = read_metrics(run_dir), read_events(run_dir)
    _check(read_schedule(run_dir / "best_schedule.csv"), lineage_schedule(table, events, 1))
    assert "## Best member: 1" in summary
    assert "## Lineage" in summary
    assert "5 exploits: 4 members took over another member's weights, at steps 10, 20, 30." in (
        summary
    )
    assert "| start_step | end_step | source_member | lr | wd |" in summary
    assert "| 20 | 30 | 2 | 0.00192 | 0.192 |" in summary
    assert "| 30 | 40 | 1 | 0.002304 | 0.192 |" in summary
    assert "`plots/lineage.png`" in summary
    # A stop event: the budget is counted from the table (20 segments of 10 steps, less the
    # last one of member 3, stopped, and of member 4, diverged).
    assert "**Budget:** about 180 member-steps used (counted from the table)" in summary
    assert "1 member stopped (1 at step 30)" in summary


def test_budget_line_uses_member_steps_from_run_json(tmp_path):
    run_dir = _write_run(tmp_path / "r", member_steps=170)
    summary = write_report(run_dir).read_text()
    assert "**Budget:** 170 member-steps used, 85% of 200 (5 members × 40 steps)" in summary


def test_report_without_events_keeps_the_plain_summary(tmp_path):
    run_dir = _write_run(tmp_path / "plain", events=False)
    assert read_events(run_dir) == []
    summary = write_report(run_dir).read_text()
    assert "## Best member: 1" in summary
    assert "Lineage" not in summary
    assert "Budget" not in summary
    assert not (run_dir / "plots" / "lineage.png").exists()
    assert not (run_dir / "plots" / "hparam_trajectories.png").exists()
    assert not (run_dir / "best_schedule.csv").exists()
    assert (run_dir / "plots" / "curves_lr.png").exists()


def test_report_on_an_interrupted_pbt_run(tmp_path):
    run_dir = _write_run(tmp_path / "cut", members_csv=False, close=False)
    assert not (run_dir / "metrics.parquet").exists()
    summary = write_report(run_dir).read_text()
    assert "## Lineage" in summary
    assert (run_dir / "plots" / "lineage.png").exists()
    assert (run_dir / "best_schedule.csv").exists()
