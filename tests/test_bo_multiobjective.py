"""Bayesian optimisation with several objectives (issue 27), both forms (hypervolume improvement
of per-objective Thompson draws, the default, and ParEGO) under simulate on ZDT1 (pymoo's problem
and true front): the hypervolume beats random search at equal evaluations, a generation's members
differ, a constraint keeps the front feasible, the hypervolume improvement equals moocore's
difference, and the trust region is refused with several objectives."""

from __future__ import annotations

import numpy as np
import pytest
from searchbench import zdt1_problem

from jaxhpo import pareto
from jaxhpo.objectives import parse_constraints
from jaxhpo.simulate import simulate
from jaxhpo.strategies import STRATEGIES
from jaxhpo.strategies.bo import BayesOpt, BOConfig
from jaxhpo.strategies.mo_thompson import epsilon_gap, improvements, normalise
from jaxhpo.strategies.parego import chebyshev
from jaxhpo.strategies.search import RandomSearch

problems = pytest.importorskip("pymoo.problems")

D = 3
SPACE, OBJ, REF, zdt1, ZDT1 = zdt1_problem(D)
GENERATIONS, SIZE = 6, 8


FORMS = ("hvi", "parego")


def _bo(seed, form="hvi", **kw):
    config = BOConfig(fit_steps=50, candidates=128, multi_objective=form)
    return simulate(
        BayesOpt(config), SPACE, zdt1, steps=GENERATIONS,
        segment_steps=1, size=SIZE, seed=seed, objectives=OBJ, reference=REF, **kw,
    )  # fmt: skip


def test_registered_with_a_multi_objective_form():
    assert STRATEGIES["bo"] is BayesOpt and BayesOpt.capabilities.objectives


def test_chebyshev_scalarisation():
    Y = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [np.inf, 0.0], [0.2, 0.2]])
    V = np.array([0, 0, 0, np.inf, 1.0])
    s = chebyshev(Y, V, np.array([1.0, 0.0]))
    assert s[0] == pytest.approx(0.0) and s[1] == pytest.approx(1.05)
    assert s[3] == np.inf and s[4] > s[:3].max()  # infeasible after every feasible row
    # the weights pick the end of the front: 0 is best for w=(1, 0), 1 for w=(0, 1)
    assert np.argmin(chebyshev(Y, V, np.array([0.0, 1.0]))) == 1


@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
def test_hypervolume_beats_random_search_at_equal_evaluations(form):
    true = pareto.hypervolume(ZDT1.pareto_front(), REF)
    ours, rand = [], []
    for seed in range(3):
        res = _bo(seed, form)
        other = simulate(
            RandomSearch(), SPACE, zdt1, steps=1, segment_steps=1, size=GENERATIONS * SIZE,
            seed=seed, objectives=OBJ, reference=REF,
        )  # fmt: skip
        assert res.member_steps == other.member_steps == GENERATIONS * SIZE
        ours.append(res.hypervolume / true)
        rand.append(other.hypervolume / true)
    assert np.median(ours) > np.median(rand) + 0.05, (ours, rand)
    assert 0 < np.median(ours) <= 1


@pytest.mark.parametrize("form", FORMS)
def test_members_of_a_generation_differ(form):
    res = _bo(0, form)
    events = [e for e in res.events if e.get("kind") == "generation"]
    assert any(e.get("proposal") == form for e in events)
    assert all("front" in e for e in events if e.get("proposal") == form)
    table = res.table
    late = table[table["step"] == table["step"].max()]
    xs = late[[f"x{i}" for i in range(D)]].to_numpy()
    assert len(np.unique(np.round(xs, 6), axis=0)) == len(xs)  # no two members alike


@pytest.mark.parametrize("form", FORMS)
def test_a_constraint_keeps_the_front_feasible(form):
    cons = parse_constraints({"f1": ">= 0.3"})
    res = _bo(1, form, constraints=cons)
    F = res.table[["val_f1", "val_f2"]].to_numpy(np.float64)
    v = cons[0].violation(F[:, 0])
    on = pareto.front_mask(F, v)
    assert on.any() and np.all(F[on, 0] >= 0.3)


def test_trust_region_is_refused_with_several_objectives():
    with pytest.raises(ValueError, match="strategy.trust_region"):
        BayesOpt.check_objectives(BOConfig(trust_region=True), ("loss", "params"), ())


def test_hypervolume_improvement_is_moocores_difference():
    rng = np.random.default_rng(0)
    base = pareto_front_of(rng.random((12, 3)))
    S = rng.random((40, 3)) * 1.2
    ref = np.full(3, 1.1)
    gain = improvements(base, S, ref)
    hv0 = pareto.hypervolume(base, ref)
    want = [pareto.hypervolume(np.vstack([base, s]), ref) - hv0 for s in S]
    np.testing.assert_allclose(gain, want, atol=1e-12)
    assert (gain > 0).any() and (gain == 0).any()
    # a candidate adds nothing exactly when the epsilon gap is not negative
    gap = epsilon_gap(base, S, ref)
    assert np.all((gain > 0) == (gap < 0))


def test_normalise_keeps_diverged_rows_out_of_the_range():
    Y = np.array([[1.0, 10.0], [3.0, 30.0], [np.inf, 0.0], [2.0, 20.0]])
    Yn = normalise(Y)
    np.testing.assert_allclose(Yn[[0, 1, 3]], [[0, 0], [1, 1], [0.5, 0.5]])
    assert not np.all(np.isfinite(Yn[2]))


def test_multi_objective_form_is_checked():
    with pytest.raises(ValueError, match="strategy.multi_objective"):
        BOConfig(multi_objective="ehvi")


def pareto_front_of(F):
    return F[pareto.front_mask(F)]
