"""Objectives and constraints: parsing with one-line errors, the minimised matrix, violations."""

from __future__ import annotations

import numpy as np
import pytest

from jaxhpo.objectives import (
    Constraint,
    Objective,
    fitness_matrix,
    metrics_of,
    parse_constraints,
    parse_objectives,
    violation,
)


def test_parse_objectives_and_constraints():
    objs = parse_objectives({"loss": "min", "accuracy": "max"})
    assert objs == (Objective("loss", False), Objective("accuracy", True))
    cons = parse_constraints({"params": "<= 2e6", "accuracy": "> 0.5"})
    assert cons == (Constraint("params", "<=", 2e6), Constraint("accuracy", ">", 0.5))
    assert metrics_of(objs, cons) == ["loss", "accuracy", "params"]


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"loss": "lowest"}, r"^strategy\.objectives\.loss: direction must be min or max"),
        ({"loss": 1}, r"^strategy\.objectives\.loss: direction"),
        (["loss"], r"^strategy\.objectives: expected a mapping"),
    ],
)
def test_bad_objectives_are_one_line(spec, match):
    with pytest.raises(ValueError, match=match) as e:
        parse_objectives(spec)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["2e6", "<= lots", "=< 3", "<= inf", 5])
def test_bad_constraint_is_one_line(text):
    with pytest.raises(ValueError, match=r"^strategy\.constraints\.params: expected an operator"):
        parse_constraints({"params": text})


def test_fitness_matrix_minimises_and_marks_diverged():
    metrics = {"loss": np.array([1.0, 2.0, np.nan]), "accuracy": np.array([0.5, 0.9, 0.1])}
    F = fitness_matrix(metrics, parse_objectives({"loss": "min", "accuracy": "max"}), [0, 1, 0])
    np.testing.assert_array_equal(F[0], [1.0, -0.5])
    assert np.all(np.isinf(F[1])) and np.all(np.isinf(F[2]))  # diverged; NaN loss


def test_violation_sums_how_far_beyond_each_bound():
    cons = parse_constraints({"params": "<= 10", "accuracy": ">= 0.5"})
    metrics = {"params": np.array([5.0, 12.0, np.nan]), "accuracy": np.array([0.6, 0.4, 0.9])}
    np.testing.assert_allclose(violation(metrics, cons, 3)[:2], [0.0, 2.1])
    assert np.isinf(violation(metrics, cons, 3)[2])
    strict = parse_constraints({"params": "< 10"})
    assert violation({"params": np.array([10.0])}, strict, 1)[0] > 0  # on the bound: violated
