"""bo's TuRBO-style trust region (``strategy.trust_region``) and the local acquisition's box:
the length doubles after successes, halves after failures and restarts below its floor; the box
holds the incumbent inside the unit cube; projected Adam never leaves its box even when the
draw's minimum lies outside; a bo study with the region proposes inside it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from searchbench import BOWL_SPACE, Resumed, bowl, curve, generations_of

from jaxhpo.simulate import simulate
from jaxhpo.space import Float, Space
from jaxhpo.strategies import gp, gp_draws, trust_region
from jaxhpo.strategies.bo import BayesOpt


def test_length_doubles_after_successes_halves_after_failures_and_restarts():
    D, P = 8, 4  # failure tolerance ceil(max(4, 8) / 4) = 2
    tr = trust_region.initial()
    y = np.array([5.0])
    for better in (4.0, 3.0, 2.0):  # three successes in a row
        tr = trust_region.adapt(tr, y, np.full(P, better), D)
        y = np.append(y, np.full(P, better))
    assert tr[0] == pytest.approx(1.6)  # 0.8 doubled, capped at 1.6
    for _ in range(2):  # two failures (one diverged batch counts as a failure)
        tr = trust_region.adapt(tr, y, np.array([9.0, np.inf, 2.0, 3.0]), D)
    assert tr[0] == pytest.approx(0.8)
    lengths = []
    for _ in range(16):
        tr = trust_region.adapt(tr, y, np.full(P, 7.0), D)
        lengths.append(tr[0])
    assert min(lengths) >= trust_region.LENGTH_MIN
    assert trust_region.LENGTH_INIT in lengths[1:]  # it shrank past the floor and restarted


def test_box_holds_the_incumbent_inside_the_cube_with_sides_from_length_scales():
    X = np.array([[0.5, 0.5], [0.95, 0.1], [0.2, 0.8]])
    lo, hi = trust_region.box(X, np.array([1.0, -2.0, 0.0]), np.log([0.1, 0.4]), 0.4)
    assert np.all(lo >= 0) and np.all(hi <= 1) and np.all(lo <= X[1]) and np.all(X[1] <= hi)
    # w = (0.5, 2): half sides (0.1, 0.4) around (0.95, 0.1), clipped to the cube
    np.testing.assert_allclose(hi - lo, [0.05 + 0.1, 0.1 + 0.4])


@pytest.mark.parametrize("box", [None, ([0.1, 0.6], [0.3, 0.9])])
def test_local_acquisition_step_stays_in_its_box(box):
    """The data's minimum is at the origin, outside the box, and the learning rate is large:
    unprojected Adam would leave it."""
    rng = np.random.default_rng(0)
    lo, hi = (np.zeros(2), np.ones(2)) if box is None else map(np.asarray, box)
    with gp.x64():
        X = rng.random((12, 2))
        y = gp.standardise(np.sum((X + 0.5) ** 2, axis=1))
        data = gp.pad(X, y)
        theta = gp.init_theta(2)
        cand = jnp.asarray(lo + (hi - lo) * rng.random((32, 2)))
        _, _, x_PxD, f_P = gp_draws.optimise_draws(
            jax.random.key(0),
            theta,
            *data,
            cand,
            draws=6,
            features=64,
            steps=40,
            learning_rate=0.5,
            lo_D=jnp.asarray(lo),
            hi_D=jnp.asarray(hi),
        )
    x = np.asarray(x_PxD)
    assert np.all(np.isfinite(np.asarray(f_P)))
    assert np.all(x >= lo - 1e-12) and np.all(x <= hi + 1e-12), x
    if box is not None:  # pushed against the box's lower corner, towards the minimum
        assert np.mean(np.isclose(x, lo)) > 0.5, x


@pytest.mark.slow  # compiles the GP fit and the draws for three data sizes: minutes on 2 cores
def test_bo_with_trust_region_proposes_inside_its_region(monkeypatch):
    boxes, proposed = [], []
    make_box = trust_region.box

    def spy_box(*a):
        boxes.append(make_box(*a))
        return boxes[-1]

    monkeypatch.setattr(trust_region, "box", spy_box)
    strat = BayesOpt(trust_region=True, candidates=64, fit_steps=30, local_steps=10)
    propose = strat.propose

    def spy_propose(*a, **k):
        out = propose(*a, **k)
        proposed.append(out[0])
        return out

    monkeypatch.setattr(strat, "propose", spy_propose)
    res = simulate(strat, BOWL_SPACE, curve(bowl), steps=4, segment_steps=1, size=4, seed=0)
    assert len(boxes) == len(proposed) == 3
    for (lo, hi), u in zip(boxes, proposed, strict=True):
        assert np.all(u >= lo - 1e-9) and np.all(u <= hi + 1e-9)
    lengths = [e["trust_region_length"] for e in res.events if e["kind"] == "generation"][:3]
    assert all(0 < v <= trust_region.LENGTH_MAX for v in lengths), lengths


@pytest.mark.parametrize(
    "setting, P, D, objectives, on",
    [
        (None, 1, 8, (), True),  # one draw at a time in 7+ dims: the default region
        (None, 1, 6, (), False),  # log EI's member up to 6 dims
        (None, 4, 8, (), False),  # a batch of draws spreads out by itself
        (None, 1, 8, ("loss", "latency"), False),  # several objectives: no single incumbent
        (False, 1, 8, (), False),
        (True, 4, 3, (), True),
    ],
)
def test_trust_region_default_follows_members_dims_and_objectives(setting, P, D, objectives, on):
    strat = BayesOpt(trust_region=setting)
    strat.objectives = objectives
    assert strat.uses_trust_region(P, D) is on


@pytest.mark.parametrize("prior_mean", ["zero", "fit"])
def test_one_member_in_eight_dims_proposes_in_the_default_region_and_resumes_exactly(prior_mean):
    """The initial design takes 9 generations; then the region proposes, its length adapting.
    A run whose state goes through the checkpoint's packing after every generation proposes the
    same points (the region's state and a fitted prior mean round-trip)."""
    space = Space({f"x{i}": Float(0.0, 1.0) for i in range(8)})
    fn = curve(lambda hp: sum((hp[k] - 0.3) ** 2 for k in hp))

    def run(strategy):
        return simulate(strategy, space, fn, steps=13, segment_steps=1, size=1, seed=2)

    make = lambda: BayesOpt(candidates=32, fit_steps=10, prior_mean=prior_mean)  # noqa: E731
    res = run(make())
    events = [e for e in res.events if e["kind"] == "generation"]
    assert events[-2].get("proposal") != "sobol"
    assert all(0 < e["trust_region_length"] <= trust_region.LENGTH_MAX for e in events[9:])
    resumed = run(Resumed(make))
    for a, b in zip(
        generations_of(res, space, 13), generations_of(resumed, space, 13), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_a_constrained_study_takes_no_default_region():
    """One objective with a constraint proposes by the constrained (multi-objective) forms over
    the whole space: the default region stays off (it recorded a length it did not use)."""
    from jaxhpo.objectives import parse_constraints, parse_objectives

    space = Space({f"x{i}": Float(0.0, 1.0) for i in range(8)})

    def fn(hp, ids, t, rng):
        return {"f1": sum((hp[k] - 0.3) ** 2 for k in hp), "f2": hp["x0"]}

    res = simulate(
        BayesOpt(candidates=32, fit_steps=10), space, fn, steps=11, segment_steps=1, size=1,
        objectives=parse_objectives({"f1": "min"}), constraints=parse_constraints({"f2": ">= 0.2"}),
    )  # fmt: skip
    events = [e for e in res.events if e["kind"] == "generation"]
    assert len(events) >= 10 and not any("trust_region_length" in e for e in events)
