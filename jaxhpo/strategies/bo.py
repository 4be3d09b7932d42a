"""Bayesian optimisation: a Gaussian-process surrogate and batch Thompson sampling.

Each generation, a GP is fitted to every (hyperparameters, fitness) pair seen so far, and ``P``
points are proposed at once by Thompson sampling: ``P`` independent draws of the posterior over
a candidate set, each contributing its minimiser (Thompson 1933; batch form as in
Hernández-Lobato, Requeima, Pyzer-Knapp & Aspuru-Guzik 2017, "Parallel and Distributed Thompson
Sampling for Large-scale Accelerated Exploration of Chemical Space", arXiv:1706.01825; Kandasamy,
Krishnamurthy, Schneider & Póczos 2018, "Parallelised Bayesian Optimisation via Thompson
Sampling", AISTATS). Thompson sampling needs no inner optimiser, its batch members differ because
the draws differ, and it is exact on a candidate set: the right fit for proposing a whole
population per generation. The population trains the proposals as fresh members, and the next
generation is proposed from the grown data set (the generational schedule of
:class:`~jaxhpo.strategies.warm.GenerationalSearch`).

**Surrogate.** The GP is built with `tinygp <https://github.com/dfm/tinygp>`_ (a maintained JAX GP
library: kernels, Cholesky solver, conditioning, posterior sampling; it needs only ``equinox`` and
works with jax 0.10-0.11, where gpjax 1.0 pins ``jax<0.11`` and brings numpyro, lineax, paramax and
beartype). Kernel: ``amplitude * Matern-5/2`` with one length scale per dimension (ARD), inputs in
the space's *unit* coordinates (:meth:`jaxhpo.space.Space.to_unit`: log-scaled dimensions are
linear in log), a learned homoscedastic noise term for noisy fitness (fresh members trained with
other seeds give other losses), outputs standardised (zero mean, unit variance). The kernel's
amplitude, length scales and noise are fitted each generation by maximising the marginal likelihood
plus log-normal priors (length scales: ``LogNormal(sqrt(2) + log(D) / 2, sqrt(3))``, the choice of
Hvarfner, Hellsten & Nardi 2024, "Vanilla Bayesian Optimization Performs Great in High Dimensions",
arXiv:2402.02229; noise: ``LogNormal(log 1e-2, 2)`` on its variance) with ``optax.adam`` in a
``lax.scan`` of ``fit_steps`` steps from the previous generation's fit (the first from unit
amplitude and length scales, noise 1e-2), clipped to bounds; the best iterate is kept.
Observations are padded to a power of two with an exact mask (padded rows are uncorrelated with
everything and carry unit noise and zero targets, so they add nothing to the likelihood's
gradient or the posterior), so a study compiles the fit once per power of two.

**Acquisition.** The ``P`` draws share one set of ``candidates`` points: half uniform in the unit
cube, half Gaussian perturbations (standard deviation 0.1 in unit coordinates) of the best 5
observations, clipped to the cube. Int and choice dimensions are *optimised in the continuous
relaxation and rounded through the space's decoding*: every candidate is decoded
(:meth:`~jaxhpo.space.Space.from_unit`: an ``Int`` rounds, a ``Choice`` takes its bin) and encoded
back to the bin centre before the GP sees it, so the GP scores exactly the configuration that would
train, and observations sit at bin centres too. The ``P`` draws are joint posterior samples over
the candidates (one Cholesky factor of their posterior covariance); draw ``p``'s proposal is its
minimiser among the candidates no earlier draw of the batch took (distinct members where the space
allows). Fitness is minimised; a diverged member counts as the generation's worst finite fitness
plus its range (:func:`jaxhpo.strategies.evo.shape_fitness`).

**First generation.** Scrambled Sobol points, with the explicit ``points`` and a warm start's best
members in the first rows (:mod:`jaxhpo.strategies.warm`); an earlier run's observations seed the
GP, so with a warm start the first generation's other members are already proposed by the GP.

**Randomness.** Generation ``g``'s draws use ``jax.random.fold_in(key(seed), g)`` and its
candidates ``numpy.random.default_rng([seed, g])``: a resumed run proposes what the uninterrupted
one would have.

**State.** A dict of numpy arrays (a pytree; :func:`jaxhpo.checkpoint.pack_tree` round-trips it):
``X`` ``[N, D]`` unit coordinates of every observation, ``y`` ``[N]`` raw minimised fitness (``inf``
for diverged), ``u`` ``[P, D]`` the current members' points, ``theta`` the last fitted GP
hyperparameters (``log_amp``, ``log_ls [D]``, ``log_noise``), ``seed`` and ``generation``.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tinygp import GaussianProcess, kernels, transforms
from tinygp.kernels.distance import L2Distance

from jaxhpo.space import Space
from jaxhpo.strategies.base import Observation, PopulationUpdate
from jaxhpo.strategies.evo import shape_fitness
from jaxhpo.strategies.warm import GenerationalSearch, apply_points

#: Bounds of the fitted GP hyperparameters (standardised outputs, unit-coordinate inputs).
LOG_LS_BOUNDS = (math.log(1e-2), math.log(1e2))
LOG_AMP_BOUNDS = (math.log(1e-2), math.log(1e2))  # log standard deviation
LOG_NOISE_BOUNDS = (math.log(1e-6), math.log(1.0))  # log noise variance
_JITTER = 1e-6
_MIN_BUCKET = 32
_WARM_GENERATION = 1 << 20  # the stream of the warm-started first proposal


class _Masked(kernels.Kernel):
    """``m(x) m(x') k(x, x')`` where the last input column is the mask ``m`` in {0, 1}: padded
    observations are uncorrelated with everything (exact padding)."""

    inner: kernels.Kernel

    def evaluate(self, X1, X2):
        return X1[-1] * X2[-1] * self.inner.evaluate(X1[:-1], X2[:-1])


def _kernel(theta: Mapping[str, jax.Array]) -> kernels.Kernel:
    amp2 = jnp.exp(2.0 * theta["log_amp"])
    # tinygp's stationary kernels default to the L1 distance, which is not positive definite
    # for Matern-5/2 in more than one dimension: use the Euclidean one.
    matern = kernels.Matern52(scale=1.0, distance=L2Distance())
    return _Masked(amp2 * transforms.Linear(jnp.exp(-theta["log_ls"]), matern))


def _gp(theta, X_NxD, mask_N) -> GaussianProcess:
    Xm = jnp.concatenate([X_NxD, mask_N[:, None]], axis=1)
    noise = jnp.exp(theta["log_noise"]) + _JITTER
    return GaussianProcess(_kernel(theta), Xm, diag=jnp.where(mask_N > 0, noise, 1.0))


def _log_prior(theta, D: int) -> jax.Array:
    mu_ls, sd_ls = math.sqrt(2.0) + 0.5 * math.log(D), math.sqrt(3.0)
    lp = -0.5 * jnp.sum(((theta["log_ls"] - mu_ls) / sd_ls) ** 2)
    lp += -0.5 * ((theta["log_noise"] - math.log(1e-2)) / 2.0) ** 2
    return lp


def init_theta(D: int) -> dict[str, jax.Array]:
    """The first fit's start: unit amplitude and length scales (the unit cube's width; the
    prior's median, 4-7, would start very smooth), noise variance 1e-2."""
    return {
        "log_amp": jnp.zeros(()),
        "log_ls": jnp.zeros((D,)),
        "log_noise": jnp.asarray(math.log(1e-2)),
    }


def neg_log_posterior(theta, X_NxD, y_N, mask_N) -> jax.Array:
    """``-(log p(y | X, theta) + log p(theta))`` of the masked GP (up to a constant)."""
    gp = _gp(theta, X_NxD, mask_N)
    return -(gp.log_probability(y_N * mask_N) + _log_prior(theta, X_NxD.shape[1]))


def _clip_theta(theta):
    return {
        "log_amp": jnp.clip(theta["log_amp"], *LOG_AMP_BOUNDS),
        "log_ls": jnp.clip(theta["log_ls"], *LOG_LS_BOUNDS),
        "log_noise": jnp.clip(theta["log_noise"], *LOG_NOISE_BOUNDS),
    }


@functools.partial(jax.jit, static_argnames=("steps",))
def fit_gp(theta0, X_NxD, y_N, mask_N, steps: int = 100, learning_rate: float = 0.05):
    """Fits the GP hyperparameters by maximum a posteriori (optax Adam, ``lax.scan``).

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
    opt = optax.adam(learning_rate)
    theta = jax.tree.map(lambda x: jnp.asarray(x, X_NxD.dtype), theta0)
    loss_and_grad = jax.value_and_grad(neg_log_posterior)

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
        theta = _clip_theta(optax.apply_updates(theta, updates))
        return (theta, opt_state, best, best_loss), loss

    # The best iterate is kept: a step into an ill-conditioned region (NaN in the Cholesky)
    # neither moves the fit nor is returned.
    carry = (theta, opt.init(theta), theta, jnp.asarray(jnp.inf, X_NxD.dtype))
    (_, _, best, _), losses = jax.lax.scan(step, carry, None, length=steps)
    return best, losses


@jax.jit
def posterior(theta, X_NxD, y_N, mask_N, Xc_CxD):
    """Posterior mean and variance (noise-free, plus the draws' jitter) of the masked GP at
    ``Xc_CxD``."""
    gp = _gp(theta, X_NxD, mask_N)
    Xc = jnp.concatenate([Xc_CxD, jnp.ones((Xc_CxD.shape[0], 1))], axis=1)
    cond = gp.condition(y_N * mask_N, Xc, diag=_JITTER).gp
    return cond.mean, cond.variance


@functools.partial(jax.jit, static_argnames=("draws",))
def thompson_draws(key, theta, X_NxD, y_N, mask_N, cand_CxD, draws: int):
    """``draws`` joint posterior draws over one candidate set: ``[draws, C]``."""
    gp = _gp(theta, X_NxD, mask_N)
    Xc = jnp.concatenate([cand_CxD, jnp.ones((cand_CxD.shape[0], 1))], axis=1)
    cond = gp.condition(y_N * mask_N, Xc, diag=_JITTER).gp
    return cond.sample(key, (draws,))


@contextlib.contextmanager
def _x64():
    """The GP computes in float64 (as GP libraries do): its Cholesky factors covariances whose
    condition numbers exceed float32's range once length scales grow on smooth objectives."""
    with jax.enable_x64(True), jax.numpy_rank_promotion("allow"):
        yield


def _bucket(n: int) -> int:
    return max(_MIN_BUCKET, 1 << (n - 1).bit_length())


def _pad(X, y):
    N, D = X.shape
    B = _bucket(N)
    Xp = np.full((B, D), 0.5)
    Xp[:N] = X
    yp = np.zeros(B)
    yp[:N] = y
    mask = np.zeros(B)
    mask[:N] = 1.0
    return jnp.asarray(Xp), jnp.asarray(yp), jnp.asarray(mask)  # float64 under _x64()


def standardise(y: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (a constant vector becomes zeros)."""
    sd = float(np.std(y))
    return (y - np.mean(y)) / (sd if sd > 0 else 1.0)


class BayesOpt(GenerationalSearch):
    """Bayesian optimisation over the space (``strategy.name: bo``); see the module docstring.

    Args:
      generation_steps: steps per generation (``strategy.generation_steps``; ``None``: one
        segment).
      candidates: candidate points per Thompson draw (``strategy.bo_candidates``).
      fit_steps: Adam steps of each GP fit (``strategy.bo_fit_steps``).
      points, warm_start, warm_start_top, metric: see :mod:`jaxhpo.strategies.warm`.
    """

    name = "bo"
    config_fields = (*GenerationalSearch.config_fields, "bo_candidates", "bo_fit_steps")

    def __init__(
        self,
        generation_steps: int | None = None,
        candidates: int = 256,
        fit_steps: int = 100,
        points: Sequence[Mapping[str, Any]] = (),
        warm_start: str | None = None,
        warm_start_top: int = 0,
        metric: str = "loss",
    ):
        super().__init__(generation_steps, points, warm_start, warm_start_top, metric)
        for field, value, lo in (
            ("strategy.bo_candidates", candidates, 2),
            ("strategy.bo_fit_steps", fit_steps, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lo:
                raise ValueError(f"{field}: must be an integer >= {lo}, got {value!r}")
        self.candidates = int(candidates)
        self.fit_steps = int(fit_steps)
        self.space: Space | None = None

    @classmethod
    def from_config(cls, cfg, train):
        return cls(
            candidates=cfg.bo_candidates,
            fit_steps=cfg.bo_fit_steps,
            **GenerationalSearch.seeding_kwargs(cfg),
        )

    # -- coordinates -------------------------------------------------------------------------

    def _snap(self, u: np.ndarray) -> np.ndarray:
        """Unit points decoded and encoded back: ints and choices move to their bin centres."""
        shape = u.shape
        cols = self.space.from_unit(u.reshape(-1, shape[-1]))
        return np.asarray(self.space.to_unit(cols), np.float64).reshape(shape)

    def _decode(self, u: np.ndarray) -> dict[str, np.ndarray]:
        cols = self.space.from_unit(u)
        return {k: np.asarray(cols[k]) for k in self.space.searched}

    # -- proposals ---------------------------------------------------------------------------

    def _fit(self, theta0, X: np.ndarray, y: np.ndarray):
        ys = standardise(shape_fitness(y).astype(np.float64))
        with _x64():
            Xp, yp, mask = _pad(X, ys)
            theta, _ = fit_gp(theta0, Xp, yp, mask, steps=self.fit_steps)
        return theta, (Xp, yp, mask), ys

    def propose(self, seed: int, g: int, theta0, X: np.ndarray, y: np.ndarray, P: int):
        """``P`` new unit points by batch Thompson sampling given observations ``(X, y)``, the
        GP fit starting from ``theta0``; returns ``(u [P, D], theta)``."""
        N, D = X.shape
        theta, data, ys = self._fit(theta0, X, y)
        rng = np.random.default_rng([seed, g])
        C = self.candidates
        n_local = C // 2
        best = X[np.argsort(ys, kind="stable")[: min(5, N)]]
        local = best[rng.integers(0, len(best), size=n_local)]
        local = np.clip(local + 0.1 * rng.standard_normal((n_local, D)), 0.0, 1.0)
        cand = self._snap(np.concatenate([local, rng.random((C - n_local, D))]))
        key = jax.random.fold_in(jax.random.key(seed), g)
        with _x64():
            f = thompson_draws(key, theta, *data, jnp.asarray(cand), draws=P)
        f = np.array(f, np.float64)
        f[~np.isfinite(f)] = np.inf
        taken = np.zeros(C, bool)
        picks = []
        for p in range(P):  # host loop over the batch's draws (proposals, not training)
            pick = int(np.argmin(np.where(taken, np.inf, f[p])))
            if taken[pick]:  # every candidate taken (C < P): allow a repeat
                pick = int(np.argmin(f[p]))
            picks.append(pick)
            taken |= np.all(cand == cand[pick], axis=1)  # snapped duplicates too
        return cand[picks], jax.tree.map(np.asarray, theta)

    # -- Strategy ----------------------------------------------------------------------------

    def init(self, seed: int, space: Space, size: int | None):
        if size is None or isinstance(size, bool) or size < 1:
            raise ValueError(f"population.size: the bo strategy needs a size >= 1, got {size}")
        D = len(space.searched)
        if D == 0:
            raise ValueError("space: the bo strategy needs at least one searched dimension")
        self.space = space
        P = int(size)
        seeded = self.seed(space, P)
        X = np.zeros((0, D))
        y = np.zeros((0,))
        theta = jax.tree.map(np.asarray, init_theta(D))
        if seeded.cols is not None and len(seeded.fitness) >= 2:
            X = np.asarray(space.to_unit(seeded.cols), np.float64)
            y = np.asarray(seeded.fitness, np.float64)
            u, theta = self.propose(seed, _WARM_GENERATION, theta, X, y, P)
        else:
            u = self._snap(np.asarray(space.to_unit(space.sobol(seed, P)), np.float64))
        cols = apply_points(space, self._decode(u), seeded)
        u = np.asarray(space.to_unit(cols), np.float64)
        state = {
            "seed": np.asarray(seed, np.int64),
            "generation": np.asarray(0, np.int64),
            "X": X,
            "y": y,
            "u": u,
            "theta": theta,
        }
        return state, space.from_unit(u)

    def update(self, state: Any, obs: Observation) -> tuple[Any, PopulationUpdate]:
        if self.space is None:
            raise ValueError("strategy update: the bo strategy was not initialised (call init)")
        if not self.due(int(obs.step)):
            return state, PopulationUpdate()
        u = np.asarray(state["u"], np.float64)
        P = u.shape[0]
        if len(obs.member_id) != P:
            raise ValueError(
                f"strategy update: bo proposed {P} members but the population has "
                f"{len(obs.member_id)}"
            )
        raw = obs.fitness()
        X = np.concatenate([np.asarray(state["X"], np.float64).reshape(-1, u.shape[1]), u])
        y = np.concatenate([np.asarray(state["y"], np.float64), raw])
        seed, g = int(state["seed"]), int(state["generation"])
        done = self.last(int(obs.step))
        if done:  # the last generation: nothing more to train, no proposal
            new_u, theta = u, state["theta"]
        else:
            new_u, theta = self.propose(seed, g, state["theta"], X, y, P)
        best = int(np.argmin(raw)) if np.isfinite(raw).any() else 0
        names = self.space.searched
        event = {
            "kind": "generation",
            "generation": g,
            "algorithm": "bo",
            "best_fitness": float(raw[best]),
            "best_member": int(obs.member_id[best]),
            "best": {k: _scalar(v[0]) for k, v in self._decode(u[best][None]).items()},
            "observations": int(len(y)),
            "length_scales": {
                k: float(np.exp(v)) for k, v in zip(names, theta["log_ls"], strict=True)
            },
            "noise": float(np.exp(theta["log_noise"])),
            "diverged": int(np.sum(~np.isfinite(raw))),
        }
        new_state = {
            "seed": np.asarray(seed, np.int64),
            "generation": np.asarray(g + 1, np.int64),
            "X": X,
            "y": y,
            "u": new_u,
            "theta": jax.tree.map(np.asarray, theta),
        }
        if done:
            return new_state, PopulationUpdate(events=[event], done=True)
        return new_state, PopulationUpdate(
            reinit=np.ones(P, bool), hparams=self._decode(new_u), events=[event]
        )


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
