"""NSGA-II (``strategy.name: nsga2``) under simulate on ZDT1 (pymoo's problem and true front):
the hypervolume grows over generations and beats random search at equal evaluations, a
constraint keeps the front feasible, the state round-trips through a checkpoint, update is
pure, and bad settings are refused in one line."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from searchbench import Resumed, generations_of, leaves_are_plain, zdt1_problem

from jaxhpo import pareto
from jaxhpo.objectives import parse_constraints
from jaxhpo.simulate import simulate
from jaxhpo.strategies import STRATEGIES
from jaxhpo.strategies.base import Observation
from jaxhpo.strategies.nsga2 import NSGA2, NSGA2State
from jaxhpo.strategies.search import RandomSearch

problems = pytest.importorskip("pymoo.problems")

D = 3
SPACE, OBJ, REF, zdt1, ZDT1 = zdt1_problem(D)


def _nsga2(seed, generations=10, size=16, strategy=None, **kw):
    return simulate(
        strategy or NSGA2(),
        SPACE,
        zdt1,
        steps=generations,
        segment_steps=1,
        size=size,
        seed=seed,
        objectives=OBJ,
        reference=REF,
        **kw,
    )


def test_registered_with_a_multi_objective_form():
    assert STRATEGIES["nsga2"] is NSGA2 and NSGA2.capabilities.objectives


def test_hypervolume_grows_and_beats_random_search_at_equal_evaluations():
    true = pareto.hypervolume(ZDT1.pareto_front(), REF)
    ours, rand = [], []
    for seed in range(3):
        res = _nsga2(seed)
        hv = res.anytime["hypervolume"].to_numpy()
        assert np.all(np.diff(hv) >= 0) and hv[-1] > hv[0]
        other = simulate(
            RandomSearch(), SPACE, zdt1, steps=1, segment_steps=1, size=160, seed=seed,
            objectives=OBJ, reference=REF,
        )  # fmt: skip
        assert res.member_steps == other.member_steps == 160
        ours.append(res.hypervolume / true)
        rand.append(other.hypervolume / true)
    assert np.median(ours) > np.median(rand) + 0.05, (ours, rand)
    assert 0 < np.median(ours) <= 1


def test_front_is_non_dominated_and_from_the_table():
    res = _nsga2(0, generations=4, size=8)
    F = res.front[["val_f1", "val_f2"]].to_numpy()
    assert len(F) and np.all(np.asarray(pareto.rank(F)) == 0)
    assert set(res.front["member"]) <= set(res.table["member"])


def test_a_constraint_keeps_the_front_feasible():
    cons = parse_constraints({"f1": ">= 0.5"})
    res = _nsga2(1, generations=6, size=8, constraints=cons)
    assert len(res.front) and (res.front["val_f1"] >= 0.5).all()
    last = res.table[res.table["step"] == 6]
    assert (last["val_f1"] >= 0.5).mean() > 0.5  # the population moved to the feasible side


def test_state_round_trips_through_checkpoints():
    plain = _nsga2(3, generations=4, size=8)
    resumed = _nsga2(3, generations=4, size=8, strategy=Resumed(NSGA2))
    for a, b in zip(
        generations_of(plain, SPACE, 4), generations_of(resumed, SPACE, 4), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    state, _ = NSGA2().init(0, SPACE, 8)
    assert isinstance(state, NSGA2State) and leaves_are_plain(state)


def _obs(state, step=1):
    x = np.asarray(state.x, np.float64)
    metrics = {"f1": x[:, 0], "f2": 1 - np.sqrt(x[:, 0]) + x[:, 1]}
    P = len(x)
    return Observation(
        step=step,
        member_id=np.arange(P),
        hparams=SPACE.from_unit(x),
        metrics=metrics,
        diverged=np.zeros(P, bool),
        active=np.ones(P, bool),
        objectives=OBJ,
    )


def test_update_is_pure():
    strategy = NSGA2()
    state, _ = strategy.init(0, SPACE, 8)
    obs = _obs(state)
    before = jax.tree.map(np.copy, state)
    s1, u1 = strategy.update(state, obs)
    s2, u2 = NSGA2().update(state, obs)
    jax.tree.map(np.testing.assert_array_equal, state, before)  # the input state is unchanged
    jax.tree.map(np.testing.assert_array_equal, s1, s2)
    for k in u1.hparams:
        np.testing.assert_array_equal(u1.hparams[k], u2.hparams[k])
    assert u1.reinit.all() and np.asarray(s1.parents_f).shape == (8, 2)


def test_survivors_are_the_best_of_parents_and_offspring():
    strategy = NSGA2()
    state, _ = strategy.init(0, SPACE, 8)
    state, _ = strategy.update(state, _obs(state, 1))
    pool_f = np.concatenate([np.asarray(state.parents_f), _obs(state, 2).fitness_matrix()])
    state2, _ = strategy.update(state, _obs(state, 2))
    chosen = np.asarray(pareto.order(pool_f))[:8]
    np.testing.assert_array_equal(np.asarray(state2.parents_f), pool_f[chosen])


def test_a_diverged_member_does_not_survive_when_others_can():
    strategy = NSGA2()
    state, _ = strategy.init(0, SPACE, 4)
    obs = _obs(state)
    obs.metrics["f1"][0] = np.nan
    obs.diverged[0] = True
    state, upd = strategy.update(state, obs)
    assert np.isinf(np.asarray(state.parents_f)[-1]).all()  # survived last (pool of 4)
    assert upd.events[0]["diverged"] == 1


@pytest.mark.parametrize(
    "field,value",
    [("crossover_prob", 1.5), ("mutation_prob", -0.1), ("crossover_eta", -1.0)],
)
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"strategy\.{field}:"):
        NSGA2(**{field: value})
    with pytest.raises(ValueError, match=r"population\.size"):
        NSGA2().init(0, SPACE, 1)
