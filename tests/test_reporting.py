"""Results beyond the run directory's tables: TensorBoard event files (read back with
TensorBoard's own reader), the Optuna export (read back with Optuna's API), callbacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import TINY_LM_OVERRIDES
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from jaxhpo.cli import load_config, main
from jaxhpo.experiment import run
from jaxhpo.reporting.optuna_export import export_run

TINY = TINY_LM_OVERRIDES
PBT = ["population.size=4", "train.steps=12", "train.segment_steps=4", "strategy.ready_steps=4"]
HYPERBAND = ["strategy.min_steps=2", "strategy.eta=3", "train.steps=18", "train.segment_steps=2"]


class Recorder:
    def __init__(self):
        self.calls = []

    def on_start(self, run_dir, info):
        self.calls.append(("start", info["strategy"]))

    def on_evaluation(self, rows, events, run_dir):
        self.calls.append(("evaluation", len(rows), [e["kind"] for e in events]))

    def on_end(self, run_dir, members):
        self.calls.append(("end", len(members)))


class Broken:
    def on_evaluation(self, rows, events, run_dir):
        raise RuntimeError("boom")


@pytest.fixture(scope="module")
def pbt_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pbt")
    db = f"sqlite:///{out / 'live.db'}"
    cfg = load_config("lm-pbt", [*TINY, *PBT, f"out_dir={out}", f"report.optuna_storage={db}"])
    recorder = Recorder()
    result = run(cfg, quiet=True, callbacks=[Broken(), recorder])
    return result.run_dir, recorder, db


def test_run_writes_tensorboard_files_that_tensorboards_reader_loads(pbt_run):
    run_dir, _, _ = pbt_run
    metrics = pd.read_csv(run_dir / "metrics.csv")
    members = sorted(metrics["member"].unique())
    members_table = pd.read_csv(run_dir / "members.csv")
    dirs = sorted((run_dir / "tensorboard").iterdir(), key=lambda d: int(d.name.split("-")[1]))
    assert [d.name for d in dirs] == [f"member-{m}" for m in members]
    for m, d in zip(members, dirs, strict=True):
        ea = EventAccumulator(str(d))
        ea.Reload()
        tags = ea.Tags()["scalars"]
        assert {"val/loss", "val/accuracy", "loss/train", "hparams/lr"} <= set(tags)
        mine = metrics[metrics["member"] == m].sort_values("step")
        val = ea.Scalars("val/loss")
        assert [e.step for e in val] == mine["step"].tolist()  # one point per evaluation
        np.testing.assert_allclose([e.value for e in val], mine["val_loss"], rtol=1e-6)
        lr = ea.Scalars("hparams/lr")  # PBT changes it over the member's life
        np.testing.assert_allclose([e.value for e in lr], mine["lr"], rtol=1e-6)
        # the HParams dashboard's session: the member's final hyperparameters and metrics
        info = plugin_data_pb2.HParamsPluginData.FromString(
            ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        ).session_start_info
        last = members_table.set_index("member").loc[m]
        assert info.hparams["lr"].number_value == pytest.approx(last["lr"], rel=1e-6)
        assert ea.Scalars("test_loss")[-1].value == pytest.approx(last["test_loss"], rel=1e-6)


def test_callbacks_get_rows_events_and_the_end_and_a_broken_one_does_not_stop_the_run(pbt_run):
    run_dir, recorder, _ = pbt_run
    metrics = pd.read_csv(run_dir / "metrics.csv")
    evaluations = [c for c in recorder.calls if c[0] == "evaluation" and c[1]]
    assert recorder.calls[0] == ("start", "pbt") and recorder.calls[-1] == ("end", 4)
    assert len(evaluations) == metrics["step"].nunique()
    kinds = [k for c in recorder.calls if c[0] == "evaluation" for k in c[2]]
    assert "exploit" in kinds  # the strategy's events reach callbacks


def _trials(storage: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def test_optuna_export_of_a_pbt_run_live_and_afterwards(pbt_run, tmp_path):
    run_dir, _, live = pbt_run
    db = f"sqlite:///{tmp_path / 'after.db'}"
    assert main(["report", str(run_dir), "--to-optuna", db]) == 0
    members = pd.read_csv(run_dir / "members.csv")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    for storage in (live, db):
        trials = _trials(storage, run_dir.name)
        assert sorted(t.user_attrs["member"] for t in trials) == sorted(members["member"])
        for t in trials:
            m = t.user_attrs["member"]
            row = members[members["member"] == m].iloc[0]
            assert t.state == optuna.trial.TrialState.COMPLETE
            assert t.value == pytest.approx(row["val_loss"])
            curve = metrics[metrics["member"] == m].set_index("step")["val_loss"]
            assert t.intermediate_values == pytest.approx(curve.to_dict())
            assert t.user_attrs["run_dir"] == str(run_dir.resolve())
        parents = [k for t in trials for k in t.user_attrs if k.startswith("parent_at_")]
        assert parents  # PBT's exploits are recorded on the child's trial


@pytest.mark.slow
def test_optuna_export_of_a_hyperband_run_prunes_stopped_members(tmp_path):
    cfg = load_config("lm-hyperband", [*TINY, *HYPERBAND, f"out_dir={tmp_path}"])
    run_dir = run(cfg, quiet=True).run_dir
    db = f"sqlite:///{tmp_path / 'hb.db'}"
    name = export_run(run_dir, db)
    members = pd.read_csv(run_dir / "members.csv")
    states = {t.user_attrs["member"]: t.state for t in _trials(db, name)}
    longest = members["steps"].max()
    for _, row in members.iterrows():
        want = "COMPLETE" if row["steps"] == longest else "PRUNED"
        assert states[int(row["member"])].name == want
    assert sum(s.name == "PRUNED" for s in states.values()) > 0


def test_bad_optuna_storage_is_one_line_before_anything_runs(tmp_path, capsys):
    code = main(
        ["run", *TINY, f"out_dir={tmp_path}", "report.optuna_storage=sqlite:///nope/x/y.db"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxhpo: error: report.optuna_storage: folder")
    assert not list(Path(tmp_path).iterdir())


def test_wandb_and_mlflow_adapters_write_offline_files(pbt_run, tmp_path, monkeypatch):
    """Replayed into the W&B (offline mode) and MLflow (local sqlite store) adapters: one
    tracked run per member, read back from the files, no network."""
    from mlflow.tracking import MlflowClient

    from jaxhpo.reporting.callbacks import replay
    from jaxhpo.reporting.trackers import MLflowCallback, WandbCallback

    run_dir, _, _ = pbt_run
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    replay(run_dir, [MLflowCallback(uri), WandbCallback(mode="offline", dir=str(tmp_path))])
    metrics = pd.read_csv(run_dir / "metrics.csv")
    members = pd.read_csv(run_dir / "members.csv")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(run_dir.name)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == len(members)
    for r in runs:
        m = int(r.data.tags["jaxhpo.member"])
        history = client.get_metric_history(r.info.run_id, "val_loss")
        mine = metrics[metrics["member"] == m].sort_values("step")
        assert [h.step for h in history] == mine["step"].tolist()
        np.testing.assert_allclose([h.value for h in history], mine["val_loss"], rtol=1e-6)
        assert r.info.status == "FINISHED"
        final = members.set_index("member").loc[m, "test_loss"]
        assert r.data.metrics["final_test_loss"] == pytest.approx(final)
    offline = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == len(members) and all(f.stat().st_size > 0 for f in offline)


def test_progress_lines_fit_80_columns_and_give_an_eta(tmp_path):
    import io

    from rich.console import Console

    buf = io.StringIO()
    overrides = [*TINY, f"out_dir={tmp_path}", "train.steps=12", "train.segment_steps=4"]
    cfg = load_config("lm-random", [*overrides, "population.size=2", "report.tensorboard=false"])
    run(cfg, console=Console(file=buf, force_terminal=False, width=200))
    lines = [x for x in buf.getvalue().splitlines() if x.startswith("segment ")]
    assert len(lines) == 3 and all(len(x) <= 80 for x in lines)
    assert lines[0].startswith("segment 1/3 step 4/12 | best val loss")
    assert "first segment in " in lines[0]  # the time to the first trained segment
    assert "ETA 0:" in lines[-1]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert not (run_dir / "tensorboard").exists()  # report.tensorboard=false writes none


def test_trackers_after_a_kill_and_resume_equal_the_uninterrupted_run(
    pbt_run, tmp_path, monkeypatch
):
    """Regression (issue 26): the W&B and MLflow adapters kept the points a killed run had
    logged after its checkpoint and logged them again on resume. A resumed tracker forgets what
    this run wrote and logs the committed calls again: one point per (member, step), one
    offline W&B folder per member."""
    import json

    from mlflow.tracking import MlflowClient

    from jaxhpo.reporting.callbacks import history
    from jaxhpo.reporting.trackers import MLflowCallback, WandbCallback

    run_dir, _, _ = pbt_run
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    info = json.loads((run_dir / "run.json").read_text())
    calls, left = history(run_dir)
    killed = [MLflowCallback(uri), WandbCallback(mode="offline", dir=str(tmp_path))]
    for cb in killed:  # the killed process: it logged every call, then died before the end
        cb.on_start(run_dir, info)
        for rows, events in calls:
            cb.on_evaluation(rows, events, run_dir)
    for tracked in killed[1].runs.values():  # the process died: its W&B runs are not open
        tracked.finish()
    resumed = [MLflowCallback(uri), WandbCallback(mode="offline", dir=str(tmp_path))]
    for cb in resumed:  # resumed at the last checkpoint: the tables hold every call
        cb.on_start(run_dir, {**info, "resumed_at_step": int(calls[-1][0][0]["step"])})
        cb.on_evaluation([], left, run_dir)
        cb.on_end(run_dir, pd.read_csv(run_dir / "members.csv"))
    metrics = pd.read_csv(run_dir / "metrics.csv")
    members = pd.read_csv(run_dir / "members.csv")
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(run_dir.name).experiment_id])
    assert sorted(int(r.data.tags["jaxhpo.member"]) for r in runs) == sorted(members["member"])
    for r in runs:
        m = int(r.data.tags["jaxhpo.member"])
        steps = [h.step for h in client.get_metric_history(r.info.run_id, "val_loss")]
        assert steps == metrics[metrics["member"] == m].sort_values("step")["step"].tolist()
        assert r.info.status == "FINISHED"
    offline = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline) == len(members)


_WANDB_MANY = """
import resource, sys, tempfile
from pathlib import Path
import pandas as pd
n, soft = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from jaxhpo.reporting.trackers import WandbCallback
run_dir = Path(tempfile.mkdtemp()) / "run"
run_dir.mkdir()
cb = WandbCallback(mode="offline")
cb.on_start(run_dir, {"searched": [], "hparam_names": []})
cb.on_evaluation([{"member": i, "step": 1, "val_loss": 1.0 + i} for i in range(n)], [], run_dir)
cb.on_end(run_dir, pd.DataFrame({"member": range(n), "val_loss": [1.0] * n}))
print(len(list((run_dir / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))))
"""


def test_wandb_runs_of_more_members_than_the_soft_file_limit_all_finish(tmp_path):
    """Each open W&B run holds a file until the end (offline runs cannot be resumed): 60
    members under a soft limit of 48 open files failed with "Too many open files"; the
    callback raises the soft limit toward the hard one."""
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}
    out = subprocess.run(
        [sys.executable, "-c", _WANDB_MANY, "60", "48"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "60"
