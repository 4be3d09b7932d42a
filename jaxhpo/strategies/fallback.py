"""bo's fallback proposer for a GP fit that explains no more than noise.

When ``fit_gain_nats`` (:func:`jaxhpo.strategies.gp.log_likelihood_gain`) is below
``strategy.fallback_nats`` the Thompson draws are close to prior draws and their minimisers are
random points. The batch is then proposed by a population step instead: a Gaussian fitted to
the best quarter of the observations with CMA-ES's log-rank weights (Hansen 2016, "The CMA
Evolution Strategy: A Tutorial", arXiv:1604.00772, the rank-mu update from the data alone: an
estimation-of-distribution step), its covariance floored along every axis, sampled and clipped
to the box. Stateless: everything follows from the observations and the generator given.
"""

from __future__ import annotations

import numpy as np


def population_proposals(
    rng: np.random.Generator, X: np.ndarray, ys: np.ndarray, P: int, lo, hi, floor: float = 0.05
) -> np.ndarray:
    """``P`` points of the box ``[lo, hi]`` from the weighted Gaussian of the best quarter of
    ``(X, ys)`` (minimised; at least two points); ``floor``: the least standard deviation
    along each axis, in unit coordinates."""
    N, D = X.shape
    mu = max(2, N // 4)
    best = X[np.argsort(ys, kind="stable")[:mu]]
    w = np.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
    w /= w.sum()
    mean = w @ best
    dev = best - mean
    C = (w[:, None] * dev).T @ dev + floor**2 * np.eye(D)
    z = rng.standard_normal((P, D)) @ np.linalg.cholesky(C).T
    return np.clip(mean + z, lo, hi)
