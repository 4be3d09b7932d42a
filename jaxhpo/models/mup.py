"""µP (maximal update parametrization) and initialization schemes as hyperparameters.

µP: Yang, Hu, Babuschkin, Sidor, Liu, Farhi, Ryder, Pachocki, Chen, Gao (2022), "Tensor
Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter Transfer",
arXiv:2203.03466. Under µP the best hyperparameters of a narrow model (learning rate,
initialization scale, ...) stay the best ones as the width grows, so they can be tuned on a
narrow model and transferred to a wide one (µTransfer).

This module follows the conventions of the authors' ``mup`` package (its Table 8 /
``MuReadout`` form, which is Table 3 of the paper rewritten with an output multiplier):

=================  ===========================  ==============  ==============  ===========
parameter          init std                     forward mult.   Adam lr mult.   SGD lr mult.
=================  ===========================  ==============  ==============  ===========
embeddings, biases constant in width            1               1               width_mult
and LayerNorm
hidden matrices    ∝ 1/sqrt(fan_in)             1               1/width_mult    1
readout (untied)   zero                         1/width_mult    1               width_mult
readout (tied)     the embedding's              1/width_mult    1 (embedding)   width_mult
attention logits   —                            1/head_dim      —               —
=================  ===========================  ==============  ==============  ===========

``width_mult = d_model / base_width``. At ``width_mult = 1`` every multiplier is 1 and µP is
the standard parametrization except for the zero-initialised readout, so a model tuned at the
base width keeps its hyperparameters. The attention scale is ``1/sqrt(head_dim *
width_mult)``, i.e. ``sqrt(base_head_dim) / head_dim``: ``1/head_dim`` up to a constant, equal to
the usual ``1/sqrt(head_dim)`` at the base width. A tied readout cannot be zero-initialised
(it is the input embedding): it keeps the embedding's init and lr and only gets the output
multiplier (the ``mup`` package's ``MuSharedReadout``); untie the embeddings for the
textbook form.

The per-layer learning rates reach the optimizer as *parameter metadata*: the model tags every
parameter it creates under µP with ``mup_role`` (``"hidden"``, ``"vector"`` or
``"readout"``) and ``mup_width_mult`` (:func:`metadata`); :func:`with_lr_multipliers`
(:mod:`jaxhpo.optim.mup`, re-exported here) wraps an optax transform so that it multiplies each
parameter's final update by :func:`lr_multiplier` of its tag. Which column of the table above an
optimizer uses (Adam's or SGD's) is its table entry's ``mup`` rule
(:data:`jaxhpo.optim.OPTIMIZER_TABLE`): SGD's for sgd, momentum, nesterov and their ``_hd``
forms, Adam's for the others. The tags live in the pytree structure of ``nnx.State`` (not in the
arrays), so they travel through ``jax.grad``, ``vmap``, ``scan`` and checkpoints; parameters
without tags (standard parametrization, plain pytrees) are left exactly unchanged.

Initialization as a hyperparameter: :data:`INIT_SCHEMES` are the distributions of a weight
matrix with ``fan_in`` inputs and ``fan_out`` outputs, times a per-member ``scale`` ``c``:

* ``normal``: ``N(0, (0.02 c)^2)``, the GPT-2 / BERT convention (the package default);
* ``truncated_normal``: LeCun normal, std ``c / sqrt(fan_in)`` after truncation at two
  standard deviations (``jax.nn.initializers.lecun_normal``);
* ``uniform``: LeCun uniform, ``U(-sqrt(3) s, sqrt(3) s)`` with ``s = c / sqrt(fan_in)``;
* ``xavier``: Glorot uniform, std ``c * sqrt(2 / (fan_in + fan_out))``;
* ``mup``: ``N(0, (0.02 c)^2 / width_mult)``: the GPT-2 init at the base width, variance
  ``∝ 1/fan_in`` beyond it (µP's hidden-weight init).

The scheme is a per-member choice too: :func:`kernel_init` takes it as a (possibly traced)
integer code into :data:`INIT_SCHEMES` and draws with ``lax.switch``; under ``vmap`` every
branch is drawn and one is selected, which costs nothing worth noting at initialization and
needs no recompile when the scheme changes. Embedding tables are drawn from ``N(0, (0.02
c)^2)`` under every scheme (their "fan-in" is a one-hot vector; µP wants their init constant
in width).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# The optimizer's side of µP (per-layer learning rates by each optimizer's table entry) lives in
# jaxhpo.optim.mup; its names are re-exported here, where the model side tags the parameters.
from jaxhpo.optim.mup import (
    ROLE_KEY,
    ROLES,
    WIDTH_KEY,
    lr_multiplier,
    lr_multipliers,
    scale_updates,
    with_lr_multipliers,
)

__all__ = [
    "BASE_STD",
    "INIT_SCHEMES",
    "PARAMETRIZATIONS",
    "ROLES",
    "embed_init",
    "init_std",
    "kernel_init",
    "lr_multiplier",
    "lr_multipliers",
    "metadata",
    "scale_updates",
    "scheme_index",
    "with_lr_multipliers",
    "zeros_init",
]

PARAMETRIZATIONS: tuple[str, ...] = ("standard", "mup")
#: Initialization schemes; a per-member scheme hyperparameter is an index into this tuple.
INIT_SCHEMES: tuple[str, ...] = ("normal", "truncated_normal", "uniform", "xavier", "mup")
#: The std of ``normal`` and of embeddings (GPT-2 / BERT), before the per-member scale.
BASE_STD = 0.02


def scheme_index(scheme: str, where: str = "model.init_scheme") -> int:
    """The code of an initialization scheme name.

    Raises:
        ValueError: One line naming ``where`` if the name is unknown.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"{where}: unknown {scheme!r} (choose from {', '.join(INIT_SCHEMES)})")
    return INIT_SCHEMES.index(scheme)


def init_std(scheme: str, fan_in: int, fan_out: int, scale: float, width_mult: float) -> float:
    """The standard deviation of a weight matrix drawn with ``scheme`` (see the module doc).

    Args:
        scheme: One of :data:`INIT_SCHEMES`.
        fan_in, fan_out: The matrix's input and output sizes.
        scale: The per-member multiplier ``c``.
        width_mult: ``d_model / base_width`` (used by ``mup`` only).

    Returns:
        The std as a Python float.
    """
    base = {
        "normal": BASE_STD,
        "truncated_normal": 1.0 / math.sqrt(fan_in),
        "uniform": 1.0 / math.sqrt(fan_in),
        "xavier": math.sqrt(2.0 / (fan_in + fan_out)),
        "mup": BASE_STD / math.sqrt(width_mult),
    }[INIT_SCHEMES[scheme_index(scheme)]]
    return base * scale


def _draws(width_mult: float) -> list[Callable]:
    """One unit-``scale`` sampler ``(key, shape, dtype) -> array`` per scheme, in order.

    jax's own initializers are used where they exist (LeCun / Glorot); ``normal`` is written
    as ``normal(key) * 0.02`` exactly as ``nnx.initializers.normal(0.02)`` does, so the
    default model's parameters are bit-identical to its former fixed initializer.
    """
    inits = jax.nn.initializers
    mup_std = BASE_STD / math.sqrt(width_mult)
    return [
        lambda k, s, d: jax.random.normal(k, s, d) * jnp.array(BASE_STD, d),
        inits.lecun_normal(),
        inits.variance_scaling(1.0, "fan_in", "uniform"),
        inits.xavier_uniform(),
        lambda k, s, d: jax.random.normal(k, s, d) * jnp.array(mup_std, d),
    ]


def _scaled(x: jax.Array, scale: Any) -> jax.Array:
    if isinstance(scale, int | float) and scale == 1.0:
        return x  # the default init stays bit-identical
    return x * jnp.asarray(scale, x.dtype)


def kernel_init(scheme: str | jax.Array, scale: Any, width_mult: float) -> Callable:
    """An initializer for a weight matrix ``[fan_in, fan_out]`` (flax's kernel layout).

    Args:
        scheme: A name from :data:`INIT_SCHEMES` (static), or an integer code into it that may be
            a traced (per-member) array; non-integer codes are rounded and clipped.
        scale: The multiplier ``c``: a Python float or a traced scalar array.
        width_mult: ``d_model / base_width`` (static; used by the ``mup`` scheme).

    Returns:
        ``init(key, shape, dtype)``, as flax initializers.
    """
    draws = _draws(width_mult)

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        if isinstance(scheme, str):
            w = draws[scheme_index(scheme)](key, shape, dtype)
        else:
            code = jnp.clip(jnp.round(jnp.asarray(scheme)), 0, len(draws) - 1).astype(jnp.int32)
            branches = [lambda k, f=f: f(k, shape, dtype) for f in draws]
            w = jax.lax.switch(code, branches, key)
        return _scaled(w, scale)

    return init


def embed_init(scale: Any) -> Callable:
    """``N(0, (0.02 c)^2)`` for embedding tables, under every scheme."""

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return _scaled(jax.random.normal(key, shape, dtype) * jnp.array(BASE_STD, dtype), scale)

    return init


def zeros_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """The µP readout's initializer."""
    del key
    return jnp.zeros(shape, dtype)


def metadata(role: str, width_mult: float, mup: bool) -> dict[str, Any]:
    """The ``*_metadata`` of a parameter: its µP role and width multiplier, or nothing."""
    if not mup:
        return {}
    if role not in ROLES:
        raise ValueError(f"mup role: unknown {role!r} (choose from {', '.join(ROLES)})")
    return {ROLE_KEY: role, WIDTH_KEY: float(width_mult)}
