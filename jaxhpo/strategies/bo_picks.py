"""How Bayesian optimisation turns scored candidates into a batch of proposals
(:meth:`jaxhpo.strategies.bo.BayesOpt.propose`): greedy members at the posterior mean's minimiser,
then one pick per Thompson draw, no candidate twice where the candidates allow; with
``acquisition: ei`` the first member at log expected improvement's maximiser."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo.space import Space
from jaxhpo.strategies.acquisition import maximise_ei
from jaxhpo.strategies.bo_defaults import auto_greedy, auto_local_steps
from jaxhpo.strategies.gp import posterior, x64
from jaxhpo.strategies.gp_draws import draws_at, minimise_mean, optimise_draws


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


def ei_pick(space: Space, theta, data, cand: np.ndarray, taken: np.ndarray, box) -> np.ndarray:
    """The point of log expected improvement's maximum (:func:`maximise_ei`: projected Adam from
    the best 4 candidates inside ``box``), snapped; the best free candidate by log EI when the
    snapped point is a taken candidate. ``taken`` is updated in place."""
    with x64():
        lo, hi = (jnp.asarray(b, jnp.float64) for b in box)
        x, _, log_ei_C = maximise_ei(theta, *data, jnp.asarray(cand), lo_D=lo, hi_D=hi)
    pick = _snap(space, np.asarray(x, np.float64))
    if np.any(taken & np.all(cand == pick, axis=1)):
        pick = cand[int(np.argmax(np.where(taken, -np.inf, np.asarray(log_ei_C))))]
    taken |= np.all(cand == pick, axis=1)
    return pick


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


def member_counts(config, acquisition: str, D: int, P: int, g: int, stream) -> tuple[int, int]:
    """How many of the ``P`` members of generation ``g`` take log EI's maximiser and how many
    the posterior mean's best candidates under ``config`` (a ``BOConfig``); the rest are
    Thompson draws. ParEGO's members (``stream`` given) are one Thompson draw each."""
    if stream is not None:
        return 0, 0
    greedy = auto_greedy(D) if config.greedy is None else config.greedy
    n_greedy = min(greedy, P - 1)  # one draw at least explores
    if P == 1 and config.greedy_every is not None and (g + 1) % config.greedy_every == 0:
        n_greedy = 1  # one member per generation: every ``every``-th exploits
    if acquisition == "ei":  # then one draw still explores where P > 1
        return 1, max(0, min(n_greedy, P - 2))
    return 0, n_greedy


def thompson_draws(config, space: Space, key, theta, data, cand, box, P: int):
    """``P`` Thompson draws scored at the candidates and refined by local search inside ``box``
    (``config.local_steps`` steps; :func:`optimise_draws`): ``(f [P, C], x_loc [P, D],
    f_loc [P])``, the local results snapped and scored again, non-finite scores as ``inf``."""
    D = cand.shape[1]
    steps = auto_local_steps(D) if config.local_steps is None else config.local_steps
    with x64():
        ds, f, x_loc, _ = optimise_draws(
            key,
            theta,
            *data,
            jnp.asarray(cand),
            draws=P,
            steps=steps,
            lo_D=jnp.asarray(box[0], jnp.float64),
            hi_D=jnp.asarray(box[1], jnp.float64),
        )
        x_loc = _snap(space, np.asarray(x_loc, np.float64))  # ints/choices to bin centres
        f_loc = draws_at(theta, ds, data[0], data[2], jnp.asarray(x_loc[:, None]))[:, 0]
    f, f_loc = np.array(f, np.float64), np.array(f_loc, np.float64)
    f[~np.isfinite(f)] = np.inf
    return f, x_loc, f_loc
