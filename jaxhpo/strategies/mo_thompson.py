"""Bayesian optimisation with several objectives by hypervolume improvement under Thompson draws
(:mod:`jaxhpo.strategies.bo` with ``strategy.objectives`` and ``strategy.multi_objective: hvi``, the
default). The batch form of TSEMO (Bradford, Schweidtmann & Lapkin 2018, "Efficient
multiobjective optimization employing Gaussian processes, spectral sampling and a genetic
algorithm", J. Global Optim. 71), with the candidate set of :mod:`jaxhpo.strategies.bo` in place
of the genetic algorithm:

1. The objectives are normalised to ``[0, 1]`` over the finite observations; one GP is fitted
   per objective (and, when a constraint was ever violated, one more to ``log(1 + violation)``).
2. Member ``p`` takes draw ``p`` of every GP (pathwise Thompson draws,
   :func:`~jaxhpo.strategies.gp_draws.make_draws`) at one set of candidates: half uniform in
   the unit cube, half Gaussian steps (sd 0.1) from the inputs of the current feasible front.
3. It proposes the candidate whose drawn objectives add the most hypervolume (moocore, reference
   1.1 per normalised objective) to the front so far, among the candidates its draw says are
   feasible; when none adds any, the one nearest to adding (the additive epsilon indicator).
   The front so far grows by each pick's posterior mean (a "kriging believer"), so the batch
   spreads along the front instead of piling where one draw is optimistic.

Draws use ``fold_in(fold_in(key(seed), g), 1 + j)`` for GP ``j`` and the candidates
``numpy.random.default_rng([seed, g, 2])``: a resumed run proposes what the uninterrupted one
would have. Against ParEGO (``multi_objective: parego``, :mod:`jaxhpo.strategies.parego`) this fits
``M`` (+1) GPs per generation instead of one per member, and measured on
``scripts/bench_multiobjective.py`` it is ahead on the three-objective problem (the README's
table).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo import pareto
from jaxhpo.strategies.decision import shape_fitness
from jaxhpo.strategies.gp import posterior, x64
from jaxhpo.strategies.gp_draws import draw_value, make_draws

REFERENCE = 1.1  # the hypervolume's reference in every normalised objective


@functools.partial(jax.jit, static_argnames=("draws",))
def draw_values(key, theta, X_NxD, y_N, mask_N, cand_CxD, draws: int):
    """``draws`` posterior draws of the GP at the candidates, ``[P, C]``, and the posterior mean
    there, ``[C]`` (standardised units)."""
    ds = make_draws(key, theta, X_NxD, y_N, mask_N, draws, 1024)
    f_PxC = jax.vmap(lambda d: draw_value(theta, d, X_NxD, mask_N, cand_CxD))(ds)
    return f_PxC, posterior(theta, X_NxD, y_N, mask_N, cand_CxD)[0]


def normalise(Y: np.ndarray) -> np.ndarray:
    """Objectives scaled to ``[0, 1]`` over the finite rows (a non-finite row stays
    non-finite; a constant objective becomes 0)."""
    Y = np.asarray(Y, np.float64)
    ok = np.all(np.isfinite(Y), axis=1)
    if not ok.any():
        return np.full_like(Y, np.inf)
    lo, hi = Y[ok].min(axis=0), Y[ok].max(axis=0)
    return (Y - lo) / np.where(hi > lo, hi - lo, 1.0)


def improvements(base_KxM: np.ndarray, S_CxM: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Each candidate row's hypervolume improvement over the set ``base`` (``[C]``, 0 for one
    that ``base`` weakly dominates or that is not better than ``ref`` in every objective)."""
    gain = np.zeros(len(S_CxM))
    inside = np.all(S_CxM < ref, axis=1) & np.all(np.isfinite(S_CxM), axis=1)
    if len(base_KxM):
        dominated = np.any(np.all(base_KxM[None] <= S_CxM[:, None], axis=2), axis=1)
        inside &= ~dominated
    if not inside.any():
        return gain
    hv0 = pareto.hypervolume(base_KxM, ref) if len(base_KxM) else 0.0
    for c in np.flatnonzero(inside):  # host loop over the non-dominated candidates only
        gain[c] = pareto.hypervolume(np.vstack([base_KxM, S_CxM[c]]), ref) - hv0
    return gain


def epsilon_gap(base_KxM: np.ndarray, S_CxM: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """How far each candidate is from adding hypervolume: the smallest shift that makes it
    non-dominated by ``base`` and better than ``ref`` (additive epsilon indicator), ``[C]``."""
    to_ref = np.max(S_CxM - ref, axis=1)
    if not len(base_KxM):
        return to_ref
    # not weakly dominated by b once shifted by eps: some objective below b's, so
    # eps > min_j (s_j - b_j) for every b
    to_front = np.max(np.min(S_CxM[:, None] - base_KxM[None], axis=2), axis=1)
    return np.maximum(to_ref, to_front)


def _targets(Y: np.ndarray, V: np.ndarray) -> list[np.ndarray]:
    """The GPs' targets: every normalised objective, and ``log(1 + violation)`` when a
    constraint was ever violated."""
    Yn = normalise(Y)
    out = [Yn[:, j] for j in range(Yn.shape[1])]
    if np.any(np.asarray(V) > 0):
        out.append(np.log1p(np.minimum(np.asarray(V, np.float64), 1e300)))
    return out


def hvi_proposals(bo, space, seed: int, g: int, theta0, X, Y, V, P: int):
    """``P`` new unit points (module docstring); returns ``(u [P, D], objective 0's theta,
    fit info)``. ``bo`` is the :class:`~jaxhpo.strategies.bo.BayesOpt` (its GP fit, its
    ``candidates`` setting and its snapping of ints and choices to their bins)."""
    M = Y.shape[1]
    Yn = normalise(Y)
    feasible = np.all(np.isfinite(Yn), axis=1) & (np.asarray(V) <= 0)
    on_front = np.zeros(len(Yn), bool)
    if feasible.any():
        on_front[np.flatnonzero(feasible)] = pareto.front_mask(Yn[feasible])
    rng = np.random.default_rng([seed, g, 2])
    C, D = bo.config.candidates, X.shape[1]
    anchors = X[on_front] if on_front.any() else X
    local = anchors[rng.integers(0, len(anchors), size=C // 2)]
    local = np.clip(local + 0.1 * rng.standard_normal(local.shape), 0.0, 1.0)
    cand = bo.snap(space, np.concatenate([local, rng.random((C - C // 2, D))]))
    draws, means, thetas, gains = [], [], [], []
    key = jax.random.fold_in(jax.random.key(seed), g)
    for j, t in enumerate(_targets(Y, V)):  # one GP per objective (and the violation)
        theta, data, _, info = bo._fit(theta0, X, t)
        shaped = shape_fitness(t).astype(np.float64)
        m, sd = float(np.mean(shaped)), float(np.std(shaped)) or 1.0
        with x64():
            f, mu = draw_values(jax.random.fold_in(key, 1 + j), theta, *data, jnp.asarray(cand), P)
        draws.append(np.asarray(f, np.float64) * sd + m)  # back to normalised units
        means.append(np.asarray(mu, np.float64) * sd + m)
        thetas.append(jax.tree.map(np.asarray, theta))
        gains.append(info["fit_gain_nats"])
    ref = np.full(M, REFERENCE)
    base = Yn[on_front]
    mean_CxM = np.stack(means[:M], axis=1)
    taken = np.zeros(C, bool)
    picks, believed = [], 0
    for p in range(P):  # host loop over the batch's members (proposals, not training)
        S = np.stack([d[p] for d in draws[:M]], axis=1)
        ok = ~taken
        if len(draws) > M:  # the violation's draw: feasible where it is (near) zero
            ok &= draws[M][p] <= 1e-3
            if not ok.any():  # no candidate feasible in this draw: the least violating
                ok = ~taken & (draws[M][p] <= np.min(np.where(taken, np.inf, draws[M][p])))
        gain = np.where(ok, improvements(base, S, ref), -np.inf)
        if np.max(gain) > 0:
            c = int(np.argmax(gain))
        else:
            believed += 1
            c = int(np.argmin(np.where(ok, epsilon_gap(base, S, ref), np.inf)))
        picks.append(cand[c])
        taken |= np.all(cand == cand[c], axis=1)  # snapped duplicates too
        if taken.all():
            taken[:] = False
        base = np.vstack([base, mean_CxM[c]])
    info = {
        "proposal": "hvi",
        "fit_gain_nats": float(np.min(gains)),
        "no_improvement_draws": believed,
    }
    return np.stack(picks), thetas[0], info
