"""The Pareto machinery against reference implementations: pymoo's non-dominated sorting and
crowding distance, moocore's hypervolume against pymoo's and a closed form."""

from __future__ import annotations

import numpy as np
import pytest

from jaxhpo import pareto

pymoo = pytest.importorskip("pymoo")
from pymoo.indicators.hv import HV  # noqa: E402
from pymoo.operators.survival.rank_and_crowding.metrics import (  # noqa: E402
    calc_crowding_distance,
)
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting  # noqa: E402


def _pymoo_ranks(F: np.ndarray) -> np.ndarray:
    fronts = NonDominatedSorting().do(F)
    out = np.empty(len(F), int)
    for k, front in enumerate(fronts):
        out[front] = k
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("N, M", [(40, 2), (64, 3), (17, 4)])
def test_ranks_equal_pymoo(seed, N, M):
    rng = np.random.default_rng(seed)
    F = rng.random((N, M))
    F[: N // 4] = np.round(F[: N // 4], 1)  # ties in some objectives
    np.testing.assert_array_equal(np.asarray(pareto.rank(F)), _pymoo_ranks(F))


@pytest.mark.parametrize("seed", range(5))
def test_crowding_distance_equals_pymoo_within_each_front(seed):
    rng = np.random.default_rng(seed)
    F = rng.random((50, 3))
    r = np.asarray(pareto.rank(F))
    ours = np.asarray(pareto.crowding_distance(F, r))
    for k in np.unique(r):
        idx = np.flatnonzero(r == k)
        ref = calc_crowding_distance(F[idx])
        np.testing.assert_allclose(ours[idx], ref, rtol=1e-5)


def test_a_diverged_member_ranks_last_and_a_constraint_puts_feasible_first():
    F = np.array([[1.0, 1.0], [0.5, 2.0], [np.nan, 0.0], [0.1, 0.1]])
    violation = np.array([0.0, 0.0, 0.0, 3.0])  # the best objectives, but infeasible
    r = np.asarray(pareto.rank(F, violation))
    assert r[0] == 0 and r[1] == 0  # the feasible front
    assert r[3] == 1  # infeasible, finite: after every feasible row
    assert r[2] == 2  # not finite: last
    np.testing.assert_array_equal(pareto.front_mask(F, violation), [True, True, False, False])
    assert list(np.asarray(pareto.order(F, violation))[2:]) == [3, 2]


def test_order_is_rank_then_crowding():
    F = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.45, 0.56], [2.0, 2.0]])
    o = list(np.asarray(pareto.order(F)))
    # front {0, 1, 2, 3}: the extremes (inf) first, then the less crowded of 1 and 3, then 4
    assert set(o[:2]) == {0, 2} and o[-1] == 4 and o.index(1) != o.index(3)


@pytest.mark.parametrize("seed", range(3))
def test_hypervolume_equals_pymoo_and_the_closed_form(seed):
    rng = np.random.default_rng(seed)
    F = rng.random((30, 3))
    ref = np.array([1.1, 1.1, 1.1])
    assert pareto.hypervolume(F, ref) == pytest.approx(HV(ref_point=ref)(F), rel=1e-9)
    two = np.array([[1.0, 2.0], [2.0, 1.0], [np.inf, 0.0], [5.0, 5.0]])
    assert pareto.hypervolume(two, np.array([3.0, 3.0])) == pytest.approx(3.0)
    assert pareto.hypervolume(np.zeros((0, 2)), np.array([1.0, 1.0])) == 0.0


def test_rank_runs_under_jit():
    import jax

    F = np.random.default_rng(0).random((12, 2))
    jitted = jax.jit(lambda f: pareto.order(f))
    np.testing.assert_array_equal(np.asarray(jitted(F)), np.asarray(pareto.order(F)))
