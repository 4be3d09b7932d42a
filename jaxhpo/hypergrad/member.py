"""One population member's training step and validation loss as differentiable functions of its
hyperparameters, for unrolled hypergradients on a :class:`jaxhpo.population.Population`.

The step mirrors ``Population._member_step`` (same batch at each step, same dropout key, same
divergence handling), except that the hyperparameters are *arguments*: the optimizer chain is
rebuilt from them with :func:`jaxhpo.optim.make_chain` (``differentiable=True``) and run on the
``inner_state`` of the member's injected optimizer state, so gradients flow to them. Training a
window this way equals the population's own segment with the same hyperparameters, up to
float32 round-off (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxhpo import optim


def member_hparams(population: Any, m: Any) -> dict[str, jax.Array]:
    """All hyperparameters of ONE member (no member axis), name -> scalar."""
    opt = optim.get_hparams(m.opt_state)
    return {**{k: opt[k] for k in population.opt_names}, **m.hparams}


def make_step(
    population: Any, train_data: Any, valid: jax.Array
) -> Callable[[Any, Mapping[str, jax.Array], jax.Array], tuple[Any, jax.Array]]:
    """``step_fn(m, hp, t) -> (m, ce)`` for ONE member state ``m``; steps ``t >= valid`` and
    stopped or diverged members are no-ops with a NaN loss (as in the population segment)."""
    task, graphdef = population.task, population.graphdef
    optimizer, schedule = population.optimizer, population.schedule
    opt_names, task_names = population.opt_names, population.task_names
    if population.data_devices > 1:
        raise ValueError(
            "population.data_devices: unrolled hypergradients do not split a member's batch "
            "over devices; use population.data_devices=1"
        )

    def do_step(m, hp):
        batch, key = population.member_batch(m, train_data)  # the segment's own batch and key
        task_hp = {k: hp[k] for k in task_names}

        def loss_fn(params):
            return task.loss(nnx.merge(graphdef, params), batch, task_hp, key)

        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(m.params)
        chain = optim.make_chain(
            optimizer, schedule, {k: hp[k] for k in opt_names}, differentiable=True
        )
        updates, inner = chain.update(grads, m.opt_state.inner_state, m.params)
        params = optax.apply_updates(m.params, updates)
        norms = jnp.stack([optax.tree.norm(updates), optax.tree.norm(params)])
        finite = jnp.isfinite(aux["ce"]) & jnp.all(jnp.isfinite(norms))
        sel = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        opt_state = m.opt_state._replace(
            inner_state=sel(inner, m.opt_state.inner_state),
            count=m.opt_state.count + finite.astype(m.opt_state.count.dtype),
        )
        new = m.replace(
            params=sel(params, m.params),
            opt_state=opt_state,
            step=m.step + finite.astype(jnp.int32),
            diverged=~finite,
        )
        return new, jnp.where(finite, aux["ce"], jnp.nan)

    def skip(m, hp):
        del hp
        return m, jnp.full_like(m.step, 0, jnp.float32) * jnp.nan

    def step_fn(m, hp, t):
        go = (t < valid) & m.active & ~m.diverged
        return jax.lax.cond(go, do_step, skip, m, hp)

    return step_fn


def make_val(population: Any, val_data: Any) -> Callable[[Any, Mapping[str, jax.Array]], Any]:
    """``val_fn(m, hp) -> scalar``: the member's mean validation loss (the task's metric)."""
    task, graphdef = population.task, population.graphdef

    def val_fn(m, hp):
        del hp
        data = val_data
        if population.folds > 1:  # k-fold: the member's own held-out fold
            data = jax.tree.map(lambda x: x[m.hparams["fold"].astype(jnp.int32)], val_data)
        return task.evaluate(nnx.merge(graphdef, m.params), data, m.hparams)["loss"]

    return val_fn
