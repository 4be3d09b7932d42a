"""Checkpoint and resume: a run killed with SIGKILL at a random moment and resumed ends exactly as
the uninterrupted run (same metrics, same lineage, same members), for random search, PBT, an
evosax strategy (CMA-ES, generational), successive halving in compact mode, PBT with two
objectives and k-fold
cross-validation under the median stopping rule; a corrupted
latest checkpoint falls back to the previous one.

The runs are real processes (``python -m jaxhpo.cli run ...``) killed for real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_LM_OVERRIDES

TINY = [*TINY_LM_OVERRIDES, "train.steps=200", "train.segment_steps=10"]

STUDIES = {
    "random": ["lm-random", "population.size=4"],
    "pbt": ["lm-pbt", "population.size=4", "strategy.ready_steps=10", "strategy.fraction=0.5"],
    "evo": ["lm-evo", "population.size=4", "strategy.generation_steps=40"],
    "halving": [
        "lm-random",
        "strategy.name=halving",
        "strategy.mode=compact",
        "strategy.min_steps=10",
        "strategy.eta=2",
        "population.size=8",
    ],
    # several objectives: PBT exploits by Pareto rank and crowding (MO-PBT)
    "mo-pbt": [
        "lm-pbt",
        "population.size=4",
        "strategy.ready_steps=10",
        "strategy.fraction=0.5",
        "strategy.objectives={loss: min, accuracy: max}",
    ],
    # k-fold cross-validation under a stopping rule (the folds of a stopped trial stop together)
    "cv-median": [
        "lm-random",
        "strategy.name=median",
        "strategy.min_steps=20",
        "task.folds=2",
        "population.size=8",
    ],
}


def _env():
    env = dict(os.environ)
    env["JAXHPO_CPU_DEVICES"] = "1"
    env.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "jaxhpo.cli", *args]


def _only_dir(parent: Path) -> Path:
    (d,) = [p for p in parent.iterdir() if p.is_dir()]
    return d


def _run(out: Path, study: list[str]) -> Path:
    proc = subprocess.run(
        _cli("run", study[0], *TINY, *study[1:], "--out", str(out), "--quiet"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _only_dir(out)


def _run_killed(out: Path, study: list[str], rng: np.random.Generator) -> Path:
    """Starts the run, waits for checkpoint 1, 2, 3 or 4, sleeps a random fraction of a
    segment, and kills the process with SIGKILL."""
    proc = subprocess.Popen(
        _cli("run", study[0], *TINY, *study[1:], "--out", str(out), "--quiet"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    want = int(rng.integers(1, 5))
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        done = [  # committed checkpoints only (orbax writes into a temporary folder first)
            int(p.parent.name)
            for p in out.glob("*/checkpoints/*/commit_success.txt")
            if p.parent.name.isdigit()
        ]
        if max(done, default=0) >= want:  # only the latest 3 are kept: look at the numbers
            break
        time.sleep(0.05)
    # A random moment inside the next segment or two: training, evaluating or checkpointing.
    time.sleep(float(rng.uniform(0.0, 0.08)))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = _only_dir(out)
    assert not (run_dir / "members.csv").exists(), "the run finished before it was killed"
    return run_dir


def _resume(run_dir: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        _cli("resume", str(run_dir), "--quiet"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _assert_same_run(a: Path, b: Path) -> None:
    ta = pd.read_csv(a / "metrics.csv").drop(columns=["run", "wall_time"])
    tb = pd.read_csv(b / "metrics.csv").drop(columns=["run", "wall_time"])
    # Bit-identical on CPU: every value, every row, no row lost or written twice.
    pd.testing.assert_frame_equal(ta, tb, check_exact=True)
    assert (a / "events.jsonl").read_text() == (b / "events.jsonl").read_text()
    assert (a / "members.csv").read_text() == (b / "members.csv").read_text()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted run of each study, made once for the module."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = _run(tmp_path_factory.mktemp(f"full-{name}"), STUDIES[name])
        return cache[name]

    return get


# PBT in the default suite (it exercises the most state: exploits, copied moments); random,
# CMA-ES and compact halving under -m slow
@pytest.mark.parametrize(
    "name",
    [n if n == "pbt" else pytest.param(n, marks=pytest.mark.slow) for n in STUDIES],
)
def test_sigkill_then_resume_equals_the_uninterrupted_run(tmp_path, name, uninterrupted):
    study = STUDIES[name]
    full = uninterrupted(name)
    rng = np.random.default_rng(sum(map(ord, name)))
    killed = _run_killed(tmp_path / "killed", study, rng)
    out = _resume(killed)
    assert "resuming" in out.stderr
    _assert_same_run(full, killed)
    info = json.loads((killed / "run.json").read_text())
    assert info["resumed"] == 1
    assert info["member_steps"] == json.loads((full / "run.json").read_text())["member_steps"]
    if name == "pbt":
        assert sum('"exploit"' in x for x in (full / "events.jsonl").read_text().splitlines())


@pytest.mark.slow
def test_corrupted_latest_checkpoint_falls_back_to_the_previous(tmp_path, uninterrupted):
    study = STUDIES["pbt"]
    full = uninterrupted("pbt")
    killed = _run_killed(tmp_path / "killed", study, np.random.default_rng(3))
    ckpts = sorted(
        (p for p in (killed / "checkpoints").iterdir() if p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    if len(ckpts) < 2:  # make sure there is a previous one to fall back to
        pytest.skip("the run was killed before its second checkpoint")
    latest = ckpts[-1]
    for f in (latest / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\0garbage")
    out = _resume(killed)
    assert f"checkpoint {latest.name}" in out.stderr and "cannot be restored" in out.stderr
    assert f"after segment {ckpts[-2].name}" in out.stderr
    _assert_same_run(full, killed)


def test_resume_refuses_a_finished_run(uninterrupted):
    full = uninterrupted("pbt")
    proc = subprocess.run(
        _cli("resume", str(full)), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2
    assert "finished already" in proc.stderr


@pytest.mark.parametrize("kill_at", ["fsync", "replace"])
def test_resume_killed_while_cutting_the_tables_back_keeps_the_run(tmp_path, monkeypatch, kill_at):
    """Regression: a resume killed right after it opened metrics.csv to cut it back left it empty
    ('metrics.csv has 0 complete lines, the checkpoint expects 17'). The cut is atomic: a kill
    while the new table is written (fsync) or before it replaces the old one (replace) leaves
    the old table, and the next resume cuts it."""
    from jaxhpo import results

    path = tmp_path / "metrics.csv"
    rows = "member,step\n" + "".join(f"{m},10\n" for m in range(6)) + "6,2"  # last line cut short
    path.write_text(rows)
    (tmp_path / "events.jsonl").write_text('{"step": 10}\n{"step": 20}\n')

    class Killed(BaseException):
        pass

    def kill(*args, **kwargs):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(results.os, kill_at, kill)
        with pytest.raises(Killed):
            results.RunWriter(tmp_path, "run", [], [], resume=(4, 1))
    assert path.read_text() == rows  # the kill lost nothing
    writer = results.RunWriter(tmp_path, "run", [], [], resume=(4, 1))  # the next resume
    writer._csv.close()
    writer._events.close()
    assert path.read_text().splitlines() == rows.splitlines()[:5]
    assert (tmp_path / "events.jsonl").read_text() == '{"step": 10}\n'


def test_second_process_on_a_run_directory_is_refused_and_a_killed_holder_frees_it(
    tmp_path, capsys
):
    """Regression: `jaxhpo resume RUN_DIR` on a run another process was still writing was
    accepted (NUL bytes and duplicated rows in metrics.csv, then a crash on orbax's temporary
    folder). The writer holds RUN_DIR/.lock; a second process gets one line and exit status 2;
    the OS drops the lock of a process killed with SIGKILL."""
    from jaxhpo.cli import main

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("train:\n  compiled: true\n")
    (run_dir / "metrics.csv").write_text("member,step\n0,0\n")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from jaxhpo.results import run_dir_lock\n"
            f"with run_dir_lock({str(run_dir)!r}):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
        assert main(["resume", str(run_dir)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert "in use by another process" in err and f"pid {holder.pid}" in err
        assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The killed holder left the file but not the lock: the resume gets past it.
    assert main(["resume", str(run_dir)]) == 2
    assert "train.compiled" in capsys.readouterr().err
