"""Population Based Bandits (PB2): PBT whose explore step is a batch GP bandit.

Parker-Holder, Nguyen & Roberts 2020, "Provably Efficient Online Hyperparameter Optimization
with Population-Based Bandits", NeurIPS 2020, arXiv:2002.02518.

PB2 keeps PBT's exploit (:mod:`jaxhpo.strategies.pbt`: the same ranking, truncation or
tournament, shape-bucket groups, diverged members replaced) and replaces its random explore by a
model. At every observation each member that trained adds one point to a data set: the step
``t`` at the end of the interval and the unit coordinates ``x`` of the hyperparameters it trained
with, against the *improvement per step* of its minimised fitness over that interval (a member
that copied starts from its parent's fitness). A Gaussian process on ``(t, x)`` models it with the
time-varying kernel of the paper (Bogunovic, Scarlett & Cevher 2016), here

    ``k((t, x), (t', x')) = a^2 Matern52(x, x' | ARD length scales) (1 - eps)^(|t - t'| / 2)``

(the paper's squared exponential in ``x`` is the Matern-5/2 of :mod:`jaxhpo.strategies.gp`; the
time factor is ``exp(-rate |t - t'|)`` with ``rate = -log(1 - eps) / 2`` fitted, time scaled to
the data's span), fitted by maximum a posteriori with the GP code of ``bo``
(:func:`jaxhpo.strategies.gp._fit`, its priors on amplitude, length scales and noise) to the
improvements less the mean of their step's (``normalise="step"``, the default; see below). The
members that explore pick, one after another, the maximiser over candidates of the upper
confidence bound at the current step, ``mu(t, x) + kappa sigma_b(t, x)``: ``mu`` from the data,
``sigma_b`` also conditioned on the *pending* points (the members that keep training and the
batch's earlier picks) — GP-BUCB's batch rule (Desautels, Krause & Burdick 2014), as the
paper selects its batch. ``kappa`` defaults to ``sqrt(0.2 log(0.4 N))`` for ``N`` observations
(the authors' implementation in Ray Tune weighs the variance by ``sqrt(0.2 + log(0.4 N))``).

**Targets per step.** The paper standardises all improvements together (``normalise="all"``). A
loss falls fastest early, so the GP's zero prior mean then sits above every recent improvement:
points far from the data look better than the members' own. With 4 members on the byte LM 31% of
the picks landed within 5% of an end of a range and PB2 lost to PBT on every seed. ``"step"``
takes each step's mean off first, so an unexplored point is "as good as this step's average
member". Best final validation loss over 5 seeds (``experiments/pb2_vs_pbt_lm.py``; seeds where
PB2 is lower than PBT, median PB2 vs PBT): 4 members ``"all"`` 0/5, 2.4377 vs 2.4358, ``"step"``
4/5, 2.4316; 8 members ``"all"`` 3/5, 2.4058 vs 2.4282, ``"step"`` 4/5, 2.4103 (the host form
before the compiled one; with the compiled form's random numbers ``"step"`` 5/5, 2.4342 with 4
members and 3/5, 2.4083 with 8). On PBT's toy (``scripts/bench_pb2.py``, 10 seeds) median steps
to the target with 4 / 8 members: ``"step"`` 38 / 42, ``"all"`` 38 / 36, PBT 70 / 64. Also tried
on the LM, and dropped: each member's candidates in a box around the point it copied (the local
trust regions of Bayesian generational PBT, Wan et al. 2022, arXiv:2207.09405, of fixed side
0.25 or 0.5 in unit coordinates): alone 2/5 seeds with 4 members (median 2.4422), with
``"step"`` no better than ``"step"`` alone (4 members: 4/5, median 2.4269 with side 0.25, 2.4383
with 0.5; 8 members: 3/5, 2.4115), and slower on PBT's toy, whose optimum lies in a corner (4
members: 48 and 44 steps to the target).

Until ``min_data`` observations are in, members explore as PBT does (``perturb``, ``factors``,
``sigma``, ``resample_prob``). Only the most recent ``window`` observations are kept.

**One decision, host and compiled.** The decision is one pure ``jax.numpy`` function
(:meth:`PB2.device_update`: record the intervals, PBT's exploit, the GP's picks in a
``lax.cond``; :mod:`jaxhpo.strategies.pb2_gp`), so ``train.compiled`` runs PB2 inside the
study's one program as it runs PBT. The state holds the data in a ring buffer of ``window``
rows (fixed shapes for ``lax.scan``). The host loop calls the same function jitted, on the
valid rows padded to a power of two and in float64 (:func:`jaxhpo.strategies.gp.x64`), so a
fit costs what the data need; the compiled loop fits on the whole buffer in the program's
float32 (each fit then costs ``window`` rows: lower ``window`` on a small machine). Random
numbers fold in the seed and the step, so a resumed run makes the same decisions.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo import conditions
from jaxhpo.space import Space
from jaxhpo.strategies import gp
from jaxhpo.strategies.base import Capabilities, StrategyState, static
from jaxhpo.strategies.decision import Observation, PopulationUpdate, lineage_events
from jaxhpo.strategies.pb2_gp import init_theta, propose, targets
from jaxhpo.strategies.pbt import PBT, PBTConfig, PBTState

__all__ = ["PB2", "PB2Config", "PB2State", "targets"]

NORMALISE = ("step", "all")  # PB2Config.normalise


@dataclasses.dataclass(frozen=True)
class PB2Config(PBTConfig):
    """``strategy:`` settings of PB2 (and PBT's: exploit as PBT; ``perturb``, ``factors``,
    ``sigma`` and ``resample_prob`` explore until the GP has ``min_data`` observations)."""

    #: most recent observations the GP is fitted to (the compiled loop fits on all of them)
    window: int = 512
    #: observations before the GP proposes (None: 2 x (searched dimensions + 1))
    min_data: int | None = None
    candidates: int = 256  # candidate points scored by the upper confidence bound
    fit_steps: int = 100  # Adam steps of each GP fit (per start)
    #: UCB's weight on the standard deviation (None: sqrt(0.2 log(0.4 N)), N observations)
    kappa: float | None = None
    #: the GP's targets: the improvements less their step's mean, then standardised ("step"),
    #: or standardised together ("all", as the paper)
    normalise: str = "step"

    def __post_init__(self):
        super().__post_init__()
        for field, value, lo in (
            ("window", self.window, 2),
            ("min_data", 2 if self.min_data is None else self.min_data, 2),
            ("candidates", self.candidates, 2),
            ("fit_steps", self.fit_steps, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lo:
                raise ValueError(f"strategy.{field}: must be an integer >= {lo}, got {value!r}")
        if self.kappa is not None and not self.kappa >= 0:
            raise ValueError(f"strategy.kappa: must be >= 0, got {self.kappa}")
        if self.normalise not in NORMALISE:
            raise ValueError(f"strategy.normalise: one of {NORMALISE}, got {self.normalise!r}")


class PB2State(StrategyState):
    """PB2's state: PBT's key and space, the bandit's data (a ring buffer) and the last
    observation. Fixed shapes, so the compiled loop carries it through ``lax.scan``."""

    space: Space = static()  # the search space (structure, not traced)
    key: np.ndarray  # uint32 [2]: the root key's data (decisions fold in the step)
    X: np.ndarray  # float32 [W, 1 + D]: (step, unit hyperparameters) of each interval
    y: np.ndarray  # float32 [W]: improvement per step of the minimised fitness over it
    valid: np.ndarray  # bool [W]: rows written
    count: np.ndarray  # int32 []: rows written so far (the ring's next row: count % W)
    last_fit: np.ndarray  # float32 [P]: each slot's fitness after the last update (NaN: none)
    last_step: np.ndarray  # int32 []: the step of the last observation (0: none yet)
    theta: dict[str, np.ndarray]  # the last GP fit: log_amp, log_ls [D], log_noise, log_rate

    def rows(self) -> int:
        """Valid rows held (at most the buffer's length)."""
        return int(min(int(self.count), len(self.y)))

    def ordered(self) -> np.ndarray:
        """Indices of the valid rows, oldest first."""
        W, n = len(self.y), self.rows()
        start = int(self.count) % W if int(self.count) > W else 0
        return (start + np.arange(n)) % W


class PB2(PBT):
    """Population Based Bandits; see the module docstring.

    Settings: :class:`PB2Config`.
    """

    name = "pb2"
    Config = PB2Config
    State = PB2State
    capabilities = Capabilities(compiled=True)  # one decision, host and compiled

    def min_data(self, D: int) -> int:
        return 2 * (D + 1) if self.config.min_data is None else self.config.min_data

    def init(self, seed: int, space: Space, size: int | None):
        pbt_state, cols = super().init(seed, space, size)
        W = self.config.window
        if int(size) > W:
            raise ValueError(
                f"strategy.window: {W} rows cannot hold one observation of {size} members"
            )
        D = len(space.searched)
        state = PB2State(
            space=space,
            key=pbt_state.key,
            X=np.zeros((W, 1 + D), np.float32),
            y=np.zeros((W,), np.float32),
            valid=np.zeros((W,), bool),
            count=np.asarray(0, np.int32),
            last_fit=np.full(int(size), np.nan, np.float32),
            last_step=np.asarray(0, np.int32),
            theta=jax.tree.map(np.asarray, init_theta(D)),
        )
        return state, cols

    def device_update(self, state, step, fitness_P, hparams, groups_P=None, frozen=()):
        """The decision as a pure function (the compiled loop's): PBT's decision
        (:meth:`PBT.device_update`), then :meth:`explore_gp`; returns ``(state, parents,
        copied, explored, hparams)`` as PBT's. The host loop calls the same two functions."""
        fit32 = jnp.asarray(fitness_P, jnp.float32)
        pbt = PBTState(space=state.space, key=state.key)
        _, parents, copied, explored, hp = PBT.device_update(
            self, pbt, step, fit32, hparams, groups_P, frozen
        )
        state, hp = self.explore_gp(state, step, fitness_P, hparams, parents, explored, hp, frozen)
        return state, parents, copied, explored, hp

    def explore_gp(self, state, step, fitness_P, hparams, parents, explored, hp, frozen=()):
        """Records the intervals that ended at ``step`` and, with ``min_data`` observations,
        replaces the explored members' values (PBT's ``hp``) by the GP's batch picks; returns
        ``(state, hp)``. Pure; computes in the data's precision (:func:`_explore_gp`, jitted
        once per settings for every strategy object)."""
        settings = GPSettings(
            self.config.candidates,
            self.config.fit_steps,
            self.config.kappa,
            self.config.normalise,
            self.min_data(len(state.space.searched)),
        )
        args = (state, step, fitness_P, hparams, parents, explored, hp)
        return _explore_gp(settings, *args, frozen=tuple(frozen))

    @functools.cached_property
    def _jitted(self):
        """PBT's decision (exploit, and explore's fallback perturbation), jitted once."""
        return jax.jit(functools.partial(PBT.device_update, self), static_argnames="frozen")

    def update(self, state: PB2State, obs: Observation) -> tuple[PB2State, PopulationUpdate]:
        fit = obs.fitness()
        if len(state.last_fit) != len(fit):
            raise ValueError(
                f"strategy update: pb2 has {len(state.last_fit)} members but the population "
                f"has {len(fit)}"
            )
        space = state.space
        fit32 = fit.astype(np.float32)
        searched = {k: np.asarray(obs.hparams[k], np.float32) for k in space.searched}
        pbt_state = PBTState(space=space, key=state.key)
        _, parents, copied, explored, hp = jax.device_get(
            self._jitted(
                pbt_state, np.int32(obs.step), fit32, searched, obs.groups, frozen=obs.frozen
            )
        )
        view = _view(state, len(fit))
        with gp.x64():
            out, hp = jax.device_get(
                self.explore_gp(
                    view, np.int32(obs.step), fit, searched, parents, explored, hp, obs.frozen
                )
            )
        state = _absorb(state, view, out)
        if not self.ready(obs.step):
            return state, PopulationUpdate()
        parents, copied, explored = np.asarray(parents), np.asarray(copied), np.asarray(explored)
        rng = np.random.default_rng([*np.ravel(state.key).tolist(), int(obs.step)])
        hp = {k: np.asarray(v) for k, v in space.complete(hp, rng).items()}
        events = lineage_events(obs, fit32, parents, copied, explored, hp)
        upd = PopulationUpdate(
            parents=parents if copied.any() else None,
            hparams=hp if explored.any() else None,
            events=events,
        )
        return state, upd


class GPSettings(NamedTuple):
    """The settings the GP's explore reads (hashable: a static argument of its jit)."""

    candidates: int
    fit_steps: int
    kappa: float | None
    normalise: str
    min_data: int


@functools.partial(jax.jit, static_argnames=("settings", "frozen"))
def _explore_gp(settings, state, step, fitness_P, hparams, parents, explored, hp, frozen=()):
    """:meth:`PB2.explore_gp`."""
    space = state.space
    dtype = state.X.dtype
    step = jnp.asarray(step, jnp.int32)
    fit = jnp.asarray(fitness_P, dtype)

    def unit(values):
        u = space.to_unit({k: jnp.asarray(values[k], dtype) for k in space.searched})
        return jnp.nan_to_num(jnp.asarray(u), nan=0.5).astype(dtype)

    state = _record(state, step, fit, unit(hparams))
    key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state.key), step), 2)
    data = (state.X, state.y, state.valid)
    use_gp = explored.any() & (state.valid.sum() >= settings.min_data)
    theta = jax.tree.map(lambda x: jnp.asarray(x, dtype), state.theta)
    u_now = unit(hp)
    picks, theta = jax.lax.cond(
        use_gp,
        lambda: propose(key, space, data, theta, step, u_now, explored, settings),
        lambda: (u_now, theta),
    )
    new = space.from_unit(picks, raw=True)
    out = {
        k: jnp.where(explored & use_gp, jnp.asarray(new[k], jnp.asarray(v).dtype), v)
        if k in space.searched and k not in frozen
        else v
        for k, v in hp.items()
    }
    out = conditions.complete_traced(space, out, jax.random.fold_in(key, 1))
    state = state.replace(
        last_fit=fit[parents].astype(state.last_fit.dtype),
        last_step=step,
        theta=jax.tree.map(lambda x, old: x.astype(jnp.asarray(old).dtype), theta, state.theta),
    )
    return state, out


def _record(state: PB2State, step, fit_P, u_PxD) -> PB2State:
    """The state with the members' last intervals written into the ring buffer (a member
    counts when both ends of its interval are finite)."""
    W = state.y.shape[0]
    dt = step - state.last_step
    last = state.last_fit.astype(fit_P.dtype)
    ok = jnp.isfinite(last) & jnp.isfinite(fit_P) & (dt > 0)
    pos = jnp.where(ok, (state.count + jnp.cumsum(ok) - 1) % W, W)  # W: dropped
    rows = jnp.concatenate([jnp.full((fit_P.shape[0], 1), step, u_PxD.dtype), u_PxD], axis=1)
    gain = jnp.where(ok, (last - fit_P) / jnp.maximum(dt, 1), 0.0)
    return state.replace(
        X=state.X.at[pos].set(rows.astype(state.X.dtype), mode="drop"),
        y=state.y.at[pos].set(gain.astype(state.y.dtype), mode="drop"),
        valid=state.valid.at[pos].set(True, mode="drop"),
        count=(state.count + ok.sum()).astype(jnp.int32),
    )


def _view(state: PB2State, P: int) -> PB2State:
    """The host's working copy: the valid rows oldest first, padded to a power of two with room
    for one more observation, in float64 (the GP's cost follows the data, not ``window``)."""
    idx = state.ordered()
    n, D1 = len(idx), state.X.shape[1]
    B = gp.bucket(n + P)
    X, y, valid = np.full((B, D1), 0.5), np.zeros(B), np.zeros(B, bool)
    X[:n], y[:n], valid[:n] = np.asarray(state.X)[idx], np.asarray(state.y)[idx], True
    return state.replace(
        X=X,
        y=y,
        valid=valid,
        count=np.asarray(n, np.int32),
        last_fit=np.asarray(state.last_fit, np.float64),
        theta=jax.tree.map(lambda x: np.asarray(x, np.float64), state.theta),
    )


def _absorb(state: PB2State, view: PB2State, out: PB2State) -> PB2State:
    """``state`` advanced by what the decision on ``view`` recorded and fitted."""
    n, k = int(view.count), int(out.count) - int(view.count)
    W = len(state.y)
    pos = (int(state.count) + np.arange(k)) % W
    X, y, valid = (np.array(a) for a in (state.X, state.y, state.valid))
    X[pos], y[pos], valid[pos] = np.asarray(out.X)[n : n + k], np.asarray(out.y)[n : n + k], True
    return state.replace(
        X=X,
        y=y,
        valid=valid,
        count=np.asarray(int(state.count) + k, np.int32),
        last_fit=np.asarray(out.last_fit, np.float32),
        last_step=np.asarray(out.last_step, np.int32),
        theta=jax.tree.map(lambda x: np.asarray(x, np.float32), out.theta),
    )
