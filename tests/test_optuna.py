"""The Optuna adapter (``strategy.name: optuna``): trials told to Optuna land in the study with
their parameters and values (also in a SQLite storage reopened by Optuna itself), diverged members
are failed trials, TPE beats random search, the samplers run by name, points and warm starts are
enqueued/added, its state survives a checkpoint, and without optuna it says how to install it."""

from __future__ import annotations

import sys

import jax
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_LM_OVERRIDES
from searchbench import (
    BOWL_SPACE,
    FUNCTIONS,
    Resumed,
    bowl,
    curve,
    generations_of,
    leaves_are_plain,
    random_regret,
    searcher_regret,
)

from jaxhpo import cli
from jaxhpo.simulate import simulate
from jaxhpo.space import Choice, Fixed, Float, Int, Space

optuna = pytest.importorskip("optuna")
from jaxhpo.strategies.optuna_search import OptunaSearch, distributions  # noqa: E402

P = 8
MIXED = Space(
    {
        "lr": Float(1e-4, 1e-1, log=True),
        "n": Int(1, 8),
        "k": Choice((2.0, 4.0, 8.0)),
        "b": Fixed(0.9),
    }
)


def _mixed(hp):
    return (np.log10(hp["lr"]) + 2.5) ** 2 + (hp["n"] - 3) ** 2 / 10 + (hp["k"] != 4.0)


def test_space_maps_to_optuna_distributions():
    d = distributions(MIXED)
    D = optuna.distributions
    assert d == {
        "lr": D.FloatDistribution(1e-4, 1e-1, log=True),
        "n": D.IntDistribution(1, 8),
        "k": D.CategoricalDistribution([2.0, 4.0, 8.0]),
    }  # the fixed b is not a study parameter


def test_told_trials_round_trip_through_a_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    s = OptunaSearch(sampler="tpe", storage=url, study="rt")
    res = simulate(s, MIXED, curve(_mixed), steps=3, segment_steps=1, size=P, seed=0)
    study = optuna.load_study(study_name="rt", storage=url)  # Optuna reopens it by itself
    trials = study.get_trials()
    assert len(trials) == 3 * P
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert study.metric_names == ["loss"] and study.direction.name == "MINIMIZE"
    table = res.table.set_index("member")
    for t in trials:
        row = table.loc[t.user_attrs["member"]]
        assert t.user_attrs["generation"] == row["step"] - 1
        assert t.params["n"] == row["n"] and t.params["k"] == row["k"]
        assert t.params["lr"] == pytest.approx(row["lr"], rel=1e-12)
        assert t.value == pytest.approx(row["val_loss"], rel=1e-12)
    assert isinstance(trials[0].params["n"], int)
    assert study.best_value == pytest.approx(res.best_loss)


def test_diverged_members_are_failed_trials():
    def fn(hp, ids, t, rng):
        return np.where(ids % 4 == 1, np.nan, bowl(hp))

    s = OptunaSearch(sampler="random")
    simulate(s, BOWL_SPACE, fn, steps=2, segment_steps=1, size=P, seed=0)
    states = [t.state for t in s.study.get_trials()]
    assert states.count(optuna.trial.TrialState.FAIL) == 4  # members 1, 5, 9, 13
    assert states.count(optuna.trial.TrialState.COMPLETE) == 12


def test_tpe_beats_random_search_on_the_bowl():
    """Median best regret over 7 seeds: 8 generations x 16 trials vs 128 random samples."""
    seeds, G = range(7), 8
    rnd = random_regret(BOWL_SPACE, bowl, G * 16, seeds)
    ours = searcher_regret(lambda: OptunaSearch(sampler="tpe"), BOWL_SPACE, bowl, G, 16, seeds)
    print(f"\nbowl: optuna tpe {ours:.3g} vs random {rnd:.3g} (ratio {ours / rnd:.3f})")
    assert ours < 0.25 * rnd


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["tpe", "cmaes", "qmc", "nsga2", "random"])
def test_samplers_against_random_search(sampler):
    """Median best regret over 10 seeds, 12 generations x 16 trials vs 192 random samples: TPE
    and CMA-ES must beat random search clearly; QMC, NSGA-II and random are reported."""
    lines, failures = [], []
    for fname, (space, fn) in FUNCTIONS.items():
        rnd = random_regret(space, fn, 12 * 16, range(10))
        ours = searcher_regret(lambda: OptunaSearch(sampler=sampler), space, fn, 12, 16, range(10))
        lines.append(f"{fname}: optuna {sampler} {ours:.4g} vs random {rnd:.4g} ({ours / rnd:.3f})")
        if sampler in ("tpe", "cmaes") and not ours < 0.5 * rnd:
            failures.append(lines[-1])
    print("\n" + "\n".join(lines))
    assert not failures, failures


@pytest.mark.parametrize(
    ("sampler", "options", "liar"),
    [("tpe", {}, True), ("tpe", {"constant_liar": False}, False), ("random", {}, None)],
)
def test_batch_tpe_asks_with_constant_liar(monkeypatch, sampler, options, liar):
    """Every generation's sampler (a batch of P asked before any is told) is TPE with
    ``constant_liar=True`` unless the options say otherwise; a sampler without the setting
    (random) is built without it. Guards against batch TPE asking P near-identical trials."""
    built = []
    make = OptunaSearch._make_sampler

    def spy(self, *a, **k):
        built.append(make(self, *a, **k))
        return built[-1]

    monkeypatch.setattr(OptunaSearch, "_make_sampler", spy)
    strat = OptunaSearch(sampler=sampler, sampler_options=options)
    simulate(strat, BOWL_SPACE, curve(bowl), steps=3, segment_steps=1, size=P, seed=0)
    asked = built[1:]  # the constructor's check builds one first
    assert len(asked) >= 3
    assert all(getattr(s, "_constant_liar", None) is liar for s in asked), asked


@pytest.mark.parametrize("sampler", ["cmaes", "qmc", "nsga2", "random", "RandomSampler"])
def test_samplers_by_name_propose_valid_members(sampler):
    res = simulate(
        OptunaSearch(sampler=sampler), MIXED, curve(_mixed), steps=3, segment_steps=1, size=P
    )
    MIXED.validate_values({k: res.table[k].to_numpy() for k in MIXED.searched})
    assert res.member_steps == 3 * P and res.table["member"].nunique() == 3 * P


def test_points_are_enqueued_as_the_first_trials():
    points = [{"lr": 1e-3, "n": 3, "k": 4.0}, {"n": 7}]
    s = OptunaSearch(sampler="tpe", points=points)
    state, cols = s.init(0, MIXED, P)
    assert (cols["lr"][0], cols["n"][0], cols["k"][0]) == (pytest.approx(1e-3), 3, 4.0)
    assert cols["n"][1] == 7 and cols["b"][0] == 0.9
    trials = s.study.get_trials()
    assert trials[0].params == {"lr": pytest.approx(1e-3), "n": 3, "k": 4.0}


def test_state_is_a_pytree_that_round_trips_through_checkpoint():
    """A resumed strategy (fresh object, in-memory study rebuilt from the state) proposes what the
    uninterrupted one does."""

    def run(strategy):
        return simulate(strategy, MIXED, curve(_mixed), steps=4, segment_steps=1, size=P, seed=3)

    plain = run(OptunaSearch(sampler="tpe"))
    resumed = run(Resumed(lambda: OptunaSearch(sampler="tpe")))
    for a, b in zip(
        generations_of(plain, MIXED, 4), generations_of(resumed, MIXED, 4), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    # 11 + the pruned slots, the told trials pruned, their archived reports (3 flat arrays),
    # the told trials' constraint values
    state, _ = OptunaSearch().init(0, MIXED, P)
    assert leaves_are_plain(state) and len(jax.tree.leaves(state)) == 17


def test_resume_reopens_a_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    res = simulate(
        Resumed(lambda: OptunaSearch(sampler="tpe", storage=url)),
        BOWL_SPACE,
        curve(bowl),
        steps=3,
        segment_steps=1,
        size=4,
    )
    names = optuna.get_all_study_names(url)
    assert len(names) == 1  # the restarts' empty studies were deleted
    study = optuna.load_study(study_name=names[0], storage=url)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == len(study.get_trials()) == 12  # the running trials were told
    assert sorted(t.value for t in done) == pytest.approx(sorted(res.table["val_loss"]))


def test_errors_name_the_field(monkeypatch):
    with pytest.raises(ValueError, match=r"strategy\.sampler: unknown 'nope'"):
        OptunaSearch(sampler="nope")
    with pytest.raises(ValueError, match=r"strategy\.storage"):
        OptunaSearch(storage="study.db")
    with pytest.raises(ValueError, match=r"strategy\.sampler_options.*TPESampler"):
        OptunaSearch(sampler_options={"no_such_option": 1})
    with pytest.raises(ValueError, match=r"strategy\.generation_steps"):
        OptunaSearch(generation_steps=3).check(12, 2)
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(ValueError, match=r"strategy\.sampler: .*GPSampler.*pip install"):
        OptunaSearch(sampler="gp")


def test_without_optuna_the_error_names_the_field_and_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(ValueError) as e:
        OptunaSearch()
    line = str(e.value)
    assert line.startswith("strategy.name: 'optuna' needs the optional package optuna")
    assert "pip install 'jaxhpo[optuna]'" in line and "\n" not in line


@pytest.mark.slow  # a real (tiny) LM study: ~20 s on 2 idle cores
def test_lm_optuna_runs_end_to_end_into_a_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    argv = [
        "run", "lm-optuna", *TINY_LM_OVERRIDES, "population.size=4", "population.devices=1",
        "train.steps=20", "train.segment_steps=10", "strategy.generation_steps=10",
        f"strategy.storage={url}", "strategy.study=lm",
        "--out", str(tmp_path / "runs"), "--quiet",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    members = pd.read_csv(run_dir / "members.csv")
    assert (run_dir / "plots" / "final_vs_hparams.png").exists()
    study = optuna.load_study(study_name="lm", storage=url)
    trials = {t.user_attrs["member"]: t for t in study.get_trials()}
    assert sorted(trials) == sorted(members["member"]) and len(trials) == 8
    for _, row in members.iterrows():
        t = trials[row["member"]]
        assert t.value == pytest.approx(row["val_loss"], rel=1e-6)
        assert t.params["lr"] == pytest.approx(row["lr"], rel=1e-6)  # float32 in the table
        assert t.params["warmup_steps"] == row["warmup_steps"]
