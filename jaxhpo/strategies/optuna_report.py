"""Intermediate values of the Optuna strategy's trials (optuna-dashboard's panel).

Every evaluation, each member's objective (the minimised fitness) is reported to its running trial
at the trial's own step (steps since its generation started). The strategy state keeps the
generation's reports (``reports [K, P]``, ``report_steps [K]``, reset every generation), so a
trial that a resumed run adds as finished (its running trial was cut from the database, or the
in-memory study was rebuilt) carries the same intermediate values as the uninterrupted run's.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from jaxhpo.strategies.base import Observation


def report(
    state: Any,
    running: dict[int, Any],
    obs: Observation,
    generation_steps: int | None,
    skip: np.ndarray | None = None,
    send: bool = True,
) -> Any:
    """Reports ``obs``'s fitness to the trials in ``running`` (number -> Trial); returns the
    state with this evaluation added to its reports. Non-finite values are kept in the state
    but not reported (a diverged member's trial is failed); slots in ``skip`` (pruned members)
    report nothing and are kept as NaN. ``send=False``: kept in the state only (a study with
    several objectives: Optuna's ``trial.report`` raises there)."""
    raw = obs.fitness()
    if skip is not None:
        raw = np.where(skip, np.nan, raw)
    P = len(raw)
    every = generation_steps
    start = state.start
    if start is None:  # an older checkpoint: the generation's start from the schedule
        start = int(obs.step) - (int(obs.step) % every or every) if every else 0
    step = int(obs.step) - int(start)
    numbers = [int(n) for n in np.asarray(state.trials)]
    for n, value in zip(numbers, raw, strict=True):
        trial = running.get(n)
        if send and trial is not None and np.isfinite(value):
            with warnings.catch_warnings():  # a step reported before a kill: the same value
                warnings.filterwarnings("ignore", "The reported value is ignored")
                trial.report(float(value), step)
    reports = np.asarray(_get(state, "reports", np.zeros((0, P))), np.float64).reshape(-1, P)
    steps = _flat(state, "report_steps", np.int64)
    return state.replace(
        reports=np.concatenate([reports, raw[None, :]]),
        report_steps=np.append(steps, np.int64(step)),
    )


def reported(state: Any, i: int) -> dict[int, float]:
    """Member slot ``i``'s reported values of this generation, step -> value (finite ones)."""
    reports = np.asarray(_get(state, "reports", np.zeros((0, 0))), np.float64)
    steps = _flat(state, "report_steps", np.int64)
    if not len(steps):
        return {}
    column = reports.reshape(len(steps), -1)[:, i]
    return {int(t): float(v) for t, v in zip(steps, column, strict=True) if np.isfinite(v)}


def archive(state: Any, first_row: int) -> dict[str, np.ndarray]:
    """The run's reports so far with this generation's appended, as flat arrays ``report_row``
    (the told trial's row in ``state.params``; slot ``i`` is row ``first_row + i``),
    ``report_at`` (its step) and ``report_value``: what a study rebuilt on resume needs to give
    its finished trials their intermediate values (a pruner compares against them)."""
    steps = _flat(state, "report_steps", np.int64)
    reports = np.asarray(_get(state, "reports", np.zeros((0, 0))), np.float64)
    k, i = np.nonzero(np.isfinite(reports.reshape(len(steps), -1) if len(steps) else reports))
    return {
        "report_row": np.concatenate([_flat(state, "report_row", np.int64), first_row + i]),
        "report_at": np.concatenate([_flat(state, "report_at", np.int64), steps[k]]),
        "report_value": np.concatenate(
            [
                _flat(state, "report_value", np.float64),
                reports.reshape(len(steps), -1)[k, i] if len(steps) else np.zeros(0),
            ]
        ),
    }


def archived(state: Any, row: int) -> dict[int, float]:
    """Told trial ``row``'s intermediate values from :func:`archive`, step -> value."""
    rows = _flat(state, "report_row", np.int64)
    at, values = _flat(state, "report_at", np.int64), _flat(state, "report_value", np.float64)
    return {int(t): float(v) for t, v in zip(at[rows == row], values[rows == row], strict=True)}


def _get(state: Any, key: str, default: np.ndarray) -> np.ndarray:
    """``state.key``, or ``default`` where an older checkpoint lacks it (``None``)."""
    value = getattr(state, key, None)
    return default if value is None else value


def _flat(state: Any, key: str, dtype) -> np.ndarray:
    return np.asarray(_get(state, key, np.zeros((0,))), dtype).reshape(-1)
