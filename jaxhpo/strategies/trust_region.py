"""A TuRBO-style trust region for bo (``strategy.trust_region``).

Eriksson, Pearce, Gardner, Turner & Poloczek 2019, "Scalable Global Optimization via Local Bayesian
Optimization", NeurIPS, arXiv:1910.01739 (TuRBO-1). Proposals are restricted to a box around the
best observation, in unit coordinates, with side ``L * w_d`` along dimension ``d``, where ``w`` are
the fitted GP length scales divided by their geometric mean (long length scales get long sides).
After each generation the length adapts: ``3`` successes in a row (a generation whose best beats
the best so far by ``1e-3`` of its magnitude) double it (at most ``1.6``), ``ceil(max(4, D) / P)``
failures in a row halve it; below ``2**-7`` the region restarts at ``0.8`` (TuRBO restarts with
fresh points; here the GP keeps every observation, so the restart only widens the box).

State: ``[length, successes, failures]`` as a float64 array of 3 (a numpy leaf of bo's state).
"""

from __future__ import annotations

import math

import numpy as np

LENGTH_INIT, LENGTH_MIN, LENGTH_MAX = 0.8, 2.0**-7, 1.6
SUCCESS_TOL = 3


def initial() -> np.ndarray:
    """``[length, successes, failures]`` at the start."""
    return np.asarray([LENGTH_INIT, 0.0, 0.0], np.float64)


def adapt(tr: np.ndarray, y_before: np.ndarray, y_new: np.ndarray, D: int) -> np.ndarray:
    """The region after a generation whose minimised fitness is ``y_new`` (``[P]``, non-finite:
    diverged), given every earlier observation ``y_before``.

    Returns:
      The new ``[length, successes, failures]``.
    """
    length, succ, fail = (float(v) for v in tr)
    P = len(y_new)
    before = np.asarray(y_before, np.float64)
    before = before[np.isfinite(before)]
    new = np.asarray(y_new, np.float64)
    new = new[np.isfinite(new)]
    if not len(before):  # the first generation sets the incumbent: no verdict
        return np.asarray([length, succ, fail], np.float64)
    best = before.min()
    if len(new) and new.min() < best - 1e-3 * abs(best):
        succ, fail = succ + 1, 0.0
    else:
        succ, fail = 0.0, fail + 1
    if succ >= SUCCESS_TOL:
        length, succ = min(2.0 * length, LENGTH_MAX), 0.0
    if fail >= math.ceil(max(4.0, D) / P):
        length, fail = length / 2.0, 0.0
    if length < LENGTH_MIN:
        length, succ, fail = LENGTH_INIT, 0.0, 0.0
    return np.asarray([length, succ, fail], np.float64)


def box(X_NxD: np.ndarray, ys_N: np.ndarray, log_ls_D, length: float):
    """``(lo [D], hi [D])``: the region around the best observation, clipped to the unit cube."""
    centre = np.asarray(X_NxD, np.float64)[int(np.argmin(ys_N))]
    ls = np.exp(np.asarray(log_ls_D, np.float64))
    w = ls / np.exp(np.mean(np.log(ls)))
    half = 0.5 * float(length) * w
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
