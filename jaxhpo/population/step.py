"""ONE member's training step, written once.

Every trainer in jaxhpo runs this function: the population's segment (``lax.scan`` of it over
steps, mapped over members), the compiled run, and the hypergradient estimators (unrolled,
implicit, PES), which call it with hyperparameters passed as differentiable arguments. It is
built from what the run uses:

* the member's batch at its step (:meth:`Population.member_batch`: its fold's draws under
  k-fold cross-validation, its first ``batch_size`` rows, its slice on the ``data`` axis);
* the gradient of the task's loss with respect to ``nnx.Param`` only. Every other piece of NNX
  state (batch statistics, caches, counters) is carried per member through the steps
  (:attr:`PopulationState.model_state`) and returned by the loss; RNG streams are not state:
  they are re-seeded at every step from the member's key and step, so randomness stays
  addressed (a member's dropout masks do not depend on the population or on a resume point,
  and a member that copies another by PBT's exploit draws its own masks from then on);
* the optimizer update, then one finiteness check of the loss, update and parameters: a member
  whose step is not finite keeps its state and is flagged diverged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

#: The training loss a task may report apart from the loss it minimises (e.g. the cross-entropy
#: without label smoothing): an entry of the metrics dict its ``loss`` returns.
TRAIN_LOSS = "train_loss"


class MemberModel:
    """How a task's NNX module is split into what a member carries.

    ``params`` (``nnx.Param``, differentiated and optimised), ``state`` (every other variable
    except RNG streams: batch statistics, caches) and RNG streams, which are made afresh from a
    key at every call (:meth:`merge`).

    Args:
      task: the task; ``task.init(key, hp)`` builds one member's module.
    """

    def __init__(self, task: Any):
        hp = {k: jnp.float32(v) for k, v in task.hparam_defaults.items()}
        abstract = nnx.eval_shape(lambda: task.init(jax.random.key(0), hp))
        if not isinstance(abstract, nnx.Module):
            raise TypeError(
                f"task.init: must return a flax.nnx.Module, got {type(abstract).__name__} "
                f"(task '{getattr(task, 'name', type(task).__name__)}')"
            )
        self.graphdef, params, rngs, _ = nnx.split(abstract, nnx.Param, nnx.RngState, ...)
        if not jax.tree.leaves(params):
            raise ValueError(
                f"task.init: the module of task '{getattr(task, 'name', '?')}' has no nnx.Param"
            )
        self._rng_leaves, self._rng_def = jax.tree.flatten(rngs)

    def split(self, module: nnx.Module) -> tuple[Any, Any]:
        """``(params, state)`` of a module: its ``nnx.Param`` and its other non-RNG variables."""
        _, params, _, state = nnx.split(module, nnx.Param, nnx.RngState, ...)
        return params, state

    def rngs(self, key: jax.Array) -> Any:
        """The module's RNG streams, each keyed by ``fold_in(key, i)`` with a zero count."""
        leaves = []
        for i, leaf in enumerate(self._rng_leaves):
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaves.append(jax.random.fold_in(key, i))
            else:
                leaves.append(jnp.zeros(leaf.shape, leaf.dtype))
        return jax.tree.unflatten(self._rng_def, leaves)

    def merge(self, params: Any, state: Any, key: jax.Array, *, train: bool) -> nnx.Module:
        """The member's module, in training mode (dropout on, batch statistics updated) or in
        evaluation mode (``module.eval()``: deterministic, running averages)."""
        module = nnx.merge(self.graphdef, params, self.rngs(key), state, copy=True)
        if train:
            module.train()
        else:
            module.eval()
        return module


def task_loss(
    task: Any,
    model: MemberModel,
    params: Any,
    state: Any,
    batch: Any,
    hp: Mapping[str, jax.Array],
    key: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, Any]]:
    """``(loss, (reported, new_state))`` of ONE member: the task's loss (a scalar, or a scalar
    and a metrics dict) in training mode; ``reported`` is the metrics' :data:`TRAIN_LOSS` or the
    loss itself; ``new_state`` the non-parameter state the forward pass left (batch stats)."""
    module = model.merge(params, state, key, train=True)
    out = task.loss(module, batch, hp, key)
    loss, metrics = out if isinstance(out, tuple) else (out, {})
    loss = jnp.asarray(loss)
    if loss.shape != ():
        raise ValueError(
            f"task.loss: must return a scalar (or a scalar and a metrics dict), got shape "
            f"{loss.shape}"
        )
    reported = jax.lax.stop_gradient(jnp.asarray(metrics.get(TRAIN_LOSS, loss), jnp.float32))
    _, new_state = model.split(module)
    return loss, (reported, new_state)


def _select(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def no_step(m: Any) -> tuple[Any, jax.Array]:
    """A member that does not step: unchanged, with a NaN loss derived from its own state (so
    the NaN has the member's sharding type inside ``shard_map``)."""
    return m, jnp.full_like(m.step, 0, jnp.float32) * jnp.nan


def member_step(
    population: Any,
    m: Any,
    train_data: Any,
    *,
    task_hp: Mapping[str, jax.Array] | None = None,
    update: Callable | None = None,
) -> tuple[Any, jax.Array]:
    """One optimizer step of ONE member (no member axis here).

    A member steps when it is active, not diverged and under its step limit (epochs); otherwise
    it is returned unchanged with a NaN loss (under ``lax.map`` such a member costs no work).

    Args:
      population: the :class:`~jaxhpo.population.Population` (task, model split, optimizer,
        batch transforms).
      m: the member's ``PopulationState`` (leaves without the member axis).
      train_data: the task's training data.
      task_hp: the task hyperparameters to train with (default: the member's own); the
        hypergradient estimators pass them as differentiable arguments.
      update: ``(grads, opt_state, params) -> (updates, opt_state)`` (default: the population's
        optimizer, reading its hyperparameters from the state).

    Returns:
      The new member state and its reported training loss (NaN when it did not step).
    """
    update = update or population.tx.update

    def do_step(m, go=True):
        batch, key = population.member_batch(m, train_data)
        hp = population.step_hparams(m.hparams) if task_hp is None else task_hp

        def loss_fn(params):
            return task_loss(
                population.task, population.model, params, m.model_state, batch, hp, key
            )

        (_, (reported, state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(m.params)
        if population.data_devices > 1:
            grads, reported, state = population.combine_data(grads, reported, state, batch)
        updates, opt_state = update(grads, m.opt_state, m.params)
        params = optax.apply_updates(m.params, updates)
        # One reduction instead of one per leaf: finite loss, finite update norm, finite
        # parameter norm (an overflow in params + updates shows up in the norm).
        norms = jnp.stack([optax.tree.norm(updates), optax.tree.norm(params)])
        finite = jnp.isfinite(reported) & jnp.all(jnp.isfinite(norms))
        keep = finite & go  # one select over the member's state decides both
        new = m.replace(
            params=_select(keep, params, m.params),
            opt_state=_select(keep, opt_state, m.opt_state),
            model_state=_select(keep, state, m.model_state),
            step=m.step + keep.astype(jnp.int32),
            diverged=m.diverged | (go & ~finite),
        )
        return new, jnp.where(keep, reported, jnp.nan)

    go = m.active & ~m.diverged
    if population.epoch_size is not None:
        go = go & (m.step < population.member_limit(m.hparams))
    if population.mode != "map":
        # Mapped by vmap (or in vmapped chunks) a per-member `cond` becomes a select over the
        # whole state after computing both branches: fold `go` into the step's own select.
        return do_step(m, go)
    return jax.lax.cond(go, do_step, no_step, m)  # under lax.map a real branch: no work


def member_evaluate(population: Any, params: Any, state: Any, data: Any, hp: Any) -> dict:
    """ONE member's metrics on a split (the task's ``evaluate_split``, in evaluation mode)."""
    module = population.model.merge(params, state, jax.random.key(0), train=False)
    return population.task.evaluate_split(module, data, population.step_hparams(hp))
