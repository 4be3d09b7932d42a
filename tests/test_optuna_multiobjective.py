"""The Optuna strategy with several objectives, under simulate on ZDT1: a study with one
``minimize`` direction per objective told the minimised values (maximised ones negated, named
``-metric``), NSGA-II / multi-objective TPE usable, constraints handed to the sampler, a pruner
refused in one line, and resume (in memory and SQLite) re-creating trials with value lists."""

from __future__ import annotations

import numpy as np
import pytest
from searchbench import Resumed, generations_of

from jaxhpo.objectives import parse_constraints, parse_objectives
from jaxhpo.simulate import simulate
from jaxhpo.space import Float, Space

optuna = pytest.importorskip("optuna")
problems = pytest.importorskip("pymoo.problems")
from jaxhpo.strategies.optuna_search import OptunaSearch  # noqa: E402

D = 3
SPACE = Space({f"x{i}": Float(0, 1) for i in range(D)})
OBJ = parse_objectives({"f1": "min", "f2": "min"})
ZDT1 = problems.get_problem("zdt1", n_var=D)
COMPLETE = (optuna.trial.TrialState.COMPLETE,)


def zdt1(hp, ids, t, rng):
    F = ZDT1.evaluate(np.stack([hp[f"x{i}"] for i in range(D)], axis=1))
    return {"f1": F[:, 0], "f2": F[:, 1], "score": -F[:, 1]}


def _run(strategy, generations=3, size=6, objectives=OBJ, **kw):
    return simulate(
        strategy, SPACE, zdt1, steps=generations, segment_steps=1, size=size, seed=0,
        objectives=objectives, reference=[1.1, 1.1], **kw,
    )  # fmt: skip


@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_study_has_a_direction_per_objective_and_value_lists(sampler):
    s = OptunaSearch(sampler=sampler)
    res = _run(s)
    study = s.study
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] * 2
    assert study.metric_names == ["f1", "f2"]
    done = study.get_trials(states=COMPLETE)
    assert len(done) == len(study.get_trials()) == 18
    told = sorted(tuple(t.values) for t in done)
    table = sorted(zip(res.table["val_f1"], res.table["val_f2"], strict=True))
    np.testing.assert_allclose(told, table)
    assert len(study.best_trials) >= 1 and len(res.front) >= 1


def test_a_maximised_objective_is_told_negated():
    s = OptunaSearch(sampler="random")
    res = _run(s, generations=2, objectives=parse_objectives({"f1": "min", "score": "max"}))
    assert s.study.metric_names == ["f1", "-score"]
    told = sorted(t.values[1] for t in s.study.get_trials(states=COMPLETE))
    np.testing.assert_allclose(told, sorted(-res.table["val_score"]))


def test_constraints_reach_the_sampler():
    cons = parse_constraints({"f1": ">= 0.5"})
    s = OptunaSearch(sampler="nsga2")
    _run(s, generations=3, constraints=cons)
    trials = s.study.get_trials(states=COMPLETE)
    for t in trials:
        (c,) = t.system_attrs["constraints"]
        assert (c <= 0) == (t.values[0] >= 0.5)
    feasible = [t for t in s.study.best_trials if t.system_attrs["constraints"][0] <= 0]
    assert feasible


def test_a_pruner_with_several_objectives_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^strategy\.pruner: Optuna cannot prune .*#3450") as e:
        _run(OptunaSearch(sampler="tpe", pruner="median"), generations=2)
    assert "\n" not in str(e.value)


def test_resume_in_memory_proposes_what_the_uninterrupted_run_does():
    plain = _run(OptunaSearch(sampler="tpe"), generations=4)
    resumed = _run(Resumed(lambda: OptunaSearch(sampler="tpe")), generations=4)
    for a, b in zip(
        generations_of(plain, SPACE, 4), generations_of(resumed, SPACE, 4), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_resume_reopens_a_sqlite_study_with_value_lists(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    res = _run(Resumed(lambda: OptunaSearch(sampler="nsga2", storage=url)), generations=3)
    (name,) = optuna.get_all_study_names(url)
    study = optuna.load_study(study_name=name, storage=url)
    assert len(study.directions) == 2
    done = study.get_trials(states=COMPLETE)
    assert len(done) == len(study.get_trials()) == 18
    told = sorted(tuple(t.values) for t in done)
    np.testing.assert_allclose(told, sorted(zip(res.table["val_f1"], res.table["val_f2"])))
