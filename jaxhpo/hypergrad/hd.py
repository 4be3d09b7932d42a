"""Online hypergradient descent (Baydin, Cornish, Martinez Rubio, Schmidt & Wood 2018,
"Online Learning Rate Adaptation with Hypergradient Descent", arXiv:1703.04782).

The learning rate ``alpha`` lives in the optimizer state and is itself updated by gradient
descent on the training loss: a step is ``theta_t = theta_{t-1} - alpha_t * d_t`` where ``d_t``
is the base optimizer's direction (the gradient for SGD, ``g + mu v`` for Nesterov momentum, the
bias-corrected ``m / (sqrt(v) + eps)`` for Adam). Since ``d theta_{t-1} / d alpha = -d_{t-1}``,

    alpha_t = alpha_{t-1} + beta * <g_t, d_{t-1}>,

with ``g_t`` the gradient at ``theta_{t-1}`` and ``beta`` the hypergradient learning rate. With
``beta = 0`` the transforms equal ``optax.sgd``, ``optax.sgd(nesterov=True)`` and ``optax.adam``.

Every numeric argument may be a traced array, so ``optax.inject_hyperparams`` over these
factories puts ``learning_rate`` (``alpha_0``) and ``hyper_lr`` (``beta``) in the state as
per-member arrays under ``jax.vmap``. ``alpha_0`` is read at the *first update* (not at
``init``), so setting the injected ``learning_rate`` after ``init`` (as
:func:`jaxhpo.optim.init_opt_state` does) takes effect. An optional ``shape`` callable
``count -> factor`` multiplies every step (a warmup/decay shape on top of the adapted rate); the
stored direction then includes the factor, so the hypergradient stays exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

Array = jax.Array


class HDState(NamedTuple):
    """State of :func:`hypergradient_descent`."""

    alpha: Array  # float32 scalar: the learning rate used by the last step
    direction: Any  # pytree like params: d_{t-1} (times the shape factor), zeros at first
    count: Array  # int32 scalar: updates taken
    inner_state: Any  # the direction transform's state


def hypergradient_descent(
    direction: optax.GradientTransformation,
    learning_rate: ArrayLike,
    hyper_lr: ArrayLike,
    shape: Callable[[Array], Array] | None = None,
) -> optax.GradientTransformation:
    """Wraps a direction transform (``scale_by_*``, no learning rate) with an HD learning rate.

    Args:
      direction: transform whose output ``d_t`` is the (positive) descent direction.
      learning_rate: ``alpha_0`` (may be traced).
      hyper_lr: ``beta``, the hypergradient step size (may be traced; 0 = plain optimizer).
      shape: optional ``count -> factor`` multiplying every step (schedule shape).

    Returns:
      A ``GradientTransformation`` whose updates are ``-alpha_t * shape(t) * d_t``.
    """

    def init_fn(params):
        return HDState(
            alpha=jnp.asarray(learning_rate, jnp.float32),
            direction=optax.tree.zeros_like(params),
            count=jnp.zeros((), jnp.int32),
            inner_state=direction.init(params),
        )

    def update_fn(updates, state, params=None):
        grads = updates
        prev = jnp.where(state.count == 0, jnp.asarray(learning_rate, jnp.float32), state.alpha)
        hypergrad = optax.tree.vdot(grads, state.direction)  # -dL/dalpha
        alpha = prev + jnp.asarray(hyper_lr, jnp.float32) * hypergrad.astype(jnp.float32)
        d, inner_state = direction.update(grads, state.inner_state, params)
        if shape is not None:
            factor = jnp.asarray(shape(state.count), jnp.float32)
            d = jax.tree.map(lambda x: factor * x, d)
        new_updates = jax.tree.map(lambda x: (-alpha * x).astype(x.dtype), d)
        new_state = HDState(
            alpha=alpha, direction=d, count=state.count + 1, inner_state=inner_state
        )
        return new_updates, new_state

    return optax.GradientTransformation(init_fn, update_fn)


def sgd_hd(learning_rate: ArrayLike, hyper_lr: ArrayLike) -> optax.GradientTransformation:
    """SGD-HD: ``alpha_t = alpha_{t-1} + beta <g_t, g_{t-1}>``, step ``-alpha_t g_t``."""
    return hypergradient_descent(optax.identity(), learning_rate, hyper_lr)


def nesterov_hd(
    learning_rate: ArrayLike, hyper_lr: ArrayLike, momentum: ArrayLike = 0.9
) -> optax.GradientTransformation:
    """SGD-Nesterov-HD: direction ``g_t + mu v_t`` with ``v_t = mu v_{t-1} + g_t`` (as
    ``optax.sgd(momentum=mu, nesterov=True)``)."""
    return hypergradient_descent(
        optax.trace(decay=momentum, nesterov=True), learning_rate, hyper_lr
    )


def adam_hd(
    learning_rate: ArrayLike,
    hyper_lr: ArrayLike,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
) -> optax.GradientTransformation:
    """Adam-HD: the hypergradient uses the previous Adam direction ``m_hat / (sqrt(v_hat) +
    eps)`` (as ``optax.adam``)."""
    return hypergradient_descent(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps), learning_rate, hyper_lr
    )


def current_lr(opt_state: Any) -> Array:
    """The adapted learning rate(s) ``alpha`` stored in a state that contains an
    :class:`HDState` (e.g. inside ``optax.inject_hyperparams`` / a chain); ``[P]`` for a
    vmapped population.

    Raises:
      ValueError: if the state holds no :class:`HDState`.
    """
    found = [
        s.alpha
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, HDState))
        if isinstance(s, HDState)
    ]
    if not found:
        raise ValueError("optim.optimizer: the state holds no hypergradient-descent state")
    return found[0]
