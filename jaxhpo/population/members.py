"""A population's state and the transforms over its member axis.

:class:`PopulationState` is one pytree whose every leaf has a leading member axis ``P``;
:func:`over_members` maps a one-member function over it (``vmap``, ``lax.map`` or ``lax.map``
in chunks); :func:`gather` / :func:`scatter` move whole members.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

MEMBER_MODES = ("auto", "vmap", "map", "chunked")


@struct.dataclass
class PopulationState:
    """Every leaf has a leading member axis ``P``.

    Attributes:
      params: the members' model parameters (``nnx.Param`` as an ``nnx.State``), leaves
        [P, ...].
      model_state: every other NNX variable of the members' modules except RNG streams
        (batch statistics, caches), carried through the steps (:mod:`jaxhpo.population.step`).
      opt_state: the optax state; ``opt_state.hyperparams[name]`` is float32 [P].
      hparams: task hyperparameters (dropout, attn_dropout, label_smoothing), float32 [P] each.
      member_id: stable member ids, int32 [P].
      fold: the member's held-out fold under k-fold cross-validation (0 without), int32 [P];
        at the interface (``init``, ``get_hparams``, ``set_hparams``, the tables) it is the
        column ``fold``.
      key: raw training keys (``jax.random.key_data``), uint32 [P, 2].
      step: optimizer steps taken by each member, int32 [P].
      active: members that train (False: stopped, costs no update), bool [P].
      diverged: members whose loss or parameters became NaN/inf, bool [P].
    """

    params: Any
    model_state: Any
    opt_state: Any
    hparams: dict[str, jax.Array]
    member_id: jax.Array
    fold: jax.Array
    key: jax.Array
    step: jax.Array
    active: jax.Array
    diverged: jax.Array

    @property
    def size(self) -> int:
        return int(self.member_id.shape[0])


def resolve_mode(mode: str) -> str:
    """``auto`` -> ``map`` on CPU, ``vmap`` on GPU/TPU: the fallback where nothing sizes the
    step (a :class:`~jaxhpo.population.Population` picks by its step's cost,
    :mod:`jaxhpo.population.member_mode`)."""
    if mode not in MEMBER_MODES:
        raise ValueError(
            f"population.mode: unknown '{mode}' (choose from {', '.join(MEMBER_MODES)})"
        )
    if mode == "auto":
        return "map" if jax.default_backend() == "cpu" else "vmap"
    return mode


def over_members(f: Callable, mode: str, chunk_size: int = 4) -> Callable:
    """Maps ``f`` over the leading member axis of its (pytree) argument."""
    mode = resolve_mode(mode)
    if mode == "vmap":
        return jax.vmap(f)
    if mode == "map":
        return lambda xs: jax.lax.map(f, xs)
    return lambda xs: jax.lax.map(f, xs, batch_size=chunk_size)


def gather(pop: PopulationState, idx: Any) -> PopulationState:
    """A new population made of members ``idx`` (ids and keys included)."""
    idx = jnp.asarray(idx)
    return jax.tree.map(lambda x: x[idx], pop)


_gather = jax.jit(gather)


def scatter(pop: PopulationState, idx: Any, src: PopulationState) -> PopulationState:
    """Writes the members of ``src`` into slots ``idx`` of ``pop``."""
    idx = jnp.asarray(idx)
    return jax.tree.map(lambda x, y: x.at[idx].set(y), pop, src)
