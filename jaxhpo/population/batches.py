"""One member's training batch: the task's batch at the member's step, then transforms.

Built once per population from what the run uses (:func:`make_member_batch`), so the member
step (:mod:`jaxhpo.population.step`) has no branch for any of them:

* the draw: the task's ``train_batch(data, step)``, with the member's fold under k-fold
  cross-validation (its held-out rows are never drawn) and its batch size under epochs (its rows
  lead the batch, so that an epoch is ``epoch_size / b`` steps);
* :func:`first_rows`: a per-member batch size ``b`` weighs only the first ``b`` rows;
* :func:`data_shard`: this device's slice of the batch on the ``data`` mesh axis, with its own
  dropout key; :func:`data_combine` makes the whole batch's gradient from the slices'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def first_rows(batch: dict, size: jax.Array) -> dict:
    """The batch with only its first ``size`` rows weighted: the loss (a weighted mean) is then
    the mean over those rows. Training data, dropout masks and rows are drawn so that the first
    ``b`` rows of a batch of ``B`` equal a batch of ``b`` (threefry's counters are
    positional), so such a member trains as it would alone with batch size ``b``."""
    w = batch["weights"]
    keep = (jnp.arange(w.shape[0]) < size).astype(w.dtype)
    return {**batch, "weights": w * keep.reshape((-1,) + (1,) * (w.ndim - 1))}


def data_shard(batch: Any, key: jax.Array, n: int) -> tuple[Any, jax.Array]:
    """This data device's slice of a member's batch (inside ``shard_map`` over ``data``), and
    its own dropout key (the slices draw independent masks)."""
    i = jax.lax.axis_index("data")
    size = jax.tree.leaves(batch)[0].shape[0] // n

    def part(x):
        return jax.lax.dynamic_slice_in_dim(x, i * size, size, axis=0)

    return jax.tree.map(part, batch), jax.random.fold_in(key, i)


def slice_weight(batch: Any) -> jax.Array:
    """What one slice's loss counts for: its target weights' sum (a task's loss is
    ``sum(w * l) / max(sum(w), 1)``), or its rows for a batch without ``weights`` (a mean)."""
    if isinstance(batch, dict) and "weights" in batch:
        return jnp.asarray(batch["weights"], jnp.float32).sum()
    return jnp.asarray(jax.tree.leaves(batch)[0].shape[0], jnp.float32)


def data_combine(grads: Any, aux: dict, batch: Any) -> tuple[Any, dict]:
    """The gradient (and reported values) of the whole batch from the slices': each slice's
    value is re-weighted by its :func:`slice_weight` before the ``psum`` over ``data``."""
    w = slice_weight(batch)
    total = jnp.maximum(jax.lax.psum(w, "data"), 1.0)
    scale = jnp.maximum(w, 1.0) / total if "weights" in batch else w / total
    grads = jax.lax.psum(jax.tree.map(lambda g: g * scale.astype(g.dtype), grads), "data")
    aux = {k: jax.lax.psum(v * scale, "data") for k, v in aux.items()}
    return grads, aux


def make_member_batch(population: Any) -> Callable[[Any, Any], tuple[Any, jax.Array]]:
    """``member_batch(m, train_data) -> (batch, dropout key)`` for ONE member ``m``, composed of
    the draw and the transforms this population uses (see the module docstring)."""
    task = population.task
    folds = population.folds > 1
    epochs = population.epoch_size is not None

    def draw(m, train_data):
        fold = m.fold if folds else None
        if epochs:  # epoch semantics depend on the member's batch size: its rows lead
            b = population.member_batch_size(m.hparams).astype(jnp.int32)
            return task.train_batch(train_data, m.step, fold, member_batch=b)
        if folds:
            return task.train_batch(train_data, m.step, fold)
        return task.train_batch(train_data, m.step)

    transforms: list[Callable] = []
    fixed_b = population.fixed.get("batch_size")
    if population.max_batch and fixed_b != population.max_batch:  # without weights: whole batch
        transforms.append(
            lambda batch, key, m: (
                first_rows(batch, m.hparams["batch_size"]) if "weights" in batch else batch,
                key,
            )
        )
    if population.data_devices > 1:
        n = population.data_devices
        transforms.append(lambda batch, key, m: data_shard(batch, key, n))

    def member_batch(m, train_data):
        batch = draw(m, train_data)
        key = jax.random.fold_in(jax.random.wrap_key_data(m.key), m.step)
        for transform in transforms:
            batch, key = transform(batch, key, m)
        return batch, key

    return member_batch
