"""How Bayesian optimisation turns scored candidates into a batch of proposals
(:meth:`jaxhpo.strategies.bo.BayesOpt.propose`): greedy members at the posterior mean's minimiser,
then one pick per Thompson draw, no candidate twice where the candidates allow."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo.space import Space
from jaxhpo.strategies.gp import posterior, x64
from jaxhpo.strategies.gp_draws import minimise_mean


def _snap(space: Space, u, raw: bool = False):
    """Unit points decoded and encoded back: ints and choices move to their bin centres
    (``raw``: inactive conditional entries kept as drawn). NumPy in, float64 out; a jax array
    in (traceable), its dtype out."""
    shape = u.shape
    unit = space.to_unit(space.from_unit(u.reshape(-1, shape[-1]), raw=raw))
    if isinstance(u, jax.Array):
        return unit.astype(u.dtype).reshape(shape)
    return np.asarray(unit, np.float64).reshape(shape)


def greedy_picks(space: Space, theta, data, cand: np.ndarray, n: int, steps: int, box) -> list:
    """``n`` points at the posterior mean's lowest candidates; with ``steps``, the first is the
    mean's minimiser refined by projected Adam from its best 4 candidates inside ``box``."""
    with x64():
        mu, _ = posterior(theta, *data, jnp.asarray(cand))
    order = np.argsort(np.asarray(mu, np.float64), kind="stable")
    picks = []
    if steps:  # the mean's minimiser refined from its best candidates
        with x64():
            x_mean, _ = minimise_mean(
                theta,
                *data,
                jnp.asarray(cand[order[:4]]),
                steps=steps,
                lo_D=jnp.asarray(box[0], jnp.float64),
                hi_D=jnp.asarray(box[1], jnp.float64),
            )
        picks.append(_snap(space, np.asarray(x_mean, np.float64)))
    return picks + [cand[j] for j in order[: n - len(picks)]]


def draw_picks(cand, f, x_loc, f_loc, taken: np.ndarray, earlier: list, n: int) -> list:
    """Draw ``p``'s pick for ``p < n``: its local result when that beats the candidates no earlier
    pick took (and is no earlier pick), else its best free candidate (a repeat only when every
    candidate is taken). ``taken`` is updated in place."""
    picks: list[np.ndarray] = []
    for p in range(n):  # host loop over the batch's draws (proposals, not training)
        free = np.where(taken, np.inf, f[p])
        j = int(np.argmin(free))
        repeat = any(np.array_equal(x_loc[p], q) for q in [*earlier, *picks])
        if np.isfinite(f_loc[p]) and f_loc[p] <= free[j] and not repeat:
            pick = x_loc[p]  # the local search improved on every free candidate
        elif taken[j]:  # every candidate taken (C < P): allow a repeat
            pick = cand[int(np.argmin(f[p]))]
        else:
            pick = cand[j]
        picks.append(pick)
        taken |= np.all(cand == pick, axis=1)  # snapped duplicates too
    return picks
