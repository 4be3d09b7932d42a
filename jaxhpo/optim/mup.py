"""µP's per-layer learning rates, the optimizer's side of µP (:mod:`jaxhpo.models.mup`).

A model under µP tags every parameter it creates with ``mup_role`` (:data:`ROLES`) and
``mup_width_mult`` metadata; :func:`with_lr_multipliers` wraps an optax transform so that it
multiplies each parameter's final update by the multiplier its optimizer's table entry gives
(:attr:`~jaxhpo.optim.base.OptimizerEntry.mup`: µP's Adam or SGD rule). The tags live in the
pytree structure of ``nnx.State`` (not in the arrays), so they travel through ``jax.grad``,
``vmap``, ``scan`` and checkpoints; parameters without tags (standard parametrization, plain
pytrees) are left exactly unchanged. Scaling the whole update also scales decoupled weight decay,
as ``mup``'s ``MuAdamW`` does (it scales the parameter group's learning rate).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxhpo.optim.base import MUP_ADAM, ROLES
from jaxhpo.optim.table import mup_rule

#: The metadata keys of a µP parameter.
ROLE_KEY = "mup_role"
WIDTH_KEY = "mup_width_mult"

__all__ = ["ROLES", "lr_multiplier", "lr_multipliers", "scale_updates", "with_lr_multipliers"]


def lr_multiplier(role: str | None, width_mult: float, optimizer: str) -> float:
    """µP's learning-rate multiplier for a parameter.

    Args:
        role: ``"hidden"``, ``"vector"``, ``"readout"``, or None (an untagged parameter: 1).
        width_mult: ``d_model / base_width``.
        optimizer: The optimizer name; its table entry's ``mup`` rule decides (µP's SGD rule
            for sgd, momentum, nesterov and their ``_hd`` forms); a name not in the table is
            treated as scale-invariant like Adam.

    Returns:
        The multiplier of the parameter's update.
    """
    return (mup_rule(optimizer) or MUP_ADAM).multiplier(role, width_mult)


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def lr_multipliers(params: Any, optimizer: str) -> list[float]:
    """The multiplier of every leaf of ``params`` (in ``jax.tree.leaves`` order), from the
    ``mup_role`` / ``mup_width_mult`` metadata of its ``nnx.Variable`` (1 where untagged)."""
    rule = mup_rule(optimizer) or MUP_ADAM
    out = []
    for node in jax.tree.leaves(params, is_leaf=_is_variable):
        meta = node.get_metadata() if _is_variable(node) else {}
        out.append(rule.multiplier(meta.get(ROLE_KEY), meta.get(WIDTH_KEY, 1.0)))
    return out


def scale_updates(updates: Any, optimizer: str) -> Any:
    """Multiplies each leaf of ``updates`` (an ``nnx.State`` carrying µP metadata) by its
    :func:`lr_multiplier`; untagged leaves are returned untouched."""
    leaves, treedef = jax.tree.flatten(updates)
    mults = lr_multipliers(updates, optimizer)
    if len(mults) != len(leaves):  # a Variable with more than one array leaf
        raise ValueError("mup: cannot match parameter metadata to update leaves")
    scaled = [u if m == 1.0 else u * jnp.asarray(m, u.dtype) for u, m in zip(leaves, mults)]
    return jax.tree.unflatten(treedef, scaled)


def with_lr_multipliers(
    tx: optax.GradientTransformation, optimizer: str
) -> optax.GradientTransformationExtraArgs:
    """Wraps ``tx`` so that its updates get µP's per-layer learning-rate multipliers.

    The state is ``tx``'s own (so ``opt_state.hyperparams`` and checkpoints are unchanged); the
    multipliers are read from the metadata of the update tree, so a model without µP tags, or a
    plain pytree, is updated exactly as by ``tx``. optax has per-parameter learning rates only
    through ``optax.multi_transform`` over a label tree, which needs the labels when the
    optimizer is built; the population builds one template optimizer before any model exists,
    so the labels travel with the parameters instead.

    Args:
        tx: Any optax transform (e.g. from :func:`jaxhpo.optim.make_optimizer`).
        optimizer: Its optimizer name (its table entry's ``mup`` rule).

    Returns:
        A transform with the same ``init`` and state.
    """

    def update(updates, state, params=None, **extra):
        updates, state = tx.update(updates, state, params, **extra)
        return scale_updates(updates, optimizer), state

    return optax.GradientTransformationExtraArgs(tx.init, update)
