"""Training on prepared token files (issue 19): host feed == device data, bit for bit; the batch
at a step does not depend on segment length, population or resume; a run on task.data trains."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_MODEL

from jaxhpo.cli import load_config
from jaxhpo.data.prepare import prepare_data
from jaxhpo.experiment import run
from jaxhpo.population import Population
from jaxhpo.tasks.tokens import TokenFileTask

TINY = dict(seq_len=16, batch_size=4, eval_batches=2, model=TINY_MODEL)
HP = {
    "lr": np.array([3e-3, 1e-2, 2e-2]),
    "warmup_steps": np.zeros(3),
    "decay_steps": np.full(3, 40.0),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A prepared byte-level data folder of the stdlib's first files (generated, no download)."""
    src = tmp_path_factory.mktemp("corpus")
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:12]
    (src / "corpus.txt").write_bytes(b"".join(f.read_bytes() for f in files)[:300_000])
    out = tmp_path_factory.mktemp("data")
    prepare_data(str(src / "corpus.txt"), out, log=None)
    return out


def _train_host(popn, task, pop, k, segments, active=None):
    for i in range(segments):
        if active is not None:
            pop = popn.set_active(pop, active[i])
        data = task.segment_data(np.asarray(pop.step), k)
        pop, _ = popn.train_segment(pop, data, k)
    return pop


def _train_device(popn, task, pop, k, segments, active=None):
    for i in range(segments):
        if active is not None:
            pop = popn.set_active(pop, active[i])
        pop, _ = popn.train_segment(pop, task.train_data, k)
    return pop


def _same(a, b):
    for x, y in zip(
        [*jax.tree.leaves(a.params), a.step],
        [*jax.tree.leaves(b.params), b.step],
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_host_feed_equals_device_data_for_any_segment_length_and_member_steps(data_dir):
    host = TokenFileTask(data=str(data_dir), feed="host", **TINY)
    dev = TokenFileTask(data=str(data_dir), feed="device", **TINY)
    ph = Population(host, "adamw", "warmup_cosine", mode="map")
    pd_ = Population(dev, "adamw", "warmup_cosine", mode="map")
    key = jax.random.key(3)
    # member 2 sits out the first segment: the members are at different steps after it
    active = [np.array([True, True, False]), np.ones(3, bool), np.ones(3, bool)]
    want = _train_device(pd_, dev, pd_.init(key, np.arange(3), HP), 4, 3, active)
    got = _train_host(ph, host, ph.init(key, np.arange(3), HP), 4, 3, active)
    assert list(np.asarray(got.step)) == [12, 12, 8]
    _same(got, want)
    # segment length: 12 steps as 3 x 4 (above) == 2 x 6 == 1 x 12 (all active)
    a = _train_host(ph, host, ph.init(key, np.arange(3), HP), 6, 2)
    b = _train_host(ph, host, ph.init(key, np.arange(3), HP), 12, 1)
    _same(a, b)
    # population: member 1 trained alone == member 1 in the population of 3
    one = {k: v[1:2] for k, v in HP.items()}
    alone = _train_host(ph, host, ph.init(key, np.array([1]), one), 6, 2)
    np.testing.assert_array_equal(
        np.asarray(jax.tree.leaves(alone.params)[0][0]), np.asarray(jax.tree.leaves(a.params)[0][1])
    )


def _run(tmp_path, data_dir, feed, extra=()):
    cfg = load_config(
        "lm-random",
        [
            f"task.data={data_dir}",
            f"task.feed={feed}",
            "task.seq_len=16",
            "task.batch_size=8",
            "task.eval_batches=2",
            *(f"model.{k}={v}" for k, v in TINY_MODEL.items()),
            "population.size=2",
            "train.steps=40",
            "train.segment_steps=10",
            "space.lr=loguniform(3e-3, 1e-2)",
            f"out_dir={tmp_path / feed}",
            *extra,
        ],
    )
    return run(cfg, quiet=True).run_dir


def test_run_on_prepared_data_trains_and_host_feed_equals_device(tmp_path, data_dir):
    host = _run(tmp_path, data_dir, "host")
    dev = _run(tmp_path, data_dir, "device")
    th = pd.read_csv(host / "metrics.csv").drop(columns=["run", "wall_time"])
    td = pd.read_csv(dev / "metrics.csv").drop(columns=["run", "wall_time"])
    pd.testing.assert_frame_equal(th, td, check_exact=True)
    first, last = th[th.step == 0], th[th.step == 40]
    assert (last["val_loss"].to_numpy() < first["val_loss"].to_numpy() - 0.5).all()
    info = json.loads((host / "run.json").read_text())
    assert info["task"]["tokens"]["train"] > 200_000 and info["task"]["feed"] == "host"
    feed = info["data_feed"]
    assert feed["prefetched"] >= 3 and feed["tokens"] >= 4 * 10 * 8 * 17
    assert "data_feed" not in json.loads((dev / "run.json").read_text())


@pytest.mark.slow  # three real processes (~3 min on 2 cores)
def test_sigkill_then_resume_on_host_fed_data_equals_the_uninterrupted_run(tmp_path, data_dir):
    from test_checkpoint import _assert_same_run, _resume, _run_killed
    from test_checkpoint import _run as _run_cli

    study = ["lm-pbt", "population.size=4", "strategy.ready_steps=10", f"task.data={data_dir}"]
    full = _run_cli(tmp_path / "full", study)
    killed = _run_killed(tmp_path / "killed", study, np.random.default_rng(19))
    assert "resuming" in _resume(killed).stderr
    _assert_same_run(full, killed)
    assert json.loads((killed / "run.json").read_text())["task"]["feed"] == "host"
