"""Warm starts (``strategy.warm_start``, ``strategy.warm_start_top``) and explicit points for the
generation-based searchers: an earlier run directory is read (finished, non-diverged members,
best first, maximised metrics negated), its best members become the first generation (clipped
into the new space), BO's GP and Optuna's study get its observations, evo's mean moves to them,
and a warm-started study runs from the CLI."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TINY_LM_OVERRIDES

from jaxhpo import cli
from jaxhpo.config import StrategyConfig, TrainConfig
from jaxhpo.run.prepare import build_strategy
from jaxhpo.space import Float, Int, Space
from jaxhpo.strategies.bo import BayesOpt, init_theta
from jaxhpo.strategies.evo import EvoSearch
from jaxhpo.strategies.reinforce import Reinforce
from jaxhpo.strategies.warm import WarmSource, load_run, seed_study

SPACE = Space({"lr": Float(1e-4, 1e-2, log=True), "warmup_steps": Int(0, 50)})


@pytest.fixture
def earlier(tmp_path):
    """A run directory as results.py writes it: 6 members, one diverged, one stopped early."""
    members = pd.DataFrame(
        {
            "member": range(6),
            "b1": 0.9,  # a fixed hyperparameter of that run
            "lr": [1e-3, 5e-3, 2e-2, 1e-4, 3e-3, 2e-3],  # 2e-2 lies outside SPACE
            "warmup_steps": [10.0, 20.0, 80.0, 0.0, 30.0, 40.0],
            "val_loss": [2.0, 1.5, 1.2, 3.0, np.nan, 0.5],
            "test_loss": 0.0,
            "val_accuracy": [0.3, 0.4, 0.5, 0.1, np.nan, 0.9],
            "diverged": [False, False, False, False, True, False],
            "steps": [100, 100, 100, 100, 100, 30],  # member 5 was stopped at step 30
        }
    )
    run = tmp_path / "earlier"
    run.mkdir()
    members.to_csv(run / "members.csv", index=False)
    (run / "config.yaml").write_text(yaml.safe_dump({"task": {"kind": "lm"}}))
    return run


def test_load_run_keeps_finished_members_best_first(earlier):
    h = load_run(earlier)
    np.testing.assert_array_equal(h.fitness, [1.2, 1.5, 2.0, 3.0])  # not 4 (NaN), not 5 (short)
    np.testing.assert_array_equal(h.hparams["lr"], [2e-2, 5e-3, 1e-3, 1e-4])
    assert set(h.hparams) == {"b1", "lr", "warmup_steps"}
    acc = load_run(earlier, "accuracy")  # maximised on task lm: negated, still best first
    np.testing.assert_array_equal(acc.fitness, [-0.5, -0.4, -0.3, -0.1])


def test_best_members_are_clipped_into_the_new_space(earlier):
    seed = seed_study(SPACE, [{"lr": 3e-4}], WarmSource(load_run(earlier), 2), 4)
    assert seed.points == [
        {"lr": 3e-4},
        {"lr": 1e-2, "warmup_steps": 50.0},  # 2e-2 and 80 clipped to the space
        {"lr": 5e-3, "warmup_steps": 20.0},
    ]
    assert len(seed.fitness) == 4 and seed.cols["lr"].max() == 1e-2
    with pytest.raises(ValueError, match=r"strategy\.points: 1 explicit points and 2 from"):
        seed_study(SPACE, [{"lr": 3e-4}], WarmSource(load_run(earlier), 2), 2)
    other = Space({"lr": Float(1e-4, 1e-2, log=True), "dropout": Float(0, 0.3)})
    seed = seed_study(other, [], WarmSource(load_run(earlier), 1), 4)
    assert seed.points == [{"lr": 1e-2}] and seed.cols is None  # no dropout in the earlier run


def test_bo_seeds_its_gp_and_first_generation(earlier):
    s = BayesOpt(warm_start=str(earlier), warm_start_top=2)
    state, cols = s.init(0, SPACE, 4)
    assert state.X.shape == (4, 2) and sorted(state.y) == [1.2, 1.5, 2.0, 3.0]
    assert (cols["lr"][0], cols["warmup_steps"][0]) == (pytest.approx(1e-2), 50.0)
    assert (cols["lr"][1], cols["warmup_steps"][1]) == (pytest.approx(5e-3), 20.0)
    fitted = jax.tree.map(np.asarray, init_theta(2))
    assert not np.allclose(state.theta["log_ls"], fitted["log_ls"])  # the GP was fitted
    plain, _ = BayesOpt().init(0, SPACE, 4)
    assert not np.allclose(state.u[2:], plain.u[2:])  # GP proposals, not Sobol points


def test_rl_and_evo_start_from_the_best_members(earlier):
    s = Reinforce(warm_start=str(earlier), warm_start_top=2)
    state, cols = s.init(0, SPACE, 4)
    assert cols["lr"][0] == pytest.approx(1e-2) and cols["warmup_steps"][1] == 20.0
    z = SPACE.to_unconstrained({"lr": np.array([1e-2, 5e-3]), "warmup_steps": np.array([50, 20])})
    np.testing.assert_allclose(state.params["mu"], np.asarray(z).mean(0), rtol=1e-6)
    evo = EvoSearch(warm_start=str(earlier), warm_start_top=2)
    np.testing.assert_allclose(evo._initial_mean(SPACE), np.asarray(z).mean(0), rtol=1e-5)


def test_optuna_study_gets_the_earlier_trials(earlier):
    optuna = pytest.importorskip("optuna")
    from jaxhpo.strategies.optuna_search import OptunaSearch

    s = OptunaSearch(sampler="tpe", warm_start=str(earlier), warm_start_top=1)
    _, cols = s.init(0, SPACE, 4)
    done = s.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(t.value for t in done) == [1.2, 1.5, 2.0, 3.0]
    assert cols["lr"][0] == pytest.approx(1e-2) and cols["warmup_steps"][0] == 50


@pytest.mark.parametrize("name", ["bo", "rl", "optuna", "evo"])
def test_bad_warm_start_names_the_field(name, earlier, tmp_path):
    if name == "optuna":
        pytest.importorskip("optuna")
    bad = [
        ({"warm_start": str(tmp_path / "nope")}, r"strategy\.warm_start: .* is not a folder"),
        ({"warm_start": str(tmp_path)}, r"strategy\.warm_start: .* no members\.csv"),
        ({"warm_start": str(earlier), "metric": "q"}, r"strategy\.warm_start: .*val_q"),
        ({"warm_start_top": 2}, r"strategy\.warm_start_top: set strategy\.warm_start"),
        ({"warm_start": str(earlier), "warm_start_top": -1}, r"strategy\.warm_start_top"),
    ]
    for fields, pattern in bad:
        with pytest.raises(ValueError, match=pattern) as e:
            metric = fields.pop("metric", "loss")
            section = StrategyConfig(name=name, metric=metric, options=fields)
            build_strategy(section, TrainConfig())
        assert "\n" not in str(e.value)


@pytest.mark.slow  # two real (tiny) LM studies: ~40 s on 2 idle cores
def test_warm_started_bo_runs_from_the_cli(tmp_path):
    """A tiny random-search LM study, then lm-bo warm-started from its run directory: the first
    generation re-trains the earlier best members, and the run writes its table and plots."""
    tiny = [*TINY_LM_OVERRIDES, "population.size=3", "population.devices=1", "--quiet"]
    first = ["run", "lm-random", *tiny, "train.steps=10", "train.segment_steps=10"]
    assert cli.main([*first, "--out", str(tmp_path / "a")]) == 0
    (earlier,) = (tmp_path / "a").iterdir()
    before = pd.read_csv(earlier / "members.csv").sort_values("val_loss")
    argv = [
        "run", "lm-bo", *tiny, "train.steps=20", "train.segment_steps=10",
        "strategy.generation_steps=10", f"strategy.warm_start={earlier}",
        "strategy.warm_start_top=2", "--out", str(tmp_path / "b"),
    ]  # fmt: skip
    assert cli.main(argv) == 0
    (run_dir,) = (tmp_path / "b").iterdir()
    members = pd.read_csv(run_dir / "members.csv")
    assert len(members) == 6 and (run_dir / "plots" / "final_vs_hparams.png").exists()
    for i in range(2):  # members 0 and 1: the earlier best two (float32 in the tables)
        for k in ("lr", "warmup_steps", "weight_decay", "dropout"):
            assert members[k][i] == pytest.approx(before[k].iloc[i], rel=1e-6), (i, k)
