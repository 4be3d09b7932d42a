"""Side outputs resume exactly (issue 26): a run killed with SIGKILL at a chosen point and
resumed with ``jaxhpo resume`` ends with the uninterrupted run's TensorBoard files (read back
with TensorBoard's own reader: one value per (tag, step), the same text events and HParams), the
same live Optuna export (``report.optuna_storage``: trials, states, parameters, intermediate and
final values, attributes) and the same calls seen by a callback that keeps what it saw
(tests/killpoints.py). The processes are real; the kill comes from a callback at a chosen
point, so each case is the same every time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

ROOT = Path(__file__).resolve().parents[1]
DRIVER = str(Path(__file__).with_name("killpoints.py"))
VARYING = ("run", "wall_time")  # a run's name and clock
#: PBT's toy problem: 2 members, exploits and explores every 4 steps (events at every step).
TOY = ["pbt-toy", "train.steps=24"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["JAXHPO_CPU_DEVICES"] = "1"
    env.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _drive(*args: str, killed: bool) -> None:
    proc = subprocess.run(
        [sys.executable, DRIVER, *args], env=_env(), capture_output=True, text=True, timeout=600
    )
    if killed:
        assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL, where it was asked
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]


def study(out: Path, kill: str, study: list[str] = TOY, resumes: tuple[str, ...] = ()) -> Path:
    """Runs ``study`` into ``out`` (with a live Optuna export to ``out/export.db``), killed at
    ``kill``; resumes it, killed at each of ``resumes`` in turn, then to its end."""
    out.mkdir(parents=True)
    export = f"report.optuna_storage=sqlite:///{out / 'export.db'}"
    _drive("run", str(out), kill, *study, export, killed=kill != "none")
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    for again in resumes:
        _drive("resume", str(run_dir), again, killed=True)
    if kill != "none":
        _drive("resume", str(run_dir), "none", killed=False)
    return run_dir


def tensorboard_of(run_dir: Path) -> dict:
    """Every member's scalars, text events and HParams session, as TensorBoard reads them."""
    out = {}
    for d in sorted((run_dir / "tensorboard").iterdir()):
        ea = EventAccumulator(str(d), size_guidance={"scalars": 0, "tensors": 0})
        ea.Reload()
        scalars = {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}
        texts = {
            t: [(e.step, e.tensor_proto.string_val[0]) for e in ea.Tensors(t)]
            for t in ea.Tags()["tensors"]
        }
        hparams = {}
        for tag, content in ea.PluginTagToContent("hparams").items():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                data.session_start_info.start_time_secs = 0  # the clock
            hparams[tag] = data.SerializeToString(deterministic=True)
        out[d.name] = (scalars, texts, hparams)
    return out


def export_of(run_dir: Path) -> list[tuple]:
    """The live export's trials with everything but times and the run directory's path."""
    url = f"sqlite:///{run_dir.parent / 'export.db'}"
    trials = optuna.load_study(study_name=run_dir.name, storage=url).get_trials()
    return [
        (
            t.number,
            t.state.name,
            t.params,
            t.value,
            {k: v for k, v in t.user_attrs.items() if k != "run_dir"},
            t.system_attrs,
            t.intermediate_values,
        )
        for t in trials
    ]


def assert_same_outputs(full: Path, run_dir: Path) -> None:
    ta = pd.read_csv(full / "metrics.csv").drop(columns=["run", "wall_time"])
    tb = pd.read_csv(run_dir / "metrics.csv").drop(columns=["run", "wall_time"])
    pd.testing.assert_frame_equal(ta, tb, check_exact=True)
    assert (full / "events.jsonl").read_text() == (run_dir / "events.jsonl").read_text()
    assert (full / "members.csv").read_text() == (run_dir / "members.csv").read_text()
    assert (full.parent / "seen.jsonl").read_text() == (run_dir.parent / "seen.jsonl").read_text()
    assert tensorboard_of(run_dir) == tensorboard_of(full)
    assert export_of(run_dir) == export_of(full)
    assert json.loads((run_dir / "run.json").read_text())["finished"] is True
    assert (run_dir / "summary.md").exists()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    return study(tmp_path_factory.mktemp("side") / "full", "none")


def test_uninterrupted_side_outputs_follow_from_the_tables(uninterrupted):
    """What the callbacks saw live is what :func:`jaxhpo.reporting.callbacks.history` reads back
    from the
    tables (the same calls, events included), and every (tag, step) has one value."""
    from jaxhpo.reporting.callbacks import history

    calls, left = history(uninterrupted)
    seen = [json.loads(x) for x in (uninterrupted.parent / "seen.jsonl").read_text().splitlines()]
    drop = lambda rows: [{k: v for k, v in r.items() if k not in VARYING} for r in rows]
    replayed = [{"rows": drop(r), "events": e} for r, e in calls] + [{"rows": [], "events": left}]
    assert [{"rows": c["rows"], "events": c["events"]} for c in seen[:-1]] == json.loads(
        json.dumps(replayed)
    )
    for scalars, texts, _ in tensorboard_of(uninterrupted).values():
        for points in [*scalars.values(), *texts.values()]:
            steps = [s for s, _ in points]
            assert len(steps) == len(set(steps))
    assert {t[1] for t in export_of(uninterrupted)} == {"COMPLETE"}


def test_tensorboard_scalars_and_events_at_the_resumed_step_survive_a_kill(tmp_path, uninterrupted):
    """Regression: TensorBoard's scalars at the checkpoint's step were lost (still in
    tensorboardX's queue at the kill, purged on resume) and the events decided at that step
    never reached the callbacks (TensorBoard's text, the export's ``parent_at_<step>``). Killed
    right after the rows of step 12 (checkpoint at step 8 committed), resumed."""
    assert_same_outputs(uninterrupted, study(tmp_path / "killed", "eval:12"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill", "resumes"),
    [
        ("start", ()),  # before any checkpoint: step 0 written once
        ("eval:0", ()),  # step 0's rows given, checkpoint 0 not committed
        ("events", ()),  # the first evaluation handing events over
        ("eval:24", ()),  # the last rows, before the finish
        ("end", ()),  # inside the finish: members.csv written, the end not done
        ("eval:8", ("eval:16",)),  # twice: the resume killed as well
        ("eval:12", ("end",)),  # the resume killed inside the finish
    ],
)
def test_side_outputs_equal_the_uninterrupted_run_after_a_kill(
    tmp_path, uninterrupted, kill, resumes
):
    assert_same_outputs(uninterrupted, study(tmp_path / "killed", kill, resumes=resumes))


def test_truly_finished_run_is_refused_in_one_line(uninterrupted):
    from jaxhpo.cli import main

    proc = subprocess.run(
        [sys.executable, "-m", "jaxhpo.cli", "resume", str(uninterrupted)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "finished already" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert main is not None


#: The Optuna strategy on a named sqlite study: 3 members, generations of 8 steps (TPE after 2
#: trials; the preset's two points enqueued first).
OPTUNA = [
    *TOY,
    "population.size=3",
    "strategy.name=optuna",
    "strategy.generation_steps=8",
    "strategy.study=s",
    "strategy.sampler_options={n_startup_trials: 2}",
]


def optuna_study(out: Path, kill: str, resumes: tuple[str, ...] = ()) -> Path:
    db = f"strategy.storage=sqlite:///{out.parent / (out.name + '-strategy.db')}"
    return study(out, kill, [*OPTUNA, db], resumes)


def strategy_trials(run_dir: Path) -> list[tuple]:
    url = f"sqlite:///{run_dir.parent.parent / (run_dir.parent.name + '-strategy.db')}"
    assert optuna.get_all_study_names(url) == ["s"]
    return [
        (t.number, t.state.name, t.params, t.value, t.user_attrs, t.system_attrs)
        + (t.intermediate_values,)
        for t in optuna.load_study(study_name="s", storage=url).get_trials()
    ]


@pytest.fixture(scope="module")
def uninterrupted_optuna(tmp_path_factory) -> Path:
    return optuna_study(tmp_path_factory.mktemp("side-optuna") / "full", "none")


@pytest.mark.parametrize(
    ("kill", "resumes"),
    [
        ("start", ()),  # before any checkpoint: the default suite's case
        *(
            pytest.param(kill, resumes, marks=pytest.mark.slow)
            for kill, resumes in [
                ("eval:0", ()),  # step 0's rows given, checkpoint 0 not committed
                ("eval:4", ()),  # after checkpoint 0, inside the first generation
                ("eval:12", ()),  # inside the second generation (TPE's relative parameters)
                ("end", ()),  # inside the finish
                ("start", ("eval:20",)),  # twice
            ]
        ),
    ],
)
def test_optuna_database_study_killed_anywhere_resumes_as_the_uninterrupted_run(
    tmp_path, uninterrupted_optuna, kill, resumes
):
    """Regression: a named sqlite study killed before its first checkpoint kept the killed
    start's trials RUNNING and TPE proposed another second generation; trials a resume
    re-created lacked their system attributes (``fixed_params``, ``tpe:relative_params:*``)."""
    run_dir = optuna_study(tmp_path / "killed", kill, resumes)
    assert_same_outputs(uninterrupted_optuna, run_dir)
    assert strategy_trials(run_dir) == strategy_trials(uninterrupted_optuna)
    assert {t[1] for t in strategy_trials(run_dir)} == {"COMPLETE"}
