"""Output warping of bo's fitness before the GP standardises it.

A GP with a stationary kernel and Gaussian noise fits heavy-tailed objectives badly: on
Rosenbrock or Styblinski-Tang a few evaluations far up the walls dominate the standardised
targets, the fit explains the bulk near the optimum as noise and its draws cannot rank the
promising region. Monotone transforms of the observed values keep the ordering and make the
targets closer to Gaussian (HEBO's power transform, Cowen-Rivers et al. 2022, "HEBO: Pushing the
Limits of Sample-Efficient Hyperparameter Optimisation", JAIR; the Gaussian copula of Salinas,
Shen & Perrone 2020, "A Quantile-based Approach for Hyperparameter Transfer Learning", ICML):

* ``"none"``: the raw values.
* ``"log"``: ``log1p((y - min y) / scale)`` with ``scale`` the median excess over the minimum:
  values below the median stay nearly linear, the upper tail is compressed logarithmically.
* ``"rank"``: normal scores of the ranks, ``Phi^-1((rank + 1/2) / N)`` (ties share their mean
  rank): the targets are exactly Gaussian whatever the objective's scale.

Every form is applied to finite values (diverged members are shaped before,
:func:`jaxhpo.strategies.evo.shape_fitness`) and is deterministic.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

#: ``strategy.warp``'s forms
WARPS = ("none", "log", "rank")


def warp_outputs(y: np.ndarray, form: str) -> np.ndarray:
    """``y`` (finite, minimised) under the monotone warp ``form`` (see the module docstring)."""
    y = np.asarray(y, np.float64)
    if form == "none" or len(y) < 2:
        return y
    if form == "log":
        s = y - np.min(y)
        scale = float(np.median(s))
        scale = scale if scale > 0 else (float(np.max(s)) or 1.0)
        return np.log1p(s / scale)
    if form == "rank":
        return ndtri((rankdata(y) - 0.5) / len(y))
    raise ValueError(f"warp: one of {', '.join(WARPS)}, got {form!r}")
