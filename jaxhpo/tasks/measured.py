"""Metrics the framework measures, so that objectives and constraints can name them without the
task writing them (issue 27): ``params``, ``flops`` and ``memory``.

* ``params`` (**exact**): the member's trainable parameters (``nnx.Param`` elements). In a masked
  super-model (``depth``, ``heads``, ``ff_width`` searched without buckets) it counts what the
  member's structure uses: the first ``depth`` blocks, ``heads`` heads of each attention and
  ``ff_width`` hidden units of each MLP (the masked rows and columns of ``qkv``, ``out``, ``up``
  and ``down``); with structure buckets each bucket's model is the member's shape.
* ``flops`` (**an estimate**): floating-point operations of one training step of the member,
  ``3 x 2 x (matmul parameters + attention) x tokens`` (Kaplan et al. 2020, "Scaling laws for
  neural language models", Table 1: the forward pass's ``2 N + 2 n_layer n_ctx d_attn`` per
  token, the backward pass twice the forward), where the matmul parameters are the active
  blocks' and the tied output projection's. For the project's Transformer tasks; a task of the
  user's own gives it by a ``step_flops(hp)`` method (a scalar; traced hyperparameters).
* ``memory`` (**an estimate**): peak bytes of one member's training step in float32: the
  weights, their gradients and Adam's two moments (``16 x params``), the activations kept for
  the backward pass, per active block ``2 x (18 s b h + 4 s b ff + 5 a s^2 b)`` (Korthikanti et
  al. 2022, "Reducing Activation Recomputation in Large Transformer Models", section 4.1, with
  the MLP written for any width ``ff``; ``a`` active heads), and the logits with their softmax
  and gradient (``12 s b V``). 0.90 to 1.06 of XLA's memory analysis of the compiled step
  (temporaries and arguments) on the three sizes the tests check. A task of the user's own
  gives it by ``step_memory(hp)``.

Step time is not among them: a measured time differs between two runs of one study, so
decisions made from it could not be replayed on resume; ``flops`` is its reproducible proxy
(the accelerator suite measures time per bucket instead).

Neither costs anything unless an objective or constraint names it: :func:`with_measured` wraps
the task only then (:func:`jaxhpo.run.prepare.make_task`), and the wrapper adds the names to
``metric_names`` and the values to every split's metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxhpo.models.transformer import TransformerConfig

#: Measured metric -> what it is (the docs and the one-line errors say it).
MEASURED = {
    "params": "trainable parameters of the member (exact)",
    "flops": "FLOPs of one training step (estimate: 6 x matmul parameters x tokens + attention)",
    "memory": "peak bytes of one training step (estimate: weights, gradients, Adam, activations)",
}


def requested(*sections: Iterable[str]) -> tuple[str, ...]:
    """The measured metrics that objectives or constraints name, in :data:`MEASURED`'s order."""
    named = {n for names in sections for n in names}
    return tuple(n for n in MEASURED if n in named)


def block_params(d_model: int, head_dim: int, heads: Any, ff_width: Any) -> Any:
    """One Transformer block's parameters using ``heads`` heads and ``ff_width`` hidden units
    (traced values allowed): attention ``qkv`` and ``out`` with their biases, the MLP's ``up``
    and ``down`` with theirs, two layer norms."""
    d, a = d_model, heads * head_dim
    attention = d * 3 * a + 3 * a + a * d + d
    mlp = d * ff_width + ff_width + ff_width * d + d
    return attention + mlp + 4 * d


def _active(hp: Mapping[str, Any], name: str, full: int) -> Any:
    """The masked super-model's active count: ``arange(full) < value`` is ``ceil(value)``."""
    if name not in hp:
        return full
    return jnp.clip(jnp.ceil(jnp.asarray(hp[name], jnp.float32)), 0, full)


def transformer_counts(cfg: TransformerConfig, hp: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """``(active blocks, one active block's parameters, the blocks' parameters at full size)``
    of the member whose structure ``hp`` gives (``depth``, ``heads``, ``ff_width``)."""
    depth = _active(hp, "depth", cfg.num_layers)
    heads = _active(hp, "heads", cfg.num_heads)
    ff = _active(hp, "ff_width", cfg.d_ff)
    block = block_params(cfg.d_model, cfg.head_dim, heads, ff)
    full = cfg.num_layers * block_params(cfg.d_model, cfg.head_dim, cfg.num_heads, cfg.d_ff)
    return depth, block, full


def param_count(task: Any, model: Any, hp: Mapping[str, Any]) -> jax.Array:
    """The member's trainable parameters (exact; module docstring), float32 []."""
    total = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    cfg = getattr(task, "model_config", None)
    if not isinstance(cfg, TransformerConfig):
        return jnp.float32(total)
    depth, block, full = transformer_counts(cfg, hp)
    return jnp.asarray(total - full + depth * block, jnp.float32)


def step_flops(task: Any, hp: Mapping[str, Any]) -> jax.Array:
    """FLOPs of one training step of the member (an estimate; module docstring), float32 []."""
    own = getattr(task, "step_flops", None)
    if own is not None:
        return jnp.asarray(own(hp), jnp.float32)
    cfg = task.model_config
    seq = int(getattr(task, "seq_len", cfg.max_len))
    depth, block, _ = transformer_counts(cfg, hp)
    heads = _active(hp, "heads", cfg.num_heads)
    matmul = depth * block + cfg.vocab_size * cfg.d_model  # blocks + the tied output projection
    attention = depth * seq * heads * cfg.head_dim  # per token, n_layer n_ctx d_attn
    tokens = task.batch_size * seq
    return jnp.asarray(3.0 * (2.0 * matmul + 2.0 * attention) * tokens, jnp.float32)


def step_memory(task: Any, model: Any, hp: Mapping[str, Any]) -> jax.Array:
    """Peak bytes of one training step of the member (an estimate; module docstring),
    float32 []."""
    own = getattr(task, "step_memory", None)
    if own is not None:
        return jnp.asarray(own(hp), jnp.float32)
    cfg = task.model_config
    s, b, h = int(getattr(task, "seq_len", cfg.max_len)), task.batch_size, cfg.d_model
    depth, _, _ = transformer_counts(cfg, hp)
    heads = _active(hp, "heads", cfg.num_heads)
    ff = _active(hp, "ff_width", cfg.d_ff)
    per_block = 2.0 * (18 * s * b * h + 4 * s * b * ff + 5 * heads * s * s * b)
    logits = 12.0 * s * b * cfg.vocab_size
    state = 16.0 * param_count(task, model, hp)
    return jnp.asarray(state + depth * per_block + logits, jnp.float32)


def can_estimate(task: Any, name: str) -> bool:
    """Whether ``task`` has an estimate of ``name`` (``flops``: :func:`step_flops`,
    ``memory``: :func:`step_memory`)."""
    return callable(getattr(task, f"step_{name}", None)) or isinstance(
        getattr(task, "model_config", None), TransformerConfig
    )


def can_estimate_flops(task: Any) -> bool:
    """Whether :func:`step_flops` has an estimate for ``task``."""
    return can_estimate(task, "flops")


class Measured:
    """``task`` with the measured metrics ``names`` added to its metrics (a thin wrapper: every
    other attribute is the task's)."""

    def __init__(self, task: Any, names: tuple[str, ...]):
        unknown = [n for n in names if n not in MEASURED]
        if unknown:
            raise ValueError(f"measured metric: unknown {unknown[0]!r} (choose from {MEASURED})")
        self._task = task
        self.measured = tuple(names)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    @property
    def task(self) -> Any:
        """The wrapped task."""
        return self._task

    @property
    def metric_names(self) -> tuple[str, ...]:
        return (*self._task.metric_names, *self.measured)

    def evaluate_split(self, model: Any, data: Any, hp: Any) -> dict[str, jax.Array]:
        metrics = dict(self._task.evaluate_split(model, data, hp))
        hp = hp or {}
        if "params" in self.measured:
            metrics["params"] = param_count(self._task, model, hp)
        if "flops" in self.measured:
            metrics["flops"] = step_flops(self._task, hp)
        if "memory" in self.measured:
            metrics["memory"] = step_memory(self._task, model, hp)
        return metrics


def with_measured(task: Any, names: tuple[str, ...], where: str = "strategy.objectives") -> Any:
    """``task`` reporting the measured metrics ``names`` too (itself when there are none).

    Raises:
      ValueError: one line naming ``where.flops`` (``where.memory``) for a task without a
        FLOP (memory) estimate.
    """
    names = tuple(n for n in names if n not in task.metric_names)
    if not names:
        return task
    for name, what in (("flops", "FLOP"), ("memory", "memory")):
        if name in names and not can_estimate(task, name):
            raise ValueError(
                f"{where}.{name}: task '{getattr(task, 'name', type(task).__name__)}' has no "
                f"{what} estimate (give it a step_{name}(hp) method, or report '{name}' from "
                "evaluate)"
            )
    return Measured(task, names)
