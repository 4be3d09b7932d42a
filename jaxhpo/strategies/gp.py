"""The Gaussian-process surrogate of the ``bo`` strategy: a masked ARD Matern-5/2 GP (tinygp),
its MAP fit from several starts and its posterior.

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

**Draws** (pathwise Thompson draws and their local optimisation) are in
:mod:`jaxhpo.strategies.gp_draws`.

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
LOG_WARP_BOUNDS = (math.log(0.1), math.log(10.0))  # Kumaraswamy concentrations a, b
MEAN_BOUNDS = (-3.0, 3.0)  # the fitted constant prior mean (``strategy.prior_mean: fit``)
WARP_PRIOR_SD = math.sqrt(0.75)  # log a, log b ~ N(0, 0.75), BoTorch's Warp prior
_WARP_EPS = 1e-7
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


def warp(theta: Mapping[str, jax.Array], X_NxD: jax.Array) -> jax.Array:
    """Unit inputs through each dimension's Kumaraswamy CDF ``1 - (1 - x^a)^b`` where ``theta``
    has ``log_warp_a`` / ``log_warp_b`` (``strategy.input_warp``; Snoek, Swersky, Zemel & Adams
    2014, "Input Warping for Bayesian Optimization of Non-stationary Functions", ICML), else
    unchanged. Inputs are first squeezed into ``[eps, 1 - eps]``, as BoTorch's ``Warp`` does."""
    if "log_warp_a" not in theta:
        return X_NxD
    x = _WARP_EPS + (1.0 - 2.0 * _WARP_EPS) * jnp.clip(X_NxD, 0.0, 1.0)
    a = jnp.broadcast_to(jnp.exp(theta["log_warp_a"]), x.shape)  # a point [D] or points [N, D]
    b = jnp.broadcast_to(jnp.exp(theta["log_warp_b"]), x.shape)
    return 1.0 - (1.0 - x**a) ** b


class _Warped(kernels.Kernel):
    """``k(w(x), w(x'))`` with :func:`warp`'s Kumaraswamy CDFs."""

    theta: dict
    inner: kernels.Kernel

    def evaluate(self, X1, X2):
        return self.inner.evaluate(warp(self.theta, X1), warp(self.theta, X2))


def _kernel(theta: Mapping[str, jax.Array]) -> kernels.Kernel:
    """The ARD Matern-5/2, plus the additive component where ``theta`` has ``log_amp_add``
    (``strategy.kernel: additive``), on warped inputs where it has ``log_warp_a``
    (``strategy.input_warp``)."""
    amp2 = jnp.exp(2.0 * theta["log_amp"])
    # tinygp's stationary kernels default to the L1 distance, which is not positive definite
    # for Matern-5/2 in more than one dimension: use the Euclidean one.
    matern = kernels.Matern52(scale=1.0, distance=L2Distance())
    k = amp2 * transforms.Linear(jnp.exp(-theta["log_ls"]), matern)
    if "log_amp_add" in theta:
        k = k + _Additive(jnp.exp(2.0 * theta["log_amp_add"]), jnp.exp(-theta["log_ls_add"]))
    if "log_warp_a" in theta:
        k = _Warped({n: theta[n] for n in ("log_warp_a", "log_warp_b")}, k)
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
    if "log_warp_a" in theta:
        for n in ("log_warp_a", "log_warp_b"):
            lp += -0.5 * jnp.sum((theta[n] / WARP_PRIOR_SD) ** 2)
    if "mean" in theta:  # standardised targets: N(0, 1)
        lp += -0.5 * theta["mean"] ** 2
    return lp


def init_theta(
    D: int, additive: bool = False, input_warp: bool = False, mean: bool = False
) -> dict[str, jax.Array]:
    """The default start: unit amplitude and length scales (the unit cube's width; the prior's
    median, 4-7, would start very smooth), noise variance 1e-2; with ``additive`` the additive
    component's amplitude and length scales too (unit); with ``input_warp`` the warp's
    concentrations at 1 (the identity); with ``mean`` a constant prior mean at 0."""
    theta = {
        "log_amp": jnp.zeros(()),
        "log_ls": jnp.zeros((D,)),
        "log_noise": jnp.asarray(math.log(1e-2)),
    }
    if additive:
        theta.update(log_amp_add=jnp.zeros(()), log_ls_add=jnp.zeros((D,)))
    if input_warp:
        theta.update(log_warp_a=jnp.zeros((D,)), log_warp_b=jnp.zeros((D,)))
    if mean:
        theta["mean"] = jnp.zeros(())
    return theta


def centred(theta, y_N, mask_N):
    """The targets less the fitted constant prior mean (where ``theta`` has one), padded rows
    zero: every posterior quantity then takes a zero prior mean."""
    return (y_N - theta["mean"]) * mask_N if "mean" in theta else y_N * mask_N


def shared_scale(theta):
    """``theta`` with every length scale at their geometric mean (one shared length scale)."""
    return {**theta, "log_ls": jnp.full_like(theta["log_ls"], jnp.mean(theta["log_ls"]))}


def neg_log_posterior(
    theta, X_NxD, y_N, mask_N, ls_prior: str = "hvarfner", shared: bool = False
) -> jax.Array:
    """``-(log p(y | X, theta) + log p(theta))`` of the masked GP (up to a constant), the
    length scales under ``ls_prior`` (:data:`LS_PRIORS`); ``shared``: one length scale for
    every dimension (their mean), its prior counted once."""
    D = X_NxD.shape[1]
    if shared:
        theta = shared_scale(theta)
    gp = _gp(theta, X_NxD, mask_N)
    lp = gp.log_probability(centred(theta, y_N, mask_N)) + _log_prior(theta, D, ls_prior)
    if shared:  # one parameter: its prior once, not D times
        ls = theta["log_ls"]
        lp += _ls_log_prior(ls[:1], D, ls_prior) - _ls_log_prior(ls, D, ls_prior)
    return -lp


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
    for n in ("log_warp_a", "log_warp_b"):
        if n in theta:
            out[n] = jnp.clip(theta[n], *LOG_WARP_BOUNDS)
    if "mean" in theta:
        out["mean"] = jnp.clip(theta["mean"], *MEAN_BOUNDS)
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


@functools.partial(jax.jit, static_argnames=("steps", "ls_prior", "shared"))
def fit_restarts(
    starts,
    X_NxD,
    y_N,
    mask_N,
    steps: int = 100,
    learning_rate: float = 0.05,
    ls_prior: str = "hvarfner",
    shared: bool = False,
):
    """MAP fits from ``S`` starts at once (``vmap``); keeps the highest marginal posterior.

    Args:
      starts: a theta pytree whose leaves have a leading start axis ``S``.
      X_NxD, y_N, mask_N: as :func:`fit_gp`.
      steps, learning_rate: Adam's, per start.
      ls_prior: the length scales' prior (:data:`LS_PRIORS`).
      shared: one length scale for every dimension (:func:`shared_scale`); the fit returned
        has them equal.

    Returns:
      ``(theta, index, loss_S)``: the best fit, the start it came from, each start's best
      objective (``-log`` posterior; ``inf`` where every step failed).
    """
    objective = functools.partial(neg_log_posterior, ls_prior=ls_prior, shared=shared)
    fit = jax.vmap(lambda t: _fit(t, X_NxD, y_N, mask_N, steps, learning_rate, objective)[:2])
    thetas, loss_S = fit(starts)
    index = jnp.argmin(loss_S)
    best = jax.tree.map(lambda x: x[index], thetas)
    return (shared_scale(best) if shared else best), index, loss_S


def fit_length_scales(starts, X_NxD, y_N, mask_N, form: str, N: int, **kw):
    """:func:`fit_restarts` with the length scales' form ``form``: ``ard`` (one per
    dimension), ``shared`` (one for all) or ``auto`` (both fitted; the higher marginal posterior
    less BIC's ``(D - 1) log(N) / 2`` for ARD's further scales, ``N`` the real observations).
    Returns ``(theta, start index, "ard" | "shared")``."""
    D = X_NxD.shape[1]
    fits = []
    for shared in {"ard": (False,), "shared": (True,), "auto": (False, True)}[form]:
        theta, index, loss_S = fit_restarts(starts, X_NxD, y_N, mask_N, **kw, shared=shared)
        penalty = 0.0 if shared else 0.5 * (D - 1) * math.log(max(N, 2))
        fits.append((float(jnp.min(loss_S)) + penalty, shared, theta, index))
    _, shared, theta, index = min(fits, key=lambda f: f[0])
    return theta, index, ("shared" if shared else "ard")


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


@jax.jit
def log_likelihood_gain(theta, X_NxD, y_N, mask_N) -> jax.Array:
    """``log p(y | X, theta) - log p(y | noise only)`` in nats: how much better the fit explains
    the data than "all noise" (<= 0: it found no signal)."""
    nll = -_gp(theta, X_NxD, mask_N).log_probability(centred(theta, y_N, mask_N))
    return noise_only_nll(y_N, mask_N) - nll
