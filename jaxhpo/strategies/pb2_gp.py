"""PB2's bandit as pure ``jax.numpy`` functions: the time-varying GP, its fit, the targets,
the candidates and the batch upper-confidence-bound picks (GP-BUCB).

Everything here takes a data buffer of any static size ``B`` with a validity mask, so one
function serves the host loop (the valid rows padded to a power of two, float64 under
:func:`jaxhpo.strategies.gp.x64`) and the compiled loop (the whole ``window`` buffer, in the
program's float32). See :mod:`jaxhpo.strategies.pb2` for the method.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from tinygp import GaussianProcess, kernels, transforms
from tinygp.kernels.distance import L2Distance

from jaxhpo.space import Space
from jaxhpo.strategies import gp
from jaxhpo.strategies.bo_picks import _snap

LOG_RATE_BOUNDS = (math.log(1e-3), math.log(1e2))  # time decay per unit of scaled time
NEAR_BEST = 5  # candidates step from this many of the best observed points


class _TimeVarying(kernels.Kernel):
    """``m m' exp(-rate |t - t'|) k(x, x')`` on inputs ``[t, x..., m]`` (``m``: the mask)."""

    inner: kernels.Kernel
    rate: jax.Array

    def evaluate(self, X1, X2):
        decay = jnp.exp(-self.rate * jnp.abs(X1[0] - X2[0]))
        return X1[-1] * X2[-1] * decay * self.inner.evaluate(X1[1:-1], X2[1:-1])


def _gp(theta, Z_NxE, mask_N) -> GaussianProcess:
    matern = kernels.Matern52(scale=1.0, distance=L2Distance())
    inner = jnp.exp(2 * theta["log_amp"]) * transforms.Linear(jnp.exp(-theta["log_ls"]), matern)
    kernel = _TimeVarying(inner, jnp.exp(theta["log_rate"]))
    noise = jnp.exp(theta["log_noise"]) + 1e-6
    Zm = jnp.concatenate([Z_NxE, mask_N[:, None]], axis=1)
    return GaussianProcess(kernel, Zm, diag=jnp.where(mask_N > 0, noise, 1.0))


def _neg_log_posterior(theta, Z_NxE, y_N, mask_N):
    base = {k: theta[k] for k in ("log_amp", "log_ls", "log_noise")}
    lp = gp._log_prior(base, Z_NxE.shape[1] - 1) - 0.5 * (theta["log_rate"] / 2.0) ** 2
    return -(_gp(theta, Z_NxE, mask_N).log_probability(y_N * mask_N) + lp)


def _clip(theta):
    return {**gp._clip_theta(theta), "log_rate": jnp.clip(theta["log_rate"], *LOG_RATE_BOUNDS)}


def init_theta(D: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    """The default start: ``bo``'s (:func:`jaxhpo.strategies.gp.init_theta`), time rate 1."""
    theta = {**gp.init_theta(D), "log_rate": jnp.zeros(())}
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), theta)


def fit(starts, Z_NxE, y_N, mask_N, steps: int = 100):
    """MAP fits of the time-varying GP from ``S`` starts (leading axis); the best is kept."""
    one = functools.partial(gp._fit, objective=_neg_log_posterior, clip=_clip)
    thetas, loss_S, _ = jax.vmap(lambda t: one(t, Z_NxE, y_N, mask_N, steps, 0.05))(starts)
    return jax.tree.map(lambda x: x[jnp.argmin(loss_S)], thetas)


def posterior(theta, Z_NxE, y_N, mask_N, Zc_CxE):
    """Posterior mean and standard deviation at ``Zc_CxE`` (masked rows left out)."""
    Zc = jnp.concatenate([Zc_CxE, jnp.ones((Zc_CxE.shape[0], 1), Zc_CxE.dtype)], axis=1)
    cond = _gp(theta, Z_NxE, mask_N).condition(y_N * mask_N, Zc, diag=1e-6).gp
    return cond.mean, jnp.sqrt(jnp.maximum(cond.variance, 0.0))


def targets(steps_N, y_N, normalise: str, valid_N=None) -> jax.Array:
    """The GP's targets: the improvements ``y_N`` of the valid rows standardised, each step's
    mean first taken off with ``normalise="step"`` (``steps_N``: the step each was observed
    at); invalid rows give 0."""
    y = jnp.asarray(y_N)
    valid = jnp.ones(y.shape, bool) if valid_N is None else jnp.asarray(valid_N, bool)
    w = valid.astype(y.dtype)
    if normalise == "step":
        t = jnp.asarray(steps_N)
        same = (t[:, None] == t[None, :]) * w[None, :]
        y = y - (same @ (w * y)) / jnp.maximum(same.sum(axis=1), 1.0)
    n = jnp.maximum(w.sum(), 1.0)
    mean = jnp.sum(w * y) / n
    sd = jnp.sqrt(jnp.sum(w * (y - mean) ** 2) / n)
    return jnp.where(valid, (y - mean) / jnp.where(sd > 0, sd, 1.0), 0.0)


def candidates(key, space: Space, C: int, U_BxD, ys_B, valid_B, own_PxD, explored_P):
    """``[C, D]`` unit candidates: a third uniform, a third Gaussian steps (sd 0.1) from the
    best observed points, a third from the exploring members' own points; snapped."""
    D = U_BxD.shape[1]
    n = C // 3
    k_u, k_b, k_bn, k_o, k_on = jax.random.split(key, 5)
    dtype = U_BxD.dtype
    order = jnp.argsort(jnp.where(valid_B, -ys_B, jnp.inf), stable=True)
    n_best = jnp.clip(valid_B.sum(), 1, NEAR_BEST)
    best = U_BxD[order[jax.random.randint(k_b, (n,), 0, n_best, jnp.int32)]]
    # drawn in float32 whatever the GP's precision: host (float64) and compiled loop (float32)
    # score the same candidates
    near_best = best + 0.1 * jax.random.normal(k_bn, (n, D), jnp.float32).astype(dtype)
    # a random exploring member for each (inverse CDF, in float32 on host and device alike)
    cdf = jnp.cumsum(explored_P.astype(jnp.float32))
    u = jax.random.uniform(k_o, (n,), jnp.float32) * cdf[-1]
    own = own_PxD[jnp.minimum(jnp.searchsorted(cdf, u, side="right"), own_PxD.shape[0] - 1)]
    near_own = own + 0.1 * jax.random.normal(k_on, (n, D), jnp.float32).astype(dtype)
    uniform = jax.random.uniform(k_u, (C - 2 * n, D), jnp.float32).astype(dtype)
    return _snap(space, jnp.concatenate([uniform, near_best, near_own]), raw=True)


def propose(key, space: Space, data, theta, step, u_now_PxD, explored_P, config):
    """Unit points ``[P, D]`` for the exploring members (rows of the others: their own) by
    batch UCB, and the new GP fit.

    Args:
      key: PRNG key of this decision.
      space: the search space (structure only).
      data: ``(X [B, 1 + D], y [B], valid [B])``: (step, unit point) and improvement per step.
      theta: the previous fit (a warm start beside :func:`init_theta`'s).
      step: the current step.
      u_now_PxD: each member's unit point after PBT's exploit (the copied ones).
      explored_P: bool, the members that explore.
      config: the settings (:class:`~jaxhpo.strategies.pb2.GPSettings`: ``candidates``,
        ``fit_steps``, ``kappa``, ``normalise``).
    """
    X, y, valid = data
    dtype = X.dtype
    D = X.shape[1] - 1
    t_lo = jnp.min(jnp.where(valid, X[:, 0], jnp.inf))
    t_hi = jnp.maximum(jnp.max(jnp.where(valid, X[:, 0], -jnp.inf)), step)
    span = jnp.where(t_hi > t_lo, t_hi - t_lo, 1.0)
    Z = jnp.concatenate([(X[:, :1] - t_lo) / span, X[:, 1:]], axis=1)
    t_now = ((step - t_lo) / span).astype(dtype)
    ys = targets(X[:, 0], y, config.normalise, valid)
    k_cand, k_pick = jax.random.split(key)
    cand = candidates(k_cand, space, config.candidates, X[:, 1:], ys, valid, u_now_PxD, explored_P)
    Zc = jnp.concatenate([jnp.full((cand.shape[0], 1), t_now, dtype), cand], axis=1)
    # the data, then one pending row per member: the members that keep training at the current
    # step from the start, each exploring member's pick once it is made (GP-BUCB)
    P = u_now_PxD.shape[0]
    Zp = jnp.concatenate([Z, jnp.concatenate([jnp.full((P, 1), t_now, dtype), u_now_PxD], 1)])
    yp = jnp.concatenate([ys, jnp.zeros((P,), dtype)])
    mask = jnp.concatenate([valid, jnp.zeros((P,), bool)]).astype(dtype)
    starts = jax.tree.map(lambda a, b: jnp.stack([a.astype(dtype), b]), theta, init_theta(D, dtype))
    theta = fit(starts, Zp, yp, mask, steps=config.fit_steps)
    mu, _ = posterior(theta, Zp, yp, mask, Zc)
    N = valid.sum().astype(dtype)
    if config.kappa is None:
        kappa = jnp.sqrt(jnp.maximum(0.2 * jnp.log(0.4 * N), 0.0))
    else:
        kappa = jnp.asarray(config.kappa, dtype)
    pending = jnp.concatenate([jnp.zeros_like(valid), ~explored_P])

    def pick(i, carry):
        Zp, pending, taken, picks = carry
        m = jnp.maximum(mask, pending.astype(dtype))
        _, sd = posterior(theta, Zp, yp, m, Zc)
        acq = jnp.where(taken, -jnp.inf, mu + kappa * sd)
        any_left = jnp.isfinite(jnp.max(acq))
        j = jnp.where(
            any_left,
            jnp.argmax(acq),
            jax.random.randint(jax.random.fold_in(k_pick, i), (), 0, Zc.shape[0], jnp.int32),
        )
        go = explored_P[i]
        row = X.shape[0] + i
        Zp = Zp.at[row].set(jnp.where(go, Zc[j], Zp[row]))
        pending = pending.at[row].set(pending[row] | go)
        taken = taken.at[j].set(taken[j] | go)
        picks = picks.at[i].set(jnp.where(go, cand[j], picks[i]))
        return Zp, pending, taken, picks

    taken = jnp.zeros((Zc.shape[0],), bool)
    _, _, _, picks = jax.lax.fori_loop(0, P, pick, (Zp, pending, taken, u_now_PxD))
    return picks, theta
