"""Ensembles of the top-k members: averaged predicted probabilities on a split."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from conftest import TINY_LM_OVERRIDES

from jaxhpo.cli import main
from jaxhpo.population import Population


@pytest.fixture(scope="module")
def trained(lm_task):
    popn = Population(lm_task, "adamw", "warmup_cosine", mode="map")
    pop = popn.init(jax.random.key(0), np.arange(3), {"lr": np.array([3e-3, 1e-2, 3e-2])})
    pop, _ = popn.train_segment(pop, lm_task.train_data, 20)
    return popn, pop


def test_ensemble_of_one_member_is_that_member(trained, lm_task):
    popn, pop = trained
    single = popn.evaluate(pop, lm_task.splits.test)
    for i in range(3):
        ens = popn.ensemble_evaluate(pop, [i], lm_task.splits.test)
        np.testing.assert_allclose(ens["loss"], float(single["loss"][i]), rtol=1e-5)
        np.testing.assert_allclose(ens["accuracy"], float(single["accuracy"][i]), rtol=1e-6)
    twice = popn.ensemble_evaluate(pop, [1, 1], lm_task.splits.test)
    np.testing.assert_allclose(twice["loss"], float(single["loss"][1]), rtol=1e-5)


def test_mixture_loss_is_at_most_the_mean_member_loss(trained, lm_task):
    """Cross-entropy is convex in the predicted distribution (Jensen): the mixture of several
    members' predictions scores no worse than their average loss, and strictly better when the
    members disagree (averaging logits instead would not guarantee this)."""
    popn, pop = trained
    single = np.asarray(popn.evaluate(pop, lm_task.splits.test)["loss"])
    ens = popn.ensemble_evaluate(pop, [0, 1, 2], lm_task.splits.test)
    assert ens["loss"] < single.mean() - 1e-4


def test_cli_reports_ensemble_beside_best_member(tmp_path, capsys):
    rc = main(
        [
            "run",
            "lm-random",
            *TINY_LM_OVERRIDES,
            "population.size=4",
            "train.steps=10",
            "train.segment_steps=10",
            "train.ensemble_top_k=3",
            f"out_dir={tmp_path}",
            "--quiet",
        ]
    )
    assert rc == 0
    (run,) = tmp_path.iterdir()
    ens = json.loads((run / "run.json").read_text())["ensemble"]
    assert ens["k"] == 3 and len(ens["members"]) == 3 and ens["members"][0] == ens["best_member"]
    assert np.isfinite(ens["test"]["loss"]) and 0 <= ens["test"]["accuracy"] <= 1
    assert "## Ensemble of the top 3" in (run / "summary.md").read_text()


def test_ensemble_refused_for_a_task_without_predictions(tmp_path, capsys):
    rc = main(["run", "pbt-toy", "train.ensemble_top_k=2", f"out_dir={tmp_path}", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "train.ensemble_top_k" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())
