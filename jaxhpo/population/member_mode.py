"""What ``population.mode=auto`` runs: the member-axis mode (and chunk size) fastest for the model
and the device, by a rule over one member's step cost.

On accelerators ``vmap`` wins (batched matmuls fill the device). On XLA:CPU it depends on how
much work one member's step is: a small step is dominated by per-operation overhead, which
``vmap`` pays once for all members, while a large step runs its matmuls ~2x slower batched than
one member at a time, so ``lax.map`` wins (measured side by side in one process, interleaved
best of N, on a 2-core CPU; ``scripts/results/member_mode_cpu.json``). One member's step cost is
estimated from abstract shapes (:func:`member_step_flops`), so choosing costs no compile.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

#: On CPU, ``vmap`` up to this many FLOPs per member step, ``lax.map`` above (measured).
CPU_VMAP_MAX_FLOPS = 5e7


@dataclasses.dataclass(frozen=True)
class ModeChoice:
    """A resolved member mode and why (recorded in ``run.json`` as ``member_mode_reason``)."""

    mode: str  # vmap | map | chunked
    chunk_size: int
    reason: str


def choose_mode(backend: str, step_flops: float | None, chunk_size: int = 4) -> ModeChoice:
    """The member mode for ``backend`` and one member's step of ``step_flops`` FLOPs.

    Args:
      backend: ``jax.default_backend()``.
      step_flops: one member's training step in FLOPs (:func:`member_step_flops`), or None.
      chunk_size: the chunk size to keep (``chunked`` is never picked by this rule).

    Returns:
      The :class:`ModeChoice`.
    """
    if backend != "cpu":
        return ModeChoice("vmap", chunk_size, f"auto: vmap on {backend}")
    if step_flops is None:
        return ModeChoice("map", chunk_size, "auto: map on cpu (step cost unknown)")
    gf, limit = step_flops / 1e9, CPU_VMAP_MAX_FLOPS / 1e9
    if step_flops <= CPU_VMAP_MAX_FLOPS:
        return ModeChoice(
            "vmap", chunk_size, f"auto: vmap on cpu ({gf:.3g} <= {limit:g} GFLOP/step)"
        )
    return ModeChoice("map", chunk_size, f"auto: map on cpu ({gf:.3g} > {limit:g} GFLOP/step)")


def _batch_shape(task: Any, train_data: Any) -> Any:
    """The shapes of the task's batch at step 0, from abstract data: the array leaves (numpy or
    JAX) are arguments of ``jax.eval_shape``, the others (ints, strings) stay as they are."""
    leaves, treedef = jax.tree.flatten(train_data)
    is_array = [hasattr(x, "shape") and hasattr(x, "dtype") for x in leaves]
    arrays = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x, a in zip(leaves, is_array) if a]

    def draw(arrays):
        it = iter(arrays)
        data = [next(it) if a else x for x, a in zip(leaves, is_array, strict=True)]
        return task.train_batch(jax.tree.unflatten(treedef, data), jnp.int32(0))

    return jax.eval_shape(draw, arrays)


def member_step_flops(population: Any, train_data: Any) -> float | None:
    """One member's training step, in FLOPs: ``6 x parameters x tokens per batch`` (forward and
    backward matmuls of a dense model; within ~25% of XLA's count for the built-in Transformer),
    from abstract shapes only: nothing is traced through the step or compiled. Tokens per
    batch: the largest integer leaf of a batch (token ids [B, L]: B * L), else its leading
    dimension. None when it cannot be had (no training data on the population's task)."""
    try:
        hp = {k: v[0] for k, v in population.full_hparams({}, 1).items()}
        member = jax.eval_shape(
            lambda: population._init_member(jax.random.key(0), jnp.int32(0), hp)
        )
        # the data as an argument: numpy arrays become abstract shapes (closed over, a task's
        # numpy indexing by the traced step fails with TracerArrayConversionError)
        batch = _batch_shape(population.task, train_data)
    except Exception:  # noqa: BLE001 - an estimate only: fall back to the backend's default
        return None
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(member.params))
    leaves = [x for x in jax.tree.leaves(batch) if x.ndim]
    ints = [math.prod(x.shape[:2]) for x in leaves if jnp.issubdtype(x.dtype, jnp.integer)]
    tokens = max(ints) if ints else max((x.shape[0] for x in leaves), default=0)
    flops = 6.0 * params * tokens
    return flops if flops > 0 else None
