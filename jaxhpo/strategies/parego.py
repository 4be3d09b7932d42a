"""Bayesian optimisation with several objectives (:mod:`jaxhpo.strategies.bo` with
``strategy.objectives``, ``strategy.constraints``): ParEGO (Knowles 2006, "ParEGO: a hybrid
algorithm with on-line landscape approximation for expensive multiobjective optimization
problems", IEEE TEVC 10(1); batch form as qNParEGO, Daulton, Balandat & Bakshy 2020).
Member ``p`` of generation ``g`` draws its own weights, uniform on the simplex
(``numpy.random.default_rng([seed, g, p, 1])``), scalarises every observation so far by the
augmented Chebyshev function ``max_j w_j f_j + 0.05 sum_j w_j f_j`` of the objectives normalised
to ``[0, 1]`` over the finite observations (an infeasible one: worse than every feasible one, by
its violation), fits the GP to that scalarisation, and takes its own Thompson draw's optimum
(draw and candidates streamed by ``[seed, g, p]``). The population thus spreads along the front.
Not with ``trust_region``.
"""

from __future__ import annotations

import numpy as np

from jaxhpo.objectives import violation
from jaxhpo.strategies.decision import Observation
from jaxhpo.strategies.mo_thompson import normalise


def objectives_so_far(
    Y0: np.ndarray, v0: np.ndarray, obs: Observation
) -> tuple[np.ndarray, np.ndarray]:
    """Every observation's minimised objectives ``[N, M]`` and violations ``[N]`` (``Y0``,
    ``v0``: those before) with the generation's appended; empty with one objective."""
    if not (len(obs.objectives) > 1 or obs.constraints):
        return np.zeros((0, 0)), np.zeros((0,))
    F = obs.fitness_matrix()
    v = violation(obs.metrics, obs.constraints, F.shape[0])
    v = np.where(np.all(np.isfinite(F), axis=1), v, np.inf)
    Y0 = np.asarray(Y0, np.float64).reshape(-1, F.shape[1])
    return np.concatenate([Y0, F]), np.concatenate([np.asarray(v0, np.float64), v])


def chebyshev(Y: np.ndarray, V: np.ndarray, w: np.ndarray, rho: float = 0.05) -> np.ndarray:
    """ParEGO's augmented Chebyshev scalarisation of minimised objectives ``Y [N, M]`` with
    weights ``w [M]``, float64 [N]: ``max_j w_j f_j + rho sum_j w_j f_j`` of the objectives
    normalised to ``[0, 1]`` over the finite rows; an infeasible row (violation ``V > 0``) gets
    the worst feasible value plus ``1 + V / (1 + V)``; a non-finite row +inf."""
    Y = np.asarray(Y, np.float64)
    ok = np.all(np.isfinite(Y), axis=1)
    s = np.full(len(Y), np.inf)
    if not ok.any():
        return s
    Fn = normalise(Y)[ok]
    s[ok] = np.max(w * Fn, axis=1) + rho * np.sum(w * Fn, axis=1)
    bad = ok & (np.asarray(V) > 0)
    if bad.any():
        worst = np.max(s[ok & ~bad]) if np.any(ok & ~bad) else np.max(s[ok])
        vb = np.minimum(np.asarray(V, np.float64)[bad], 1e300)
        s[bad] = worst + 1 + vb / (1 + vb)
    return s


def parego_proposals(bo, space, seed: int, g: int, theta0, X, Y, V, P: int):
    """``P`` new unit points by ParEGO for the ``bo`` strategy (``multi_objective: parego``):
    member ``p`` fits the GP to its own Chebyshev scalarisation of ``(Y, V)`` (weights from
    ``[seed, g, p, 1]``) and takes its Thompson draw's optimum, no earlier member's point again;
    returns ``(u [P, D], member 0's theta, fit info)``."""
    picks, thetas = [], []
    for p in range(P):  # host loop: one GP fit and one draw per member
        w = np.random.default_rng([seed, g, p, 1]).dirichlet(np.ones(Y.shape[1]))
        s = chebyshev(Y, V, w)
        u, theta, info = bo.propose(space, seed, g, theta0, X, s, 1, None, p, picks)
        picks.append(u[0])
        thetas.append(theta)
    return np.stack(picks), thetas[0], {**info, "proposal": "parego"}
