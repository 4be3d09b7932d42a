"""Pareto machinery, written once: non-dominated ranks, crowding distance, feasibility-first
ranking under constraints (jitted, for the compiled loop and the strategies), and hypervolume
(moocore, on the host, for reports and benchmarks).

Every objective is **minimised** here: a column to maximise is negated before it arrives
(:mod:`jaxhpo.objectives`). A row that is not finite in every objective (a diverged member) is
infeasible with an infinite violation, so it ranks after every finite row.

References: Deb, Pratap, Agarwal & Meyarivan 2002, "A fast and elitist multiobjective genetic
algorithm: NSGA-II", IEEE TEVC 6(2) (non-dominated sorting, crowding distance, constrained
domination). The ranks and distances equal pymoo's ``NonDominatedSorting`` and
``calc_crowding_distance`` (tests/test_pareto.py).

Why not pymoo's sorting: it runs in NumPy on the host; the strategies need ranks inside jitted
code (PBT's compiled decision). Populations are small (hundreds), so the O(N^2 M) dominance
matrix is cheap on any device.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def dominates(F_NxM: jax.Array) -> jax.Array:
    """``D[i, j]``: row ``i`` Pareto-dominates row ``j`` (no worse in every objective, better in
    one), bool [N, N]."""
    a, b = F_NxM[:, None, :], F_NxM[None, :, :]
    return jnp.all(a <= b, axis=-1) & jnp.any(a < b, axis=-1)


def constrained_dominates(F_NxM: jax.Array, violation_N: jax.Array) -> jax.Array:
    """Deb's constrained domination: a feasible row (violation 0) beats an infeasible one, of two
    infeasible rows the smaller violation wins, two feasible rows compare by :func:`dominates`."""
    v = violation_N
    feas = v <= 0
    both_feasible = feas[:, None] & feas[None, :]
    first_only = feas[:, None] & ~feas[None, :]
    both_infeasible = ~feas[:, None] & ~feas[None, :]
    return (
        (both_feasible & dominates(F_NxM))
        | first_only
        | (both_infeasible & (v[:, None] < v[None, :]))
    )


def _clean(F_NxM: jax.Array, violation_N: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Non-finite rows become infeasible with violation +inf (and +inf objectives)."""
    F = jnp.asarray(F_NxM, jnp.float32)
    finite = jnp.all(jnp.isfinite(F), axis=-1)
    v = jnp.zeros(F.shape[0], F.dtype) if violation_N is None else jnp.asarray(violation_N, F.dtype)
    v = jnp.where(finite, jnp.maximum(v, 0), jnp.inf)
    F = jnp.where(finite[:, None], F, jnp.inf)
    return F, v


@jax.jit
def _ranks(D_NxN: jax.Array) -> jax.Array:
    N = D_NxN.shape[0]

    def peel(k, carry):
        rank, left = carry
        dominated = jnp.any(D_NxN & left[:, None], axis=0)
        front = left & ~dominated
        return jnp.where(front, k, rank), left & ~front

    rank, _ = jax.lax.fori_loop(0, N, peel, (jnp.full(N, N, jnp.int32), jnp.ones(N, bool)))
    return rank


def rank(F_NxM: jax.Array, violation_N: jax.Array | None = None) -> jax.Array:
    """Non-dominated rank of every row (0: the front), int32 [N]; with ``violation_N`` (>= 0,
    0 = feasible) feasible rows come first (constrained domination)."""
    F, v = _clean(F_NxM, violation_N)
    return _ranks(constrained_dominates(F, v))


@jax.jit
def crowding_distance(F_NxM: jax.Array, rank_N: jax.Array) -> jax.Array:
    """NSGA-II crowding distance of each row within its front, float32 [N]: for every
    objective, the gap between its two neighbours in the front over the front's range, averaged
    over the objectives (as pymoo);
    a front's extreme rows get +inf, an objective constant over the front adds 0 (as pymoo)."""
    F = jnp.asarray(F_NxM, jnp.float32)
    N, M = F.shape
    finite_F = jnp.where(jnp.isfinite(F), F, 0.0)

    def one(f_N):
        order = jnp.lexsort((f_N, rank_N))
        fs, rs = f_N[order], rank_N[order]
        prev_same = jnp.concatenate([jnp.array([False]), rs[1:] == rs[:-1]])
        next_same = jnp.concatenate([rs[:-1] == rs[1:], jnp.array([False])])
        lo = jax.ops.segment_min(f_N, rank_N, num_segments=N + 1)[rs]
        hi = jax.ops.segment_max(f_N, rank_N, num_segments=N + 1)[rs]
        prev = jnp.concatenate([fs[:1], fs[:-1]])
        nxt = jnp.concatenate([fs[1:], fs[-1:]])
        span = hi - lo
        gap = jnp.where(span > 0, (nxt - prev) / jnp.where(span > 0, span, 1.0), 0.0)
        d = jnp.where(span > 0, jnp.where(prev_same & next_same, gap, jnp.inf), 0.0)
        return jnp.zeros(N, F.dtype).at[order].set(d)

    return jnp.mean(jax.vmap(one, in_axes=1, out_axes=1)(finite_F), axis=1)


def order(F_NxM: jax.Array, violation_N: jax.Array | None = None) -> jax.Array:
    """Rows from best to worst, int32 [N]: by rank, then by crowding distance (larger first),
    then by index (stable) — NSGA-II's survival order."""
    r = rank(F_NxM, violation_N)
    F, _ = _clean(F_NxM, violation_N)
    d = crowding_distance(F, r)
    return jnp.lexsort((jnp.arange(r.shape[0]), -d, r)).astype(jnp.int32)


def front_mask(F_NxM: jax.Array, violation_N: jax.Array | None = None) -> np.ndarray:
    """The feasible non-dominated rows, bool [N] (host)."""
    F, v = _clean(F_NxM, violation_N)
    r = np.asarray(rank(F_NxM, violation_N))
    return (r == 0) & np.asarray(v <= 0)


@functools.cache
def _moocore():
    import moocore  # a compiled extension: loaded on the first hypervolume, not with jaxhpo

    return moocore


def hypervolume(F_NxM: np.ndarray, reference: np.ndarray) -> float:
    """The hypervolume (minimisation) dominated by the finite rows of ``F_NxM`` and bounded by
    ``reference`` [M] (moocore; rows not strictly better than the reference add nothing)."""
    F = np.asarray(F_NxM, np.float64)
    ref = np.asarray(reference, np.float64)
    F = F[np.all(np.isfinite(F), axis=1) & np.all(ref > F, axis=1)]
    if F.size == 0:
        return 0.0
    return float(_moocore().hypervolume(F, ref=ref))
