"""k-fold cross-validation: folds as members of the one population, fitness = mean over folds."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_LM_OVERRIDES, TINY_MODEL

from jaxhpo.cli import main
from jaxhpo.population import Population
from jaxhpo.strategies.base import Observation, PopulationUpdate, Strategy
from jaxhpo.strategies.cv import CrossValidated
from jaxhpo.tasks import LanguageModelTask
from jaxhpo.tasks.base import data_key, sample_rows


def test_sample_rows_never_draws_the_held_out_fold():
    n, size = 60, 20
    data = {"row": jnp.arange(n), "key": data_key(0)}
    for fold in range(3):
        rows = np.concatenate(
            [
                np.asarray(sample_rows(data, s, 16, ("row",), jnp.int32(fold), size)["row"])
                for s in range(60)
            ]
        )
        held = (rows >= fold * size) & (rows < (fold + 1) * size)
        assert not held.any()
        assert set(rows) == set(range(n)) - set(range(fold * size, (fold + 1) * size))


def test_lm_fold_windows_never_touch_the_held_out_bytes():
    task = LanguageModelTask(
        max_bytes=60_000, seq_len=16, batch_size=8, eval_batches=3, model=TINY_MODEL
    )
    task.set_folds(3)
    corpus = np.asarray(task.train_data["corpus"]).copy()
    corpus[corpus == 255] = 254
    m = task._fold_size
    batch = jax.jit(task.train_batch)
    for fold in range(3):
        marked = corpus.copy()
        marked[fold * m : (fold + 1) * m] = 255  # the held-out bytes
        data = {**task.train_data, "corpus": jnp.asarray(marked)}
        seen = np.stack([np.asarray(batch(data, s, jnp.int32(fold))["tokens"]) for s in range(300)])
        assert not (seen == 255).any()
        # without the fold, the same draws do reach the marked bytes: the check can fail
        plain = np.stack([np.asarray(batch(data, s)["tokens"]) for s in range(300)])
        assert (plain == 255).any()
    assert task.splits.val["tokens"].shape[0] == 3  # one validation set per fold


def test_members_are_validated_on_their_own_fold():
    task = LanguageModelTask(
        max_bytes=200_000, seq_len=16, batch_size=4, eval_batches=4, model=TINY_MODEL
    )
    task.set_folds(2)
    popn = Population(task, "adamw", "warmup_cosine", mode="map")
    pop = popn.init(jax.random.key(0), np.arange(4), {"lr": 1e-2, "fold": np.array([0, 1, 0, 1])})
    pop, _ = popn.train_segment(pop, task.train_data, 5)
    by_fold = np.asarray(popn.evaluate(pop, task.splits.val, by_fold=True)["loss"])
    for f in range(2):
        own = jax.tree.map(lambda x, f=f: x[f], task.splits.val)
        plain = np.asarray(popn.evaluate(pop, own)["loss"])
        idx = np.array([0, 1, 0, 1]) == f
        np.testing.assert_allclose(by_fold[idx], plain[idx], rtol=1e-6)
    assert not np.allclose(by_fold[0], by_fold[1])


class _Recorder(Strategy):
    name = "recorder"

    def init(self, seed, space, size):
        return None, {"lr": np.arange(size, dtype=float)}

    def update(self, state, obs):
        self.seen = obs
        return state, PopulationUpdate(
            parents=np.array([1, 1]),
            active=np.array([True, False]),
            keep=np.array([1]),
            hparams={"lr": np.array([5.0, 6.0])},
        )


def test_wrapper_averages_folds_and_expands_decisions():
    inner = _Recorder()
    cv = CrossValidated(inner, 3)
    _, cols = cv.init(0, None, 6)
    np.testing.assert_array_equal(cols["lr"], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(cols["fold"], [0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="population.size"):
        cv.init(0, None, 5)
    obs = Observation(
        step=5,
        member_id=np.arange(6),
        hparams={"lr": cols["lr"], "fold": cols["fold"]},
        metrics={"loss": np.array([1.0, 2.0, 3.0, 4.0, 5.0, 9.0])},
        diverged=np.array([False] * 5 + [True]),
        active=np.ones(6, bool),
    )
    _, upd = cv.update(None, obs)
    np.testing.assert_allclose(inner.seen.metrics["loss"], [2.0, 6.0])
    np.testing.assert_array_equal(inner.seen.diverged, [False, True])
    np.testing.assert_array_equal(inner.seen.member_id, [0, 3])
    assert "fold" not in inner.seen.hparams
    np.testing.assert_array_equal(upd.parents, [3, 4, 5, 3, 4, 5])  # fold by fold
    np.testing.assert_array_equal(upd.active, [True] * 3 + [False] * 3)
    np.testing.assert_array_equal(upd.keep, [3, 4, 5])
    np.testing.assert_array_equal(upd.hparams["lr"], [5, 5, 5, 6, 6, 6])


@pytest.mark.slow
def test_cli_pbt_with_folds(tmp_path):
    rc = main(
        [
            "run",
            "lm-pbt",
            *TINY_LM_OVERRIDES,
            "task.eval_batches=3",
            "task.folds=3",
            "population.size=6",
            "train.steps=20",
            "train.segment_steps=5",
            "strategy.ready_steps=5",
            f"out_dir={tmp_path}",
            "--quiet",
        ]
    )
    assert rc == 0
    (run,) = tmp_path.iterdir()
    members = pd.read_csv(run / "members.csv")
    assert sorted(members["fold"]) == [0, 0, 1, 1, 2, 2]
    # the folds of a trial keep the same hyperparameters through PBT's exploit and explore
    for _, g in members.groupby(members.index // 3):
        assert g["lr"].nunique() == 1 and sorted(g["fold"]) == [0, 1, 2]
    assert "## Cross-validation (3 folds)" in (run / "summary.md").read_text()


@pytest.mark.parametrize(
    "args, field",
    [
        (["task.folds=0"], "task.folds"),
        (["task.folds=3", "population.size=4"], "population.size"),
        (["pbt-toy", "task.folds=2"], "task.folds"),
    ],
)
def test_bad_fold_settings(tmp_path, capsys, args, field):
    rc = main(["run", *args, f"out_dir={tmp_path}", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert field in err and len(err.splitlines()) == 1


def _fold_curve(hp, ids, t, rng):
    """A bowl in lr whose folds differ a little, so the mean over folds is what ranks trials."""
    del ids, rng
    return (np.log10(hp["lr"]) + 2.5) ** 2 + 1.0 / (1 + t) + 0.01 * hp["fold"]


_CV_STRATEGIES = [
    ("random", {}),
    ("sobol", {}),
    ("grid", {"points_per_dim": 2}),
    ("pbt", {"ready_steps": 2}),
    ("halving", {"min_steps": 2, "eta": 2}),
    ("halving", {"min_steps": 2, "eta": 2, "mode": "compact"}),
    ("hyperband", {"min_steps": 2, "eta": 2}),
    ("median", {"min_steps": 2}),
    ("evo", {"generation_steps": 2}),
    ("bo", {"fit_steps": 5, "candidates": 16}),
    ("rl", {}),
    ("optuna", {}),
]


@pytest.mark.parametrize(
    "name, fields",
    _CV_STRATEGIES,
    ids=[f"{n}-{'-'.join(map(str, f.values()))}" for n, f in _CV_STRATEGIES],
)
def test_every_strategy_runs_with_folds_and_keeps_trials_whole(name, fields):
    """Regression: the stopping rules crashed under k-fold ('median did not create members
    [4, 6]') because they saw member ids, not the trial ids they numbered."""
    from jaxhpo.config import StrategyConfig, TrainConfig
    from jaxhpo.run.prepare import build_strategy
    from jaxhpo.simulate import simulate
    from jaxhpo.space import Space

    if name == "optuna":
        pytest.importorskip("optuna")
    k, steps, seg = 2, 8, 2
    space = Space.from_config({"lr": "loguniform(1e-4, 1e-1)"})
    train = TrainConfig(steps=steps, segment_steps=seg)
    inner = build_strategy(StrategyConfig(name=name, options=fields), train)
    size = None if inner.decides_size else 8
    res = simulate(
        CrossValidated(inner, k), space, _fold_curve, steps=steps, segment_steps=seg, size=size
    )
    assert res.steps == steps or any(e["kind"] == "stop" for e in res.events)
    for table in (res.table, res.members):
        ids = table["member"].to_numpy()
        assert (ids.reshape(-1, k) == ids.reshape(-1, k)[:, :1] + np.arange(k)).all()
    rows = res.table.assign(trial=res.table["member"] // k)
    for _, g in rows.groupby(["step", "trial"]):
        assert sorted(g["fold"]) == list(range(k))
        assert g["lr"].nunique() == 1 and g["active"].nunique() == 1
    stopped = [e["member"] for e in res.events if e["kind"] == "stop"]
    assert sorted(stopped) == sorted({m // k * k + f for m in stopped for f in range(k)})


_CV_STOPPING = {
    "median": ["lm-median"],
    "halving-masked": ["lm-halving", "strategy.eta=2"],
    "halving-compact": ["lm-halving", "strategy.eta=2", "strategy.mode=compact"],
    "hyperband": ["lm-hyperband", "strategy.eta=2", "population.size=null"],
}


# median in the default suite; the others (about 10 s each) under -m slow
@pytest.mark.parametrize(
    "name", [n if n == "median" else pytest.param(n, marks=pytest.mark.slow) for n in _CV_STOPPING]
)
def test_stopping_rules_with_folds_stop_whole_trials(tmp_path, name):
    """Regression: ``task.folds=2`` with median, halving (masked, compact) or Hyperband crashed
    at the first update (``median did not create members [4, 6]``)."""
    preset, *extra = _CV_STOPPING[name]
    rc = main(
        [
            "run",
            preset,
            *TINY_LM_OVERRIDES,
            "task.eval_batches=1",
            "task.folds=2",
            "population.size=4",
            *extra,
            "train.steps=20",
            "train.segment_steps=10",
            "strategy.min_steps=10",
            f"out_dir={tmp_path}",
            "--quiet",
        ]
    )
    assert rc == 0
    (run,) = tmp_path.iterdir()
    stops = [
        e
        for e in map(json.loads, (run / "events.jsonl").read_text().splitlines())
        if e["kind"] == "stop"
    ]
    assert stops, "nothing was stopped: the test cannot see the fold expansion"
    stopped = sorted(e["member"] for e in stops)
    assert stopped == sorted({m // 2 * 2 + f for m in stopped for f in range(2)})
    table = pd.read_csv(run / "metrics.csv")
    last = table[table["step"] == table["step"].max()]
    for _, g in last.groupby(last["member"] // 2):  # a trial's folds stop together
        assert g["active"].nunique() == 1
