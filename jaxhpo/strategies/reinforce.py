"""RL-based search: a policy over the space trained with REINFORCE (``strategy.name: rl``).

The controller of Zoph & Le 2017 ("Neural Architecture Search with Reinforcement Learning",
ICLR, arXiv:1611.01578), reduced to what a hyperparameter space needs: each generation the
policy samples the population's ``P`` configurations, the population trains them as fresh
members, and the policy takes a REINFORCE step (Williams 1992, "Simple statistical
gradient-following algorithms for connectionist reinforcement learning", Machine Learning 8) on
their rewards with a moving-average baseline:

    grad = 1/P * sum_k (R_k - b) / s * grad log pi(a_k),        b <- beta * b + (1 - beta) * mean(R)

where ``R_k`` is minus the member's fitness (diverged members: the worst finite fitness plus the
range, :func:`jaxhpo.strategies.evo.shape_fitness`), ``b`` the exponential moving average of
earlier generations' mean reward (``strategy.baseline_decay`` = ``beta``; the first generation
uses its own mean) and ``s`` the generation's reward standard deviation (so one learning rate fits
losses of any scale). ``optax.adam(strategy.learning_rate)`` applies the step, maximising the
objective plus ``strategy.entropy`` times the policy's entropy.

**Policy.** A factorised distribution, one factor per searched dimension:

* ``Float`` dimensions (and ``Int`` ranges of more than :data:`MAX_CATEGORIES` values): a Gaussian
  over the dimension's *unconstrained* coordinate (``z = logit(u)`` of its unit coordinate, as in
  the evosax adapter) with a learned mean and log standard deviation, initially ``0`` (the centre
  of the range) and ``log(strategy.sigma_init)``; an ``Int`` decodes by rounding;
* ``Choice`` dimensions and ``Int`` ranges of at most :data:`MAX_CATEGORIES` values: a categorical
  distribution over the values with learned logits (initially uniform).

Explicit ``points`` and a warm start's best members (:mod:`jaxhpo.strategies.warm`) are the first
generation's first members; they enter the REINFORCE step like sampled ones (their actions are
their coordinates), and the Gaussian means start at their mean (as the evosax adapter's mean does).

**Randomness.** Generation ``g`` samples with ``jax.random.fold_in(jax.random.key(seed), g)``.

**State.** :class:`RLState` (numpy arrays and the space). The policy's structure (which
dimensions are Gaussian or categorical, the category mask) is a function of the space alone
(:func:`policy_structure`, cached), never kept on the strategy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from jaxhpo.space import Choice, Int, Space
from jaxhpo.strategies.base import Observation, PopulationUpdate, StrategyState, static
from jaxhpo.strategies.decision import check_proposed, generation_event, shape_fitness
from jaxhpo.strategies.warm import GenerationalConfig, GenerationalSearch, apply_points

#: ``Int`` ranges with at most this many values are categorical; wider ones are Gaussian.
MAX_CATEGORIES = 16
#: The logit of a padding category (a dimension with fewer values than the widest). Finite, not
#: ``-inf``: ``where`` passes the gradient of both branches, and ``0 * -inf`` would be NaN.
_MASKED = -1e9


def _categories(space: Space, name: str) -> list[Any] | None:
    dim = space[name]
    if isinstance(dim, Choice):
        return list(dim.values)
    if isinstance(dim, Int) and dim.high - dim.low + 1 <= MAX_CATEGORIES:
        return list(range(int(dim.low), int(dim.high) + 1))
    return None


@dataclasses.dataclass(frozen=True)
class PolicyStructure:
    """Which searched dimensions the policy draws how (a function of the space alone)."""

    cats: dict[str, list[Any] | None]  # name -> its categories (None: Gaussian)
    gauss: list[str]  # the Gaussian dimensions, in the space's order (Dc of them)
    discrete: list[str]  # the categorical dimensions, in the space's order (Dk of them)
    mask: jax.Array  # bool [Dk, K]: the categories each discrete dimension has
    K: int  # the widest categorical dimension's count (1 when none)


@functools.lru_cache(maxsize=64)
def policy_structure(space: Space) -> PolicyStructure:
    """The policy's :class:`PolicyStructure` over ``space`` (cached per space)."""
    cats = {n: _categories(space, n) for n in space.searched}
    gauss = [n for n in space.searched if cats[n] is None]
    discrete = [n for n in space.searched if cats[n] is not None]
    K = max([len(cats[n]) for n in discrete], default=1)
    mask = np.zeros((len(discrete), K), bool)
    for i, n in enumerate(discrete):
        mask[i, : len(cats[n])] = True
    return PolicyStructure(cats, gauss, discrete, jnp.asarray(mask), K)


class RLState(StrategyState):
    """REINFORCE's state: the policy, its optimizer, the baseline and the current actions."""

    space: Space = static()  # the search space (structure)
    seed: np.ndarray  # int64 []: the study's seed
    generation: np.ndarray  # int64 []: generations told so far
    params: dict[str, np.ndarray]  # the policy: mu [Dc], log_std [Dc], logits [Dk, K] (float64)
    opt: dict[str, Any]  # its Adam state, as flax.serialization.to_state_dict
    baseline: np.ndarray  # float64 []: moving average of the mean reward
    has_baseline: np.ndarray  # bool []: the baseline holds a generation's mean
    z: np.ndarray  # float64 [P, Dc]: the current members' Gaussian actions
    idx: np.ndarray  # int32 [P, Dk]: the current members' category indices


def log_prob(params, mask_DkxK, z_PxDc, idx_PxDk, act_PxDc=None, act_PxDk=None) -> jax.Array:
    """``log pi(a)`` of every member's action, ``[P]``; coordinates where ``act_*`` is False
    (inactive conditional dimensions: their draw never reached the member) are left out."""
    mu, log_std = params["mu"][None], params["log_std"][None]
    lp = -0.5 * ((z_PxDc - mu) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    logits = jnp.where(mask_DkxK, params["logits"], _MASKED)
    logp_DkxK = jax.nn.log_softmax(logits, axis=-1)
    cat = jnp.take_along_axis(logp_DkxK[None], idx_PxDk[..., None], axis=-1)[..., 0]
    lp = lp if act_PxDc is None else jnp.where(act_PxDc, lp, 0.0)
    cat = cat if act_PxDk is None else jnp.where(act_PxDk, cat, 0.0)
    return lp.sum(-1) + cat.sum(-1)


def entropy(params, mask_DkxK) -> jax.Array:
    gauss = jnp.sum(params["log_std"] + 0.5 * math.log(2 * math.pi * math.e))
    logits = jnp.where(mask_DkxK, params["logits"], _MASKED)
    logp = jax.nn.log_softmax(logits, axis=-1)
    cat = -jnp.sum(jnp.where(mask_DkxK, jnp.exp(logp) * logp, 0.0))
    return gauss + cat


@functools.partial(jax.jit, static_argnames=("size",))
def sample(key, params, mask_DkxK, size: int):
    """``size`` actions: ``z [size, Dc]`` and category indices ``idx [size, Dk]``."""
    kz, kc = jax.random.split(key)
    eps = jax.random.normal(kz, (size, params["mu"].shape[0]))
    z = params["mu"][None] + jnp.exp(params["log_std"])[None] * eps
    logits = jnp.where(mask_DkxK, params["logits"], _MASKED)
    idx = jax.random.categorical(kc, logits, axis=-1, shape=(size, logits.shape[0]))
    return z, idx


def reinforce_loss(params, mask_DkxK, z_PxDc, idx_PxDk, adv_P, entropy_weight, act=(None, None)):
    """``-(mean(adv * log pi(a)) + entropy_weight * H(pi))``: its gradient is REINFORCE's
    (``act``: the active coordinates of :func:`log_prob`)."""
    lp = log_prob(params, mask_DkxK, z_PxDc, idx_PxDk, *act)
    return -(jnp.mean(adv_P * lp) + entropy_weight * entropy(params, mask_DkxK))


@functools.cache
def policy_step(learning_rate: float):
    """The jitted REINFORCE step with ``optax.adam(learning_rate)`` (one program per learning
    rate and shape, shared by every strategy object)."""
    opt = optax.adam(learning_rate)

    @jax.jit
    def step(params, opt_state, mask_DkxK, z_PxDc, idx_PxDk, adv_P, entropy_weight, act):
        loss, g = jax.value_and_grad(reinforce_loss)(
            params, mask_DkxK, z_PxDc, idx_PxDk, adv_P, entropy_weight, act
        )
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


@dataclasses.dataclass(frozen=True)
class RLConfig(GenerationalConfig):
    """``strategy:`` settings of REINFORCE (and :class:`GenerationalConfig`'s)."""

    learning_rate: float = 0.2  # Adam on the policy's parameters
    baseline_decay: float = 0.8  # moving-average baseline of the reward, in [0, 1)
    entropy: float = 0.0  # entropy bonus weight
    sigma_init: float = 1.0  # initial std of the Gaussian policy, unconstrained coordinates

    def __post_init__(self):
        super().__post_init__()
        if not (np.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"strategy.learning_rate: must be > 0, got {self.learning_rate!r}")
        if not (0 <= self.baseline_decay < 1):
            raise ValueError(
                f"strategy.baseline_decay: must lie in [0, 1), got {self.baseline_decay!r}"
            )
        if not (np.isfinite(self.entropy) and self.entropy >= 0):
            raise ValueError(f"strategy.entropy: must be >= 0, got {self.entropy!r}")
        if not (np.isfinite(self.sigma_init) and self.sigma_init > 0):
            raise ValueError(f"strategy.sigma_init: must be > 0, got {self.sigma_init!r}")


class Reinforce(GenerationalSearch):
    """A REINFORCE-trained policy samples every generation (see the module docstring).

    Settings: :class:`RLConfig`.
    """

    name = "rl"
    Config = RLConfig
    State = RLState

    def __init__(self, config: RLConfig | None = None, /, *, metric: str = "loss", **fields):
        super().__init__(config, metric=metric, **fields)
        self.opt = optax.adam(self.config.learning_rate)

    # -- structure ---------------------------------------------------------------------------

    @staticmethod
    def _decode(space: Space, z: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
        s = policy_structure(space)
        P = z.shape[0]
        full = np.zeros((P, len(space.searched)))
        for j, n in enumerate(s.gauss):
            full[:, space.searched.index(n)] = z[:, j]
        cols = space.from_unconstrained(full, raw=True)  # emptied below, choices drawn
        for j, n in enumerate(s.discrete):
            cols[n] = np.asarray(s.cats[n], dtype=object)[idx[:, j]]
            with contextlib.suppress(TypeError, ValueError):  # numbers: float64 columns
                cols[n] = cols[n].astype(np.float64)
        return space.deactivate(cols)  # conditional dimensions: inactive ones emptied

    @staticmethod
    def _encode(space: Space, cols: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Actions ``(z, idx)`` of given configurations (every searched name)."""
        s = policy_structure(space)
        z = np.asarray(space.to_unconstrained(cols), np.float64)
        zg = np.stack([z[:, space.searched.index(n)] for n in s.gauss], -1)
        P = zg.shape[0]
        idx = np.zeros((P, len(s.discrete)), np.int32)
        for j, n in enumerate(s.discrete):
            lookup = {v: i for i, v in enumerate(s.cats[n])}
            idx[:, j] = [lookup.get(_py(v), 0) for v in np.asarray(cols[n]).ravel()]  # 0: empty
        return zg.reshape(P, len(s.gauss)), idx

    def _active(self, space, z: np.ndarray, idx: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """Which coordinates of the actions reached the members (conditional dimensions)."""
        s = policy_structure(space)
        act = space.active(self._decode(space, z, idx))
        P = z.shape[0]
        act_g = np.stack([act[n] for n in s.gauss], -1) if s.gauss else np.ones((P, 0))
        act_k = np.stack([act[n] for n in s.discrete], -1) if s.discrete else np.ones((P, 0))
        return jnp.asarray(act_g, bool), jnp.asarray(act_k, bool)

    def _template(self, params):
        return self.opt.init(params)

    def _opt_dict(self, params) -> dict[str, Any]:
        with _x64():
            return jax.device_get(serialization.to_state_dict(self._template(params)))

    # -- Strategy ----------------------------------------------------------------------------

    def init(self, seed: int, space: Space, size: int | None):
        if size is None or isinstance(size, bool) or size < 2:
            raise ValueError(
                f"population.size: the rl strategy needs at least 2 members, got {size}"
            )
        if not space.searched:
            raise ValueError("space: the rl strategy needs at least one searched dimension")
        s = policy_structure(space)
        P = int(size)
        seeded = self.seed(space, P)
        mu = np.zeros(len(s.gauss), np.float64)
        if seeded.points:
            centre = space.from_unit(np.full((P, len(space.searched)), 0.5))
            zg, _ = self._encode(space, apply_points(space, centre, seeded))
            for j, n in enumerate(s.gauss):  # only the names the points assign
                assigned = [i for i, p in enumerate(seeded.points) if n in p]
                if assigned:
                    mu[j] = zg[assigned, j].mean()
        params = {
            "mu": mu,
            "log_std": np.full((len(s.gauss),), math.log(self.config.sigma_init)),
            "logits": np.zeros((len(s.discrete), s.K)),
        }
        key = jax.random.fold_in(jax.random.key(seed), 0)
        with _x64():
            z, idx = sample(key, params, s.mask, P)
        z, idx = np.array(z, np.float64), np.array(idx, np.int32)
        cols = self._decode(space, z, idx)
        if seeded.points:  # their values exactly (a bound does not survive logit and back)
            cols = apply_points(space, cols, seeded)
            z_given, idx_given = self._encode(space, cols)
            n = len(seeded.points)
            z[:n], idx[:n] = z_given[:n], idx_given[:n]
        state = RLState(
            space=space,
            seed=np.asarray(seed, np.int64),
            generation=np.asarray(0, np.int64),
            params=jax.tree.map(np.asarray, params),
            opt=self._opt_dict(params),
            baseline=np.asarray(0.0),
            has_baseline=np.asarray(False),
            z=z,
            idx=idx,
        )
        return state, _full(space, cols)

    def update(self, state: RLState, obs: Observation) -> tuple[RLState, PopulationUpdate]:
        if not self.due(int(obs.step)):
            return state, PopulationUpdate()
        space = state.space
        s = policy_structure(space)
        z = np.asarray(state.z, np.float64).reshape(-1, len(s.gauss))
        idx = np.asarray(state.idx, np.int32).reshape(z.shape[0], len(s.discrete))
        P = z.shape[0]
        check_proposed(self.name, P, obs)
        raw = obs.fitness()
        reward = -shape_fitness(raw).astype(np.float64)
        mean = float(reward.mean())
        b = float(state.baseline) if bool(state.has_baseline) else mean
        sd = float(reward.std())
        adv = (reward - b) / (sd if sd > 0 else 1.0)
        with _x64():
            params = jax.tree.map(jnp.asarray, dict(state.params))
            opt_state = serialization.from_state_dict(self._template(params), state.opt)
            params, opt_state, _ = policy_step(self.config.learning_rate)(
                params,
                opt_state,
                s.mask,
                jnp.asarray(z),
                jnp.asarray(idx),
                jnp.asarray(adv),
                jnp.asarray(self.config.entropy),
                self._active(space, z, idx),
            )
        baseline = self.config.baseline_decay * b + (1 - self.config.baseline_decay) * mean
        g, seed = int(state.generation), int(state.seed)
        best, event = generation_event(obs, raw, g, "reinforce")
        current = self._decode(space, z, idx)
        event |= {
            "best": {k: _py(v[best]) for k, v in current.items()},
            "baseline": -baseline,
            "policy_std": {
                n: float(np.exp(v)) for n, v in zip(s.gauss, np.asarray(params["log_std"]))
            },
            "diverged": int(np.sum(~np.isfinite(raw))),
        }
        new_state = state.replace(
            generation=np.asarray(g + 1, np.int64),
            params=jax.tree.map(np.asarray, params),
            opt=jax.device_get(serialization.to_state_dict(opt_state)),
            baseline=np.asarray(baseline),
            has_baseline=np.asarray(True),
        )
        if self.last(obs):
            return new_state, PopulationUpdate(events=[event], done=True)
        key = jax.random.fold_in(jax.random.key(seed), g + 1)
        with _x64():
            nz, nidx = sample(key, params, s.mask, P)
        new_state = new_state.replace(z=np.asarray(nz, np.float64), idx=np.asarray(nidx, np.int32))
        hparams = self._decode(space, new_state.z, new_state.idx)
        return new_state, PopulationUpdate(reinit=np.ones(P, bool), hparams=hparams, events=[event])


def _full(space: Space, cols):
    """``cols`` with every other name of the space at its centre."""
    P = len(next(iter(cols.values())))
    full = space.from_unit(np.full((P, len(space.searched)), 0.5))
    full.update(cols)
    return full


@contextlib.contextmanager
def _x64():
    """The policy and its Adam state are float64: Adam divides by the root of the squared
    gradient, which would blow float32 round-off in an all-but-zero gradient (a category no member
    sampled) up to a full step."""
    with jax.enable_x64(True):
        yield


def _py(v: Any) -> Any:
    v = v.item() if isinstance(v, np.generic) else v
    return int(v) if isinstance(v, float) and v.is_integer() else v
