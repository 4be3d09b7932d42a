"""Expected improvement on the GP surrogate (:mod:`jaxhpo.strategies.gp`), in its numerically
stable log form, and its maximisation by projected Adam: the ``ei`` member of the ``bo`` strategy
(``strategy.acquisition``).

Expected improvement over the incumbent ``best`` (Jones, Schonlau & Welch 1998) of a posterior
``N(mu, s^2)`` at ``x`` is ``s h((best - mu) / s)`` with ``h(z) = phi(z) + z Phi(z)``. Far from
the incumbent ``h`` underflows and its gradient vanishes, which leaves a gradient method stuck
where it starts; LogEI (Ament, Daulton, Eriksson, Balandat & Bakshy 2023, "Unexpected
Improvements to Expected Improvement for Bayesian Optimization", NeurIPS) evaluates ``log h``
through ``erfcx`` in that region, the form BoTorch's ``LogExpectedImprovement`` uses; it is
written here on the GP's own Cholesky factor so that every start runs under one ``vmap`` in one
jit with :func:`~jaxhpo.strategies.gp_draws.descend`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.scipy.special import erfcx, log_ndtr

from jaxhpo.strategies.gp import _JITTER, _kernel, _with_mask
from jaxhpo.strategies.gp_draws import descend

_C1 = 0.5 * math.log(2.0 * math.pi)
_C2 = 0.5 * math.log(math.pi / 2.0)


def log_h(z: jax.Array) -> jax.Array:
    """``log(phi(z) + z Phi(z))``, stable for every ``z`` (LogEI's three branches; every
    branch is evaluated at a clamped ``z`` so that no branch's gradient is NaN)."""
    eps = jnp.finfo(z.dtype).eps
    far = -1.0 / jnp.sqrt(eps)
    z_hi = jnp.where(z > -1.0, z, 0.0)
    direct = jnp.log(jnp.exp(-0.5 * z_hi**2 - _C1) + z_hi * jnp.exp(log_ndtr(z_hi)))
    z_mid = jnp.where((z > far) & (z <= -1.0), z, -2.0)
    inner = jnp.log(erfcx(-z_mid / math.sqrt(2.0)) * jnp.abs(z_mid)) + _C2  # < 0
    mid = -0.5 * z_mid**2 - _C1 + jnp.log(-jnp.expm1(inner))
    z_lo = jnp.where(z <= far, z, far)
    tail = -0.5 * z_lo**2 - _C1 - 2.0 * jnp.log(jnp.abs(z_lo))
    return jnp.where(z > -1.0, direct, jnp.where(z > far, mid, tail))


def _predictor(theta, X_NxD, y_N, mask_N):
    """``x_D -> (mean, variance)`` of the masked GP's posterior (noise-free plus the draws'
    jitter, as :func:`~jaxhpo.strategies.gp.posterior`), factorised once."""
    noise = jnp.exp(theta["log_noise"]) + _JITTER
    Xm = _with_mask(X_NxD, mask_N)
    kern = _kernel(theta)
    K = kern(Xm, Xm) + jnp.diag(jnp.where(mask_N > 0, noise, 1.0))
    L = jnp.linalg.cholesky(K)
    alpha = jax.scipy.linalg.cho_solve((L, True), y_N * mask_N)

    def predict(x_D):
        xm = _with_mask(x_D[None], jnp.ones((1,), x_D.dtype))
        k_N = kern(xm, Xm)[0] * mask_N
        v = jax.scipy.linalg.solve_triangular(L, k_N, lower=True)
        var = kern(xm, xm)[0, 0] - v @ v
        return k_N @ alpha, jnp.maximum(var, 0.0) + _JITTER  # as gp.posterior's variance

    return predict


def _log_ei(predict, best, x_D) -> jax.Array:
    """Log expected improvement below ``best`` at ``x_D`` under ``predict`` (:func:`_predictor`)."""
    mu, var = predict(x_D)
    s = jnp.sqrt(var)
    return log_h((best - mu) / s) + jnp.log(s)


def log_ei_at(theta, X_NxD, y_N, mask_N, x_CxD, best) -> jax.Array:
    """Log expected improvement below ``best`` at the points ``x_CxD``: ``[C]``."""
    predict = _predictor(theta, X_NxD, y_N, mask_N)
    return jax.vmap(lambda x: _log_ei(predict, best, x))(x_CxD)


@functools.partial(jax.jit, static_argnames=("starts", "steps"))
def maximise_ei(
    theta,
    X_NxD,
    y_N,
    mask_N,
    cand_CxD,
    starts: int = 4,
    steps: int = 100,
    learning_rate: float = 0.01,
    lo_D=0.0,
    hi_D=1.0,
):
    """Log expected improvement below the best observed target, maximised by projected Adam
    from the ``starts`` best candidates inside the box ``[lo_D, hi_D]``.

    Returns:
      ``(x_D, log_ei, log_ei_C)``: the best point found, its log EI and the candidates' log EI.
    """
    best = jnp.min(jnp.where(mask_N > 0, y_N, jnp.inf))
    predict = _predictor(theta, X_NxD, y_N, mask_N)

    def neg_log_ei(x_D):
        return -_log_ei(predict, best, x_D)

    f_C = jax.vmap(neg_log_ei)(cand_CxD)
    x0_SxD = cand_CxD[jnp.argsort(f_C)[:starts]]
    local = lambda x0_D: descend(neg_log_ei, x0_D, steps, learning_rate, lo_D, hi_D)  # noqa: E731
    x_SxD, f_S = jax.vmap(local)(x0_SxD)
    i = jnp.argmin(f_S)
    return x_SxD[i], -f_S[i], -f_C
