"""simulate with several metrics: a curve returns ``{metric: values}`` (the single-array form
still gives ``val_loss``), the Observation carries every metric and the objectives, SimResult
gives the front and the hypervolume over member-steps."""

from __future__ import annotations

import numpy as np
import pytest

from jaxhpo import pareto
from jaxhpo.objectives import parse_constraints, parse_objectives
from jaxhpo.simulate import simulate
from jaxhpo.space import Float, Space
from jaxhpo.strategies.base import Strategy
from jaxhpo.strategies.search import RandomSearch

SPACE = Space({"a": Float(0, 1)})
OBJ = parse_objectives({"f": "min", "g": "max"})


def two(hp, ids, t, rng):
    return {"f": hp["a"], "g": hp["a"] ** 2 + 0.1 * t}


class Spy(RandomSearch):
    seen: list = []

    def update(self, state, obs):
        Spy.seen.append(obs)
        return Strategy.update(self, state, obs)


def test_single_array_curve_keeps_val_loss():
    res = simulate(
        RandomSearch(), SPACE, lambda hp, i, t, r: hp["a"], steps=2, segment_steps=1, size=4
    )
    assert "val_loss" in res.table and np.isnan(res.hypervolume) and res.front.empty
    assert res.best_loss == pytest.approx(res.table["val_loss"].min())


def test_observation_carries_every_metric_and_the_objectives():
    Spy.seen = []
    res = simulate(Spy(), SPACE, two, steps=3, segment_steps=1, size=6, objectives=OBJ)
    obs = Spy.seen[-1]
    assert set(obs.metrics) == {"f", "g"} and obs.objectives == OBJ
    assert {"val_f", "val_g"} <= set(res.table) and {"val_f", "val_g"} <= set(res.members)
    hv = res.anytime["hypervolume"].to_numpy()
    assert np.all(np.diff(hv) >= 0) and hv[-1] > 0
    F = np.stack([res.front["val_f"], -res.front["val_g"]], 1)
    assert np.all(np.asarray(pareto.rank(F)) == 0)


def test_constraints_and_a_given_reference():
    cons = parse_constraints({"f": "<= 0.5"})
    res = simulate(
        RandomSearch(), SPACE, two, steps=1, segment_steps=1, size=16, objectives=OBJ,
        constraints=cons, reference=[1.0, 0.0],
    )  # fmt: skip
    assert (res.front["val_f"] <= 0.5).all()
    np.testing.assert_array_equal(res.reference, [1.0, 0.0])


def test_a_curve_must_return_the_same_metrics():
    calls = iter([{"f": np.zeros(2)}, {"g": np.zeros(2)}] * 3)
    with pytest.raises(ValueError, match="same metrics every call"):
        simulate(
            RandomSearch(),
            SPACE,
            lambda *a: next(calls),
            steps=2,
            segment_steps=1,
            size=2,
            objectives=parse_objectives({"f": "min"}),
        )
