"""k-fold cross-validation: folds as members of the one population, fitness = mean over folds."""

from __future__ import annotations

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
