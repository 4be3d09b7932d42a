"""Pathwise posterior draws of the GP surrogate (:mod:`jaxhpo.strategies.gp`) and their local
optimisation: the Thompson-sampling half of the ``bo`` strategy's acquisition.

Thompson sampling draws posterior *functions* by pathwise conditioning (Wilson, Borovitskiy,
Terenin, Mostowsky & Deisenroth 2020, "Efficiently Sampling Functions from Gaussian Process
Posteriors", arXiv:2002.09309): a prior draw from random Fourier features of the Matern-5/2 kernel
(frequencies from a Student-t with 5 degrees of freedom, Rahimi & Recht 2007) plus the exact data
update ``k(x, X) (K + S)^{-1} (y - f(X) - eps)``. A draw is then a smooth function of ``x``:
:func:`optimise_draws` scores a candidate set under every draw and runs projected Adam (optax;
every draw and start at once under ``vmap`` in one jit, where scipy's L-BFGS-B would be a host
loop over draws x starts) from each draw's best candidates, clipped to the unit cube.
:func:`minimise_mean` runs the same projected Adam on the posterior mean.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import optax

from jaxhpo.strategies.gp import _JITTER, _kernel, _with_mask, warp

_DF = 5.0  # Matern-5/2's spectral density: a Student-t with 2 * 5/2 degrees of freedom


def make_draws(key, theta, X_NxD, y_N, mask_N, draws: int, features: int):
    """``draws`` posterior functions by pathwise conditioning (see the module docstring).

    Returns:
      A dict: ``omega [P, F, D]``, ``b [P, F]``, ``w [P, F]`` (the prior draws' random Fourier
      features and weights) and ``v [P, N]`` (each draw's data update).
    """
    N, D = X_NxD.shape
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    z = jax.random.normal(k1, (draws, features, D), X_NxD.dtype)
    g = jax.random.chisquare(k2, _DF, (draws, features, 1), X_NxD.dtype)
    omega = z * jnp.sqrt(_DF / g) * jnp.exp(-theta["log_ls"])
    b = jax.random.uniform(k3, (draws, features), X_NxD.dtype, maxval=2 * math.pi)
    w = jax.random.normal(k4, (draws, features), X_NxD.dtype)
    prior = {"omega": omega, "b": b, "w": w}
    if "log_amp_add" in theta:  # the additive component: each feature on one axis
        k6, k7, k8, k9 = jax.random.split(jax.random.fold_in(key, 1), 4)
        axis = jnp.arange(features) % D
        z = jax.random.normal(k6, (draws, features, 1), X_NxD.dtype) * jax.nn.one_hot(
            axis, D, dtype=X_NxD.dtype
        )
        g = jax.random.chisquare(k7, _DF, (draws, features, 1), X_NxD.dtype)
        prior["omega_add"] = z * jnp.sqrt(_DF / g) * jnp.exp(-theta["log_ls_add"])
        prior["b_add"] = jax.random.uniform(k8, (draws, features), X_NxD.dtype, maxval=2 * math.pi)
        prior["w_add"] = jax.random.normal(k9, (draws, features), X_NxD.dtype)
    f_PxN = jax.vmap(lambda d: _prior_value(theta, d, X_NxD))(prior)
    noise = jnp.exp(theta["log_noise"]) + _JITTER
    eps = jnp.sqrt(noise) * jax.random.normal(k5, (draws, N), X_NxD.dtype)
    Xm = _with_mask(X_NxD, mask_N)
    K = _kernel(theta)(Xm, Xm) + jnp.diag(jnp.where(mask_N > 0, noise, 1.0))
    chol = jax.scipy.linalg.cho_factor(K, lower=True)
    r_NxP = ((y_N - f_PxN - eps) * mask_N).T
    prior["v"] = jax.scipy.linalg.cho_solve(chol, r_NxP).T
    return prior


def _prior_value(theta, d, x_MxD):
    x_MxD = warp(theta, x_MxD)  # the features live on the kernel's (warped) inputs
    F = d["omega"].shape[0]
    phi = jnp.cos(x_MxD @ d["omega"].T + d["b"]) * (jnp.exp(theta["log_amp"]) * math.sqrt(2 / F))
    f = phi @ d["w"]
    if "omega_add" in d:  # F features over D axes: each axis's share carries amp_add^2 / D
        scale = jnp.exp(theta["log_amp_add"]) * math.sqrt(2 / d["omega_add"].shape[0])
        f = f + (jnp.cos(x_MxD @ d["omega_add"].T + d["b_add"]) * scale) @ d["w_add"]
    return f


def draw_value(theta, d, X_NxD, mask_N, x_MxD):
    """One draw ``d`` (a slice of :func:`make_draws`) at the points ``x_MxD``."""
    xm = _with_mask(x_MxD, jnp.ones(x_MxD.shape[:1], x_MxD.dtype))
    k_MxN = _kernel(theta)(xm, _with_mask(X_NxD, mask_N))
    return _prior_value(theta, d, x_MxD) + k_MxN @ d["v"]


def descend(fun, x0_D, steps: int, learning_rate: float, lo_D, hi_D):
    """Projected Adam (optax) on the scalar ``fun`` from ``x0_D``, inside the box
    ``[lo_D, hi_D]``, for ``steps`` steps; the best iterate kept (the last one scored too), a
    non-finite gradient read as zero. Returns ``(x_D, fun(x_D))``."""
    opt = optax.adam(learning_rate)
    f = jax.value_and_grad(fun)

    def step(carry, _):
        x, s, best, best_f = carry
        fx, g = f(x)
        better = jnp.isfinite(fx) & (fx < best_f)
        best, best_f = jnp.where(better, x, best), jnp.where(better, fx, best_f)
        u, s = opt.update(jnp.where(jnp.isfinite(g), g, 0.0), s)
        return (jnp.clip(x + u, lo_D, hi_D), s, best, best_f), None

    carry = (x0_D, opt.init(x0_D), x0_D, jnp.asarray(jnp.inf, x0_D.dtype))
    (x, _, best, best_f), _ = jax.lax.scan(step, carry, None, length=steps)
    fx = fun(x)
    last = jnp.isfinite(fx) & (fx < best_f)
    return jnp.where(last, x, best), jnp.where(last, fx, best_f)


@functools.partial(jax.jit, static_argnames=("draws", "features", "starts", "steps"))
def optimise_draws(
    key,
    theta,
    X_NxD,
    y_N,
    mask_N,
    cand_CxD,
    draws: int,
    features: int = 1024,
    starts: int = 4,
    steps: int = 50,
    learning_rate: float = 0.02,
    lo_D=0.0,
    hi_D=1.0,
):
    """Scores the candidates under ``draws`` posterior draws and optimises each draw locally.

    Every draw starts projected Adam from its ``starts`` best candidates, inside the box
    ``[lo_D, hi_D]`` (the unit cube by default; a trust region's box when given).

    Returns:
      ``(draws, f_PxC, x_PxD, f_P)``: the draws (:func:`make_draws`), their values at the
      candidates, and each draw's best point found by the local search with its value.
    """
    ds = make_draws(key, theta, X_NxD, y_N, mask_N, draws, features)
    value = functools.partial(draw_value, theta, X_NxD=X_NxD, mask_N=mask_N)
    f_PxC = jax.vmap(lambda d: value(d, x_MxD=cand_CxD))(ds)
    x0_PxSxD = cand_CxD[jnp.argsort(f_PxC, axis=1)[:, :starts]]

    def local(d, x0_D):
        fun = lambda x: value(d, x_MxD=x[None])[0]  # noqa: E731
        return descend(fun, x0_D, steps, learning_rate, lo_D, hi_D)

    x_PxSxD, f_PxS = jax.vmap(lambda d, x0: jax.vmap(lambda x: local(d, x))(x0))(ds, x0_PxSxD)
    i = jnp.argmin(f_PxS, axis=1)
    x_PxD = jnp.take_along_axis(x_PxSxD, i[:, None, None], axis=1)[:, 0]
    return ds, f_PxC, x_PxD, jnp.take_along_axis(f_PxS, i[:, None], axis=1)[:, 0]


@jax.jit
def draws_at(theta, ds, X_NxD, mask_N, x_PxMxD):
    """Draw ``p`` at its own points ``x_PxMxD[p]``: ``[P, M]``."""
    return jax.vmap(lambda d, x: draw_value(theta, d, X_NxD, mask_N, x))(ds, x_PxMxD)


@functools.partial(jax.jit, static_argnames=("steps",))
def minimise_mean(
    theta,
    X_NxD,
    y_N,
    mask_N,
    x0_SxD,
    steps: int = 100,
    learning_rate: float = 0.01,
    lo_D=0.0,
    hi_D=1.0,
):
    """The posterior mean's minimiser by projected Adam from each start ``x0_SxD`` inside the
    box ``[lo_D, hi_D]`` (every start at once under ``vmap``; the best iterate kept).

    Returns:
      ``(x_D, f)``: the best point found over every start and its posterior mean.
    """
    noise = jnp.exp(theta["log_noise"]) + _JITTER
    Xm = _with_mask(X_NxD, mask_N)
    K = _kernel(theta)(Xm, Xm) + jnp.diag(jnp.where(mask_N > 0, noise, 1.0))
    alpha = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(K, lower=True), y_N * mask_N)

    def mean(x_D):
        xm = _with_mask(x_D[None], jnp.ones((1,), x_D.dtype))
        return (_kernel(theta)(xm, Xm) @ alpha)[0]

    local = lambda x0_D: descend(mean, x0_D, steps, learning_rate, lo_D, hi_D)  # noqa: E731
    x_SxD, f_S = jax.vmap(local)(x0_SxD)
    i = jnp.argmin(f_S)
    return x_SxD[i], f_S[i]
