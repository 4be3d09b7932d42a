"""The template transform of a built-in optimizer and the functions over its state.

* :func:`make_optimizer` returns the template transform for an optimizer + schedule pair: an
  ``optax.inject_hyperparams`` over a factory taking exactly :func:`hparam_names`, whose chain is
  the table entry's (:mod:`jaxhpo.optim.optimizers`) with the learning rate evaluated *inside*
  the chain from the traced hyperparameters (:func:`~jaxhpo.optim.schedules.schedule_value`), so
  editing ``opt_state.hyperparams`` changes behaviour without retracing or recompiling.
* :func:`make_chain` is the same chain with explicit (possibly traced) values, e.g. to
  differentiate through a step (:mod:`jaxhpo.hypergrad.unrolled`).
* :func:`init_opt_state` initialises a state and sets its hyperparameters; ``jax.vmap`` it over
  ``(params, hparams)`` to build a population, where every hyperparameter then has shape ``(P,)``.
* :func:`get_hparams` / :func:`set_hparams` read and functionally replace them (e.g. for the
  exploit/explore step of population-based training).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxhpo.optim.base import ChainInputs
from jaxhpo.optim.mup import with_lr_multipliers
from jaxhpo.optim.schedules import schedule_value
from jaxhpo.optim.table import defaults, hparam_names, optimizer_entry

Array = jax.Array


def _chain(
    optimizer: str,
    schedule: str | tuple[str, ...],
    hp: Mapping[str, Array],
    differentiable: bool = False,
) -> optax.GradientTransformation:
    """The table entry's chain with (traced) hyperparameters ``hp``."""
    inputs = ChainInputs(
        hp=hp,
        schedule=schedule,
        learning_rate=lambda count: schedule_value(schedule, count, hp),
        differentiable=differentiable,
    )
    return optimizer_entry(optimizer).chain(inputs)


def make_chain(
    optimizer: str,
    schedule: str | tuple[str, ...],
    hp: Mapping[str, ArrayLike],
    *,
    differentiable: bool = False,
) -> optax.GradientTransformation:
    """The optax chain of :func:`make_optimizer` with explicit (possibly traced) values.

    Its state is the ``inner_state`` of a :func:`make_optimizer` state, so a step can be taken
    with hyperparameters passed as arguments, e.g. to differentiate through it
    (:mod:`jaxhpo.hypergrad.unrolled`). Missing names take :data:`jaxhpo.optim.DEFAULTS`;
    values keep their dtype (float64 under ``jax_enable_x64``), unlike the float32 injected
    state. With ``differentiable=True`` the chain is safe to differentiate *through* (smooth
    clipping, ``eps_root`` in Adam's square root: :class:`~jaxhpo.optim.base.ChainInputs`); its
    state has the same structure.

    Raises:
        ValueError: If ``optimizer`` or ``schedule`` is unknown.
    """
    names = hparam_names(optimizer, schedule)
    table_defaults = defaults()
    values = {n: jnp.asarray(hp[n] if n in hp else table_defaults[n], float) for n in names}
    return _chain(optimizer, schedule, values, differentiable)


def make_optimizer(optimizer: str, schedule: str | tuple[str, ...]) -> optax.GradientTransformation:
    """Template transform whose hyperparameters all live in ``opt_state.hyperparams``.

    Built with ``optax.inject_hyperparams`` over a factory taking exactly
    :func:`hparam_names`; each is stored as a float32 array (initially
    :data:`jaxhpo.optim.DEFAULTS`).
    The learning rate is ``schedule_value(schedule, count, hyperparams)`` evaluated inside the
    chain, so any value in the state may change between steps without recompilation.

    The chain is the optimizer's table entry's (:data:`jaxhpo.optim.OPTIMIZER_TABLE`; each
    entry's ``doc`` gives its layout). Its updates get µP's per-layer learning-rate multipliers
    from the parameters' metadata (:func:`jaxhpo.optim.mup.with_lr_multipliers`, by the entry's
    ``mup`` rule): an exact identity for parameters without µP tags.

    Args:
        optimizer: A built-in optimizer (:data:`jaxhpo.optim.OPTIMIZERS`).
        schedule: A schedule (:data:`jaxhpo.optim.SCHEDULES`), or a tuple of them.

    Returns:
        The transform; its ``update`` needs ``params``.

    Raises:
        ValueError: If ``optimizer`` or ``schedule`` is unknown.
    """
    names = hparam_names(optimizer, schedule)

    def factory(**hp: Array) -> optax.GradientTransformation:
        return _chain(optimizer, schedule, hp)

    # inject_hyperparams binds arguments against the factory's signature, so give it the
    # exact keyword parameters instead of **hp.
    factory.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names]
    )
    factory.__name__ = f"{optimizer}_{schedule}"
    injected = optax.inject_hyperparams(factory, hyperparam_dtype=jnp.float32)
    table_defaults = defaults()
    return with_lr_multipliers(injected(**{n: table_defaults[n] for n in names}), optimizer)


def _hyperparams(opt_state: Any) -> dict[str, Array]:
    hyperparams = getattr(opt_state, "hyperparams", None)
    if not isinstance(hyperparams, Mapping):
        raise TypeError(
            "optim: expected a state from make_optimizer or OptimizerSpec.template() "
            f"(optax.inject_hyperparams) with a 'hyperparams' dict, got {type(opt_state).__name__}"
        )
    return dict(hyperparams)


def get_hparams(opt_state: Any) -> dict[str, Array]:
    """Hyperparameters stored in a state from :func:`make_optimizer`.

    Args:
        opt_state: The optimizer state (a single member's or a population's).

    Returns:
        A new dict from name to float32 array (shape ``(P,)`` for a vmapped population).

    Raises:
        TypeError: If the state has no ``hyperparams`` dict.
    """
    return _hyperparams(opt_state)


def set_hparams(opt_state: Any, values: Mapping[str, ArrayLike]) -> Any:
    """Functionally replace hyperparameter values in an optimizer state.

    Each value is cast to float32 and broadcast to the current entry's shape, so a scalar
    sets every member of a population and a ``(P,)`` array sets them individually.

    Args:
        opt_state: State from :func:`make_optimizer` (single member or population).
        values: Mapping from hyperparameter name to new value.

    Returns:
        A new state; ``opt_state`` is not modified.

    Raises:
        ValueError: If a name is not a hyperparameter of this optimizer, or a value cannot be
            broadcast to the stored shape.
        TypeError: If the state has no ``hyperparams`` dict.
    """
    hyperparams = _hyperparams(opt_state)
    unknown = sorted(set(values) - set(hyperparams))
    if unknown:
        raise ValueError(
            f"optim.hparams: unknown {', '.join(map(repr, unknown))} "
            f"(choose from {', '.join(hyperparams)})"
        )
    for name, value in values.items():
        old = hyperparams[name]
        new = jnp.asarray(value, jnp.float32)
        try:
            hyperparams[name] = jnp.broadcast_to(new, jnp.shape(old))
        except ValueError as err:
            raise ValueError(
                f"optim.hparams: {name!r} has shape {jnp.shape(new)}, expected one that "
                f"broadcasts to {jnp.shape(old)}"
            ) from err
    return opt_state._replace(hyperparams=hyperparams)


def init_opt_state(
    tx: optax.GradientTransformation,
    params: Any,
    hparams: Mapping[str, ArrayLike],
    defaults: Mapping[str, ArrayLike] | None = None,
) -> Any:
    """Initialise the state of ``tx`` for ``params`` with the given hyperparameters.

    Every hyperparameter of ``tx`` is set to a float32 scalar: the value in ``hparams`` or,
    if missing, the one in ``defaults``, else the template's own initial value
    (:data:`jaxhpo.optim.DEFAULTS` for :func:`make_optimizer`, ``spec.defaults`` for
    ``spec.template()``). Use ``jax.vmap(lambda p, h: init_opt_state(tx, p, h))(params,
    hparams)`` with per-member ``(P,)`` arrays to build a population.

    Args:
        tx: Transform from :func:`make_optimizer` or :meth:`OptimizerSpec.template`.
        params: Parameters of one member.
        hparams: Mapping from hyperparameter name to scalar value.
        defaults: Values of the names missing from ``hparams`` (e.g. ``spec.defaults``).

    Returns:
        The initialised optimizer state.

    Raises:
        ValueError: If ``hparams`` names something ``tx`` does not read, or a value is not a
            scalar.
    """
    state = tx.init(params)
    names = tuple(_hyperparams(state))
    unknown = sorted(set(hparams) - set(names))
    if unknown:
        raise ValueError(
            f"optim.hparams: unknown {', '.join(map(repr, unknown))} "
            f"(choose from {', '.join(names)})"
        )
    fallback = {**_hyperparams(state), **(defaults or {})}
    return set_hparams(state, {n: hparams[n] if n in hparams else fallback[n] for n in names})
