"""The Gaussian-process surrogate of the ``bo`` strategy: a masked ARD Matern-5/2 GP (tinygp),
its MAP fit from several starts, and pathwise posterior draws optimised locally.

**Fit.** The kernel's amplitude, length scales and noise are fitted by maximising the marginal
likelihood plus log-normal priors for standardised outputs and unit-cube inputs (length scales:
``LogNormal(sqrt(2) + log(D) / 2, sqrt(3))``, Hvarfner, Hellsten & Nardi 2024, "Vanilla Bayesian
Optimization Performs Great in High Dimensions", arXiv:2402.02229; noise variance
``LogNormal(log 1e-2, 2)``; amplitude ``LogNormal(0, 1)`` on its standard deviation) with
``optax.adam`` in a ``lax.scan``, clipped to bounds, keeping the best iterate. :func:`fit_restarts`
runs the fit from several starts at once (``vmap``: the previous generation's fit and the default
start :func:`init_theta`) and keeps the highest marginal posterior. A warm start alone can stall:
a fit on one or two points lands on the prior's mode (very long length scales), later fits
started there explain the data as noise, and proposals become random; the default start escapes.

**Draws.** Thompson sampling draws posterior *functions* by pathwise conditioning (Wilson,
Borovitskiy, Terenin, Mostowsky & Deisenroth 2020, "Efficiently Sampling Functions from Gaussian
Process Posteriors", arXiv:2002.09309): a prior draw from random Fourier features of the Matern-5/2
kernel (frequencies from a Student-t with 5 degrees of freedom, Rahimi & Recht 2007) plus the
exact data update ``k(x, X) (K + S)^{-1} (y - f(X) - eps)``. A draw is then a smooth function of
``x``: :func:`optimise_draws` scores a candidate set under every draw and runs projected Adam
(optax; every draw and start at once under ``vmap`` in one jit, where scipy's L-BFGS-B would be
a host loop over draws x starts) from each draw's best candidates, clipped to the unit cube.

Observations are padded to a power of two with an exact mask (padded rows are uncorrelated with
everything and carry unit noise and zero targets), so a study compiles once per power of two.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tinygp import GaussianProcess, kernels, transforms
from tinygp.kernels.distance import L2Distance

#: Bounds of the fitted GP hyperparameters (standardised outputs, unit-coordinate inputs).
LOG_LS_BOUNDS = (math.log(1e-2), math.log(1e2))
LOG_AMP_BOUNDS = (math.log(1e-2), math.log(1e2))  # log standard deviation
LOG_NOISE_BOUNDS = (math.log(1e-6), math.log(1.0))  # log noise variance
_JITTER = 1e-6
_MIN_BUCKET = 32


class _Masked(kernels.Kernel):
    """``m(x) m(x') k(x, x')`` where the last input column is the mask ``m`` in {0, 1}: padded
    observations are uncorrelated with everything (exact padding)."""

    inner: kernels.Kernel

    def evaluate(self, X1, X2):
        return X1[-1] * X2[-1] * self.inner.evaluate(X1[:-1], X2[:-1])


class _Additive(kernels.Kernel):
    """``amp2 * mean_d k(|x_d - x'_d| / ls_d)``: first-order additive Matern-5/2 with its own
    length scales (Duvenaud, Nickisch & Rasmussen 2011, "Additive Gaussian Processes"; Kandasamy,
    Schneider & Póczos 2015, "High Dimensional Bayesian Optimisation and Bandits via Additive
    Models"); its variance is ``amp2``."""

    amp2: jax.Array
    inv_ls: jax.Array

    def evaluate(self, X1, X2):
        r = math.sqrt(5.0) * jnp.abs(X1 - X2) * self.inv_ls
        return self.amp2 * jnp.mean((1.0 + r + r**2 / 3.0) * jnp.exp(-r))


def _kernel(theta: Mapping[str, jax.Array]) -> kernels.Kernel:
    """The ARD Matern-5/2, plus the additive component where ``theta`` has ``log_amp_add``
    (``strategy.kernel: additive``)."""
    amp2 = jnp.exp(2.0 * theta["log_amp"])
    # tinygp's stationary kernels default to the L1 distance, which is not positive definite
    # for Matern-5/2 in more than one dimension: use the Euclidean one.
    matern = kernels.Matern52(scale=1.0, distance=L2Distance())
    k = amp2 * transforms.Linear(jnp.exp(-theta["log_ls"]), matern)
    if "log_amp_add" in theta:
        k = k + _Additive(jnp.exp(2.0 * theta["log_amp_add"]), jnp.exp(-theta["log_ls_add"]))
    return _Masked(k)


def _with_mask(X_NxD, mask_N):
    return jnp.concatenate([X_NxD, mask_N[:, None]], axis=1)


def _gp(theta, X_NxD, mask_N) -> GaussianProcess:
    noise = jnp.exp(theta["log_noise"]) + _JITTER
    return GaussianProcess(
        _kernel(theta), _with_mask(X_NxD, mask_N), diag=jnp.where(mask_N > 0, noise, 1.0)
    )


#: the length scales' priors (``strategy.ls_prior``): Hvarfner et al.'s dimension-scaled
#: log-normal, or SAAS-like shrinkage (Eriksson & Jankowiak 2021, "High-Dimensional Bayesian
#: Optimization with Sparse Axis-Aligned Subspaces", UAI): a half-Cauchy of scale
#: :data:`SAAS_SCALE` on each inverse squared length scale, most dimensions kept nearly flat
LS_PRIORS = ("hvarfner", "saas")
SAAS_SCALE = 0.1  # SAAS's global shrinkage scale, fixed (a MAP fit would collapse it)


def _ls_log_prior(log_ls, D: int, ls_prior: str) -> jax.Array:
    if ls_prior == "saas":  # log density of log_ls: half-Cauchy on rho = ls^-2, Jacobian 2 rho
        rho = jnp.exp(-2.0 * log_ls)
        return jnp.sum(-jnp.log1p((rho / SAAS_SCALE) ** 2) - 2.0 * log_ls)
    mu_ls, sd_ls = math.sqrt(2.0) + 0.5 * math.log(D), math.sqrt(3.0)
    return -0.5 * jnp.sum(((log_ls - mu_ls) / sd_ls) ** 2)


def _log_prior(theta, D: int, ls_prior: str = "hvarfner") -> jax.Array:
    lp = _ls_log_prior(theta["log_ls"], D, ls_prior)
    lp += -0.5 * ((theta["log_noise"] - math.log(1e-2)) / 2.0) ** 2
    lp += -0.5 * theta["log_amp"] ** 2
    if "log_amp_add" in theta:  # the additive component's 1-D terms: one dimension's prior
        lp += -0.5 * theta["log_amp_add"] ** 2 + _ls_log_prior(theta["log_ls_add"], 1, ls_prior)
    return lp


def init_theta(D: int, additive: bool = False) -> dict[str, jax.Array]:
    """The default start: unit amplitude and length scales (the unit cube's width; the prior's
    median, 4-7, would start very smooth), noise variance 1e-2; with ``additive`` the additive
    component's amplitude and length scales too (unit)."""
    theta = {
        "log_amp": jnp.zeros(()),
        "log_ls": jnp.zeros((D,)),
        "log_noise": jnp.asarray(math.log(1e-2)),
    }
    return (
        {**theta, "log_amp_add": jnp.zeros(()), "log_ls_add": jnp.zeros((D,))}
        if additive
        else theta
    )


def neg_log_posterior(theta, X_NxD, y_N, mask_N, ls_prior: str = "hvarfner") -> jax.Array:
    """``-(log p(y | X, theta) + log p(theta))`` of the masked GP (up to a constant), the
    length scales under ``ls_prior`` (:data:`LS_PRIORS`)."""
    gp = _gp(theta, X_NxD, mask_N)
    return -(gp.log_probability(y_N * mask_N) + _log_prior(theta, X_NxD.shape[1], ls_prior))


def noise_only_nll(y_N, mask_N) -> jax.Array:
    """``-log p(y)`` of the model "all noise" (``y ~ N(0, I)`` for standardised targets): a fit
    that explains the data no better than this has found no signal. Padded rows count as the
    masked GP counts them (unit noise, zero target)."""
    return 0.5 * jnp.sum((y_N * mask_N) ** 2) + 0.5 * y_N.shape[0] * math.log(2 * math.pi)


def _clip_theta(theta):
    out = {
        "log_amp": jnp.clip(theta["log_amp"], *LOG_AMP_BOUNDS),
        "log_ls": jnp.clip(theta["log_ls"], *LOG_LS_BOUNDS),
        "log_noise": jnp.clip(theta["log_noise"], *LOG_NOISE_BOUNDS),
    }
    if "log_amp_add" in theta:
        out["log_amp_add"] = jnp.clip(theta["log_amp_add"], *LOG_AMP_BOUNDS)
        out["log_ls_add"] = jnp.clip(theta["log_ls_add"], *LOG_LS_BOUNDS)
    return out


def _fit(theta0, X_NxD, y_N, mask_N, steps: int, learning_rate: float, objective=None, clip=None):
    """MAP fit from one start; ``objective`` and ``clip`` (default: this GP's
    :func:`neg_log_posterior` and bounds) let another kernel reuse the fit (PB2's)."""
    opt = optax.adam(learning_rate)
    theta = jax.tree.map(lambda x: jnp.asarray(x, X_NxD.dtype), theta0)
    loss_and_grad = jax.value_and_grad(objective or neg_log_posterior)
    clip = clip or _clip_theta

    def step(carry, _):
        theta, opt_state, best, best_loss = carry
        loss, g = loss_and_grad(theta, X_NxD, y_N, mask_N)
        ok = jnp.isfinite(loss) & jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(g)])
        )
        better = ok & (loss < best_loss)
        best = jax.tree.map(lambda a, b: jnp.where(better, a, b), theta, best)
        best_loss = jnp.where(better, loss, best_loss)
        g = jax.tree.map(lambda x: jnp.where(ok, x, 0.0), g)
        updates, opt_state = opt.update(g, opt_state, theta)
        theta = clip(optax.apply_updates(theta, updates))
        return (theta, opt_state, best, best_loss), loss

    # The best iterate is kept: a step into an ill-conditioned region (NaN in the Cholesky)
    # neither moves the fit nor is returned.
    carry = (theta, opt.init(theta), theta, jnp.asarray(jnp.inf, X_NxD.dtype))
    (_, _, best, best_loss), losses = jax.lax.scan(step, carry, None, length=steps)
    return best, best_loss, losses


@functools.partial(jax.jit, static_argnames=("steps",))
def fit_gp(theta0, X_NxD, y_N, mask_N, steps: int = 100, learning_rate: float = 0.05):
    """Fits the GP hyperparameters by maximum a posteriori from one start (optax Adam,
    ``lax.scan``).

    Args:
      theta0: the start (:func:`init_theta`, or the previous generation's fit).
      X_NxD: inputs in unit coordinates (padded rows arbitrary).
      y_N: standardised targets (padded rows arbitrary).
      mask_N: 1.0 for real rows, 0.0 for padding.
      steps: Adam steps.
      learning_rate: Adam's learning rate.

    Returns:
      ``(theta, loss_T)``: the fitted hyperparameters (clipped to bounds) and the objective at
      every step.
    """
    best, _, losses = _fit(theta0, X_NxD, y_N, mask_N, steps, learning_rate)
    return best, losses


@functools.partial(jax.jit, static_argnames=("steps", "ls_prior"))
def fit_restarts(
    starts,
    X_NxD,
    y_N,
    mask_N,
    steps: int = 100,
    learning_rate: float = 0.05,
    ls_prior: str = "hvarfner",
):
    """MAP fits from ``S`` starts at once (``vmap``); keeps the highest marginal posterior.

    Args:
      starts: a theta pytree whose leaves have a leading start axis ``S``.
      X_NxD, y_N, mask_N: as :func:`fit_gp`.
      steps, learning_rate: Adam's, per start.
      ls_prior: the length scales' prior (:data:`LS_PRIORS`).

    Returns:
      ``(theta, index, loss_S)``: the best fit, the start it came from, each start's best
      objective (``-log`` posterior; ``inf`` where every step failed).
    """
    objective = functools.partial(neg_log_posterior, ls_prior=ls_prior)
    fit = jax.vmap(lambda t: _fit(t, X_NxD, y_N, mask_N, steps, learning_rate, objective)[:2])
    thetas, loss_S = fit(starts)
    index = jnp.argmin(loss_S)
    return jax.tree.map(lambda x: x[index], thetas), index, loss_S


@jax.jit
def posterior(theta, X_NxD, y_N, mask_N, Xc_CxD):
    """Posterior mean and variance (noise-free, plus the draws' jitter) of the masked GP at
    ``Xc_CxD``."""
    gp = _gp(theta, X_NxD, mask_N)
    Xc = jnp.concatenate([Xc_CxD, jnp.ones((Xc_CxD.shape[0], 1))], axis=1)
    cond = gp.condition(y_N * mask_N, Xc, diag=_JITTER).gp
    return cond.mean, cond.variance


@contextlib.contextmanager
def x64():
    """The GP computes in float64 (as GP libraries do): its Cholesky factors covariances whose
    condition numbers exceed float32's range once length scales grow on smooth objectives."""
    with jax.enable_x64(True), jax.numpy_rank_promotion("allow"):
        yield


def bucket(n: int) -> int:
    """Rows after padding: a power of two, at least 32."""
    return max(_MIN_BUCKET, 1 << (n - 1).bit_length())


def pad(X, y):
    """``(X, y, mask)`` padded to :func:`bucket` rows (float64 under :func:`x64`)."""
    N, D = X.shape
    B = bucket(N)
    Xp = np.full((B, D), 0.5)
    Xp[:N] = X
    yp = np.zeros(B)
    yp[:N] = y
    mask = np.zeros(B)
    mask[:N] = 1.0
    return jnp.asarray(Xp), jnp.asarray(yp), jnp.asarray(mask)


def standardise(y: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (a constant vector becomes zeros)."""
    sd = float(np.std(y))
    return (y - np.mean(y)) / (sd if sd > 0 else 1.0)


# -- pathwise Thompson draws and their local optimisation ------------------------------------

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


@jax.jit
def log_likelihood_gain(theta, X_NxD, y_N, mask_N) -> jax.Array:
    """``log p(y | X, theta) - log p(y | noise only)`` in nats: how much better the fit explains
    the data than "all noise" (<= 0: it found no signal)."""
    nll = -_gp(theta, X_NxD, mask_N).log_probability(y_N * mask_N)
    return noise_only_nll(y_N, mask_N) - nll


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
