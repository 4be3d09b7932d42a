"""Optuna's pruners inside the Optuna strategy's generations (``strategy.pruner``): a
member the pruner judges worse than the finished trials at the same step stops training, its
trial is PRUNED with its last intermediate value, a resumed study prunes what the uninterrupted one
pruned, and a pruner that cannot be replayed, or a bad name or option, is one line."""

from __future__ import annotations

import numpy as np
import pytest
from searchbench import BOWL_SPACE, Resumed, bowl, generations_of

from jaxhpo.simulate import simulate

optuna = pytest.importorskip("optuna")
from jaxhpo.strategies.optuna_search import OptunaSearch  # noqa: E402

P, GENERATIONS, SEGMENTS = 6, 4, 4  # 4 evaluations per generation


def _curve(hp, ids, t, rng):
    """The bowl's value, approached from above as the member trains (t steps)."""
    return bowl(hp) + 2.0 / (1.0 + np.asarray(t, np.float64))


def _make(pruner="median", **options):
    return lambda: OptunaSearch(
        sampler="tpe",
        sampler_options={"n_startup_trials": 4},
        pruner=pruner,
        pruner_options={"n_startup_trials": 2, "n_warmup_steps": 0, **options}
        if pruner == "median"
        else options,
        generation_steps=SEGMENTS,
    )


def _run(make):
    strategy = make()
    result = simulate(
        strategy,
        BOWL_SPACE,
        _curve,
        steps=GENERATIONS * SEGMENTS,
        segment_steps=1,
        size=P,
        seed=3,
    )
    inner = getattr(strategy, "inner", strategy)
    return result, inner.study


def test_pruned_members_stop_and_their_trials_are_pruned():
    result, study = _run(_make())
    stops = [e for e in result.events if e["kind"] == "stop"]
    assert stops and all("MedianPruner" in e["reason"] for e in stops)
    trials = study.get_trials(deepcopy=False)
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) == len(stops)
    t = result.table
    for e in stops:  # a stopped member trains no more: its steps end where it was pruned
        rows = t[t["member"] == e["member"]]
        assert rows["t"].max() < SEGMENTS
    for trial in pruned:  # its value is the last intermediate value, reported before the stop
        last = trial.intermediate_values[trial.last_step]
        assert trial.value == pytest.approx(last)
        assert trial.last_step < SEGMENTS
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(t.last_step == SEGMENTS for t in complete)
    # fewer member-steps than without the pruner, the same number of trials
    plain, _ = _run(_make(pruner=None))
    assert result.member_steps < plain.member_steps
    assert len(trials) == GENERATIONS * P


def test_a_resumed_study_prunes_what_the_uninterrupted_one_pruned():
    """Regression guard: the pruner judges from the state (reports of the generation, and the
    finished trials' intermediate values kept in the state), so an in-memory study rebuilt after
    every update stops the same members and proposes the same generations."""
    plain, study = _run(_make())
    resumed, rebuilt = _run(lambda: Resumed(_make()))
    assert [e for e in plain.events if e["kind"] == "stop"] == [
        e for e in resumed.events if e["kind"] == "stop"
    ]
    n = GENERATIONS
    for a, b in zip(
        generations_of(plain, BOWL_SPACE, n), generations_of(resumed, BOWL_SPACE, n), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [t.state for t in rebuilt.get_trials(deepcopy=False)]


@pytest.mark.parametrize(
    "pruner, options, match",
    [
        ("hyperband", {}, "HyperbandPruner keeps rung records.*strategy.name=hyperband"),
        ("SuccessiveHalvingPruner", {}, "strategy.name=halving"),
        ("no_such", {}, "strategy.pruner: unknown 'no_such'"),
        ("median", {"n_startup": 1}, "strategy.pruner_options: .*MedianPruner rejects"),
        (None, {"n_startup_trials": 1}, "pruner_options: set without"),
    ],
)
def test_bad_pruner_settings_are_one_line_errors(pruner, options, match):
    with pytest.raises(ValueError, match=match) as e:
        OptunaSearch(sampler="tpe", pruner=pruner, pruner_options=options)
    assert "\n" not in str(e.value)
