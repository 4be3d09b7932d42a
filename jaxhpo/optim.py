"""Per-member optimizers whose hyperparameters are traced arrays.

A population is trained as one JAX program by ``jax.vmap``-ing a single training step over
the members. For that to work the optimizer has to be *one* template transform whose
hyperparameters (learning rate, schedule lengths, betas, weight decay, clipping norm, ...)
are ordinary float32 arrays stored in the optimizer state, not Python constants baked into
the traced program. This module builds such transforms with :func:`optax.inject_hyperparams`:

* :func:`make_optimizer` returns the template transform for an optimizer + schedule pair.
  Its factory takes exactly :func:`hparam_names` as arguments, and the learning-rate schedule
  is evaluated *inside* the chain from the traced hyperparameters with :func:`schedule_value`,
  so editing ``opt_state.hyperparams`` changes behaviour without retracing or recompiling.
* :func:`init_opt_state` initialises a state and sets its hyperparameters; ``jax.vmap`` it
  over ``(params, hparams)`` to build a population, where every hyperparameter then has shape
  ``(P,)``.
* :func:`get_hparams` / :func:`set_hparams` read and functionally replace them (e.g. for the
  exploit/explore step of population-based training).
* :func:`resolve` (from :mod:`jaxhpo.optim_factory`, re-exported here) gives the one
  :class:`OptimizerSpec` the population uses, for a built-in name (exactly the functions here)
  or for any optax factory (``optax.adamw``, ``optax.lion``, a function of yours returning a
  ``GradientTransformation``): its names, defaults, template and explicit-value chain. The
  state functions above work on its template's states too (``init_opt_state(...,
  defaults=spec.defaults)``).

Optax's own schedule constructors branch in Python on their arguments (e.g.
``optax.linear_schedule`` on ``transition_steps``), so they cannot take traced values; the
schedules here are written with ``jax.numpy`` only and are tested against optax's schedules at
fixed values.

Hyperparameters are float32 scalars per member, so parameters (and hence optimizer moments)
are expected to be float32 master weights; lower-precision parameters would be promoted to
float32 by the arithmetic with the hyperparameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxhpo._lazy import lazy_exports

Array = jax.Array

SCHEDULES: tuple[str, ...] = (
    "constant",
    "warmup_constant",
    "warmup_cosine",
    "warmup_linear",
    "warmup_exponential",
    "rsqrt",
    "cosine_restarts",
)

OPTIMIZERS: tuple[str, ...] = (
    "sgd",
    "momentum",
    "nesterov",
    "adam",
    "adamw",
    "lion",
    "adafactor",
    "sgd_hd",
    "nesterov_hd",
    "adam_hd",
)

DEFAULTS: dict[str, float] = {
    "lr": 1e-3,
    "warmup_steps": 0.0,
    "decay_steps": 1000.0,
    "min_lr_ratio": 0.0,
    "decay_rate": 0.5,
    "cycle_steps": 1000.0,
    "weight_decay": 0.0,
    "b1": 0.9,
    "b2": 0.999,
    "eps": 1e-8,
    "momentum": 0.9,
    "clip_norm": float("inf"),
    # Adafactor only (named apart from the exponential schedule's ``decay_rate``).
    "adafactor_decay_rate": 0.8,
    "clipping_threshold": 1.0,
    # Hypergradient descent (sgd_hd, nesterov_hd, adam_hd): the learning rate's own step size.
    "hd_beta": 0.0,
    # A member's choice (jaxhpo.choices): a code into the run's schedules / optimizers.
    "schedule": 0.0,
    "optimizer": 0.0,
}
"""Default value of every hyperparameter; ``clip_norm=inf`` means no clipping."""

_SCHEDULE_HPARAMS: dict[str, tuple[str, ...]] = {
    "constant": ("lr",),
    "warmup_constant": ("lr", "warmup_steps"),
    "warmup_cosine": ("lr", "warmup_steps", "decay_steps", "min_lr_ratio"),
    "warmup_linear": ("lr", "warmup_steps", "decay_steps", "min_lr_ratio"),
    "warmup_exponential": ("lr", "warmup_steps", "decay_steps", "decay_rate", "min_lr_ratio"),
    "rsqrt": ("lr", "warmup_steps"),
    "cosine_restarts": ("lr", "warmup_steps", "cycle_steps", "min_lr_ratio"),
}

_OPTIMIZER_HPARAMS: dict[str, tuple[str, ...]] = {
    "sgd": ("weight_decay", "clip_norm"),
    "momentum": ("weight_decay", "momentum", "clip_norm"),
    "nesterov": ("weight_decay", "momentum", "clip_norm"),
    "adam": ("weight_decay", "b1", "b2", "eps", "clip_norm"),
    "adamw": ("weight_decay", "b1", "b2", "eps", "clip_norm"),
    "lion": ("weight_decay", "b1", "b2", "clip_norm"),
    "adafactor": ("weight_decay", "adafactor_decay_rate", "clipping_threshold", "clip_norm"),
    "sgd_hd": ("weight_decay", "hd_beta", "clip_norm"),
    "nesterov_hd": ("weight_decay", "momentum", "hd_beta", "clip_norm"),
    "adam_hd": ("weight_decay", "b1", "b2", "eps", "hd_beta", "clip_norm"),
}

# Adafactor settings that are structural (they decide state shapes), kept static.
_ADAFACTOR_MIN_DIM_SIZE_TO_FACTOR = 128
_ADAFACTOR_EPS = 1e-30


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"optim.{field}: unknown {value!r} (choose from {', '.join(choices)})")


def _warmup_factor(step: Array, warmup: Array) -> Array:
    """Linear warmup factor ``min(step / warmup, 1)``; 1 everywhere when ``warmup <= 0``."""
    safe = jnp.where(warmup > 0, warmup, 1.0)
    return jnp.where(warmup > 0, jnp.clip(step / safe, 0.0, 1.0), 1.0)


def _decay_progress(step: Array, warmup: Array, decay_steps: Array) -> Array:
    """Fraction in [0, 1] of the decay phase ``[warmup, decay_steps]`` completed at ``step``.

    When ``decay_steps <= warmup`` the decay phase is empty and the progress is 1 (fully
    decayed) from the end of warmup on.
    """
    span = decay_steps - warmup
    safe = jnp.where(span > 0, span, 1.0)
    return jnp.where(span > 0, jnp.clip((step - warmup) / safe, 0.0, 1.0), 1.0)


def schedule_value(kind: str, step: ArrayLike, hp: Mapping[str, ArrayLike]) -> Array:
    """Learning rate of schedule ``kind`` at ``step``, as a pure ``jax.numpy`` function.

    Every argument may be traced (and batched under ``jax.vmap``); step counts such as
    ``warmup_steps`` are float arrays. ``warmup_steps <= 0`` means no warmup. Warmup is
    linear from 0 at step 0 to ``lr`` at step ``warmup_steps``. After warmup:

    * ``constant``: ``lr`` (no warmup).
    * ``warmup_constant``: ``lr``.
    * ``warmup_cosine``: cosine from ``lr`` to ``lr * min_lr_ratio`` over
      ``decay_steps - warmup_steps`` steps, then flat at ``lr * min_lr_ratio`` (equals
      ``optax.warmup_cosine_decay_schedule(0, lr, warmup_steps, decay_steps,
      lr * min_lr_ratio)``). If ``decay_steps <= warmup_steps`` it drops to the floor.
    * ``warmup_linear``: linear from ``lr`` to ``lr * min_lr_ratio`` by step ``decay_steps``,
      then flat (same degenerate case as ``warmup_cosine``).
    * ``warmup_exponential``: ``lr * decay_rate ** ((step - warmup_steps) / decay_steps)``,
      floored at ``lr * min_lr_ratio``; ``decay_steps <= 0`` means no decay (as optax).
    * ``rsqrt``: ``lr * sqrt(max(warmup_steps, 1) / max(step, warmup_steps, 1))``, i.e.
      inverse square-root decay that equals ``lr`` at the end of warmup.
    * ``cosine_restarts``: cosine from ``lr`` to ``lr * min_lr_ratio`` over each cycle of
      ``cycle_steps`` steps, restarting at ``lr`` (SGDR without warmup within cycles);
      cycles are counted from the end of warmup and are at least one step long.

    Args:
        kind: One of :data:`SCHEDULES`, or a tuple of them: a per-member choice, the code
            ``hp["schedule"]`` picks one (:func:`jaxhpo.choices.switch_schedule_value`).
        step: Update count (integer or float, possibly traced).
        hp: Hyperparameters; must contain the schedule's names from :func:`hparam_names`.

    Returns:
        The float32 learning rate, broadcast over the shapes of ``step`` and ``hp`` values.

    Raises:
        ValueError: If ``kind`` is unknown.
    """
    if not isinstance(kind, str):  # a per-member choice among schedules (jaxhpo.choices)
        from jaxhpo.choices import switch_schedule_value

        return switch_schedule_value(tuple(kind), step, hp)
    _check_choice("schedule", kind, SCHEDULES)

    def get(name: str) -> Array:
        return jnp.asarray(hp[name], float)  # float32 (float64 only under jax_enable_x64)

    s = jnp.asarray(step, float)
    lr = get("lr")
    if kind == "constant":
        return lr * jnp.ones_like(s)
    warmup = get("warmup_steps")
    ramp = lr * _warmup_factor(s, warmup)
    in_warmup = s < warmup
    if kind == "warmup_constant":
        return ramp
    if kind == "rsqrt":
        denom = jnp.maximum(jnp.maximum(s, warmup), 1.0)
        return jnp.where(in_warmup, ramp, lr * jnp.sqrt(jnp.maximum(warmup, 1.0) / denom))
    floor = lr * get("min_lr_ratio")
    if kind in ("warmup_cosine", "warmup_linear"):
        progress = _decay_progress(s, warmup, get("decay_steps"))
        if kind == "warmup_cosine":
            shape = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        else:
            shape = 1.0 - progress
        return jnp.where(in_warmup, ramp, floor + (lr - floor) * shape)
    if kind == "warmup_exponential":
        decay_steps = get("decay_steps")
        safe = jnp.where(decay_steps > 0, decay_steps, 1.0)
        exponent = jnp.where(decay_steps > 0, jnp.maximum(s - warmup, 0.0) / safe, 0.0)
        decayed = jnp.maximum(lr * jnp.power(get("decay_rate"), exponent), floor)
        return jnp.where(in_warmup, ramp, decayed)
    # cosine_restarts
    cycle = jnp.maximum(get("cycle_steps"), 1.0)
    frac = jnp.mod(jnp.maximum(s - warmup, 0.0), cycle) / cycle
    cosine = floor + (lr - floor) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    return jnp.where(in_warmup, ramp, cosine)


def hparam_names(optimizer: str, schedule: str) -> tuple[str, ...]:
    """Names of the hyperparameters read by an optimizer + schedule pair.

    The schedule's names come first (starting with ``lr``), then the optimizer's, ending with
    ``clip_norm``. E.g. ``hparam_names("adamw", "warmup_cosine")`` is ``("lr", "warmup_steps",
    "decay_steps", "min_lr_ratio", "weight_decay", "b1", "b2", "eps", "clip_norm")``.

    Args:
        optimizer: One of :data:`OPTIMIZERS`.
        schedule: One of :data:`SCHEDULES`, or a tuple of them (a per-member choice: the union
            of their names and the code ``schedule``, :mod:`jaxhpo.choices`).

    Returns:
        The names, in a fixed order, without duplicates.

    Raises:
        ValueError: If ``optimizer`` or ``schedule`` is unknown.
    """
    _check_choice("optimizer", optimizer, OPTIMIZERS)
    if not isinstance(schedule, str):  # a per-member choice among schedules (jaxhpo.choices)
        from jaxhpo.choices import schedule_choice_names

        return schedule_choice_names(tuple(schedule)) + _OPTIMIZER_HPARAMS[optimizer]
    _check_choice("schedule", schedule, SCHEDULES)
    return _SCHEDULE_HPARAMS[schedule] + _OPTIMIZER_HPARAMS[optimizer]


def _smooth_clip_by_global_norm(max_norm: Array) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` with finite derivatives everywhere: optax's form divides by
    the norm in the branch ``jnp.where`` drops, which makes NaN gradients *through* the step for
    ``max_norm = inf`` or a zero gradient. Same values otherwise."""

    def update_fn(updates, state, params=None):
        del params
        sq = sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(updates))
        norm = jnp.sqrt(jnp.maximum(sq, jnp.finfo(jnp.result_type(sq)).tiny))
        finite = jnp.isfinite(max_norm)
        safe_max = jnp.where(finite, max_norm, 1.0)
        scale = jnp.where(finite & (norm > safe_max), safe_max / norm, 1.0)
        return jax.tree.map(lambda x: (x * scale).astype(x.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _chain(
    optimizer: str, schedule: str, hp: Mapping[str, Array], differentiable: bool = False
) -> optax.GradientTransformation:
    """The optax chain for one optimizer with (traced) hyperparameters ``hp``.

    ``differentiable``: safe to differentiate *through* (hypergradients): clipping by
    :func:`_smooth_clip_by_global_norm` and Adam with ``eps_root=1e-30`` (finite derivative of
    the square root where a second moment is exactly 0); the forward values are the same."""
    lr_fn = lambda count: schedule_value(schedule, count, hp)
    eps_root = 1e-30 if differentiable else 0.0
    if differentiable:
        clip = _smooth_clip_by_global_norm(hp["clip_norm"])
    else:
        clip = optax.clip_by_global_norm(hp["clip_norm"])
    decay = optax.add_decayed_weights(hp["weight_decay"])
    lr = optax.scale_by_learning_rate(lr_fn)
    if optimizer.endswith("_hd"):
        return optax.chain(clip, decay, _hd(optimizer, schedule, hp, eps_root))
    if optimizer == "sgd":
        return optax.chain(clip, decay, lr)
    if optimizer in ("momentum", "nesterov"):
        trace = optax.trace(decay=hp["momentum"], nesterov=optimizer == "nesterov")
        return optax.chain(clip, decay, trace, lr)
    if optimizer in ("adam", "adamw"):
        adam = optax.scale_by_adam(b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], eps_root=eps_root)
        if optimizer == "adam":  # L2 penalty coupled into the gradient.
            return optax.chain(clip, decay, adam, lr)
        return optax.chain(clip, adam, decay, lr)  # Decoupled, as optax.adamw.
    if optimizer == "lion":
        return optax.chain(clip, optax.scale_by_lion(b1=hp["b1"], b2=hp["b2"]), decay, lr)
    # adafactor, laid out as optax.adafactor(learning_rate=..., weight_decay_rate=...).
    return optax.chain(
        clip,
        optax.scale_by_factored_rms(
            factored=True,
            decay_rate=hp["adafactor_decay_rate"],
            step_offset=0,
            min_dim_size_to_factor=_ADAFACTOR_MIN_DIM_SIZE_TO_FACTOR,
            epsilon=_ADAFACTOR_EPS,
        ),
        optax.clip_by_block_rms(hp["clipping_threshold"]),
        optax.scale_by_learning_rate(lr_fn, flip_sign=False),
        optax.scale_by_param_block_rms(),
        decay,
        optax.scale(-1.0),
    )


def _hd(
    optimizer: str, schedule: str, hp: Mapping[str, Array], eps_root: float = 0.0
) -> optax.GradientTransformation:
    """Hypergradient descent (:mod:`jaxhpo.hypergrad.hd`): ``lr`` is the initial rate
    ``alpha_0``, adapted in the state; the schedule's shape (its value divided by ``lr``)
    multiplies every step, so ``constant`` gives the plain algorithm of the paper."""
    from jaxhpo.hypergrad import hd

    lr0 = jnp.asarray(hp["lr"], float)

    def shape(count: Array) -> Array:
        value = schedule_value(schedule, count, hp)
        return jnp.where(lr0 != 0, value / jnp.where(lr0 != 0, lr0, 1.0), 0.0)

    if optimizer == "sgd_hd":
        direction = optax.identity()
    elif optimizer == "nesterov_hd":
        direction = optax.trace(decay=hp["momentum"], nesterov=True)
    else:
        direction = optax.scale_by_adam(b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], eps_root=eps_root)
    shape_fn = None if schedule == "constant" else shape
    return hd.hypergradient_descent(direction, lr0, hp["hd_beta"], shape=shape_fn)


def make_chain(
    optimizer: str, schedule: str, hp: Mapping[str, ArrayLike], *, differentiable: bool = False
) -> optax.GradientTransformation:
    """The optax chain of :func:`make_optimizer` with explicit (possibly traced) values.

    Its state is the ``inner_state`` of a :func:`make_optimizer` state, so a step can be taken
    with hyperparameters passed as arguments, e.g. to differentiate through it
    (:mod:`jaxhpo.hypergrad.unrolled`). Missing names take :data:`DEFAULTS`; values keep their
    dtype (float64 under ``jax_enable_x64``), unlike the float32 injected state. With
    ``differentiable=True`` the chain is safe to differentiate *through* (see :func:`_chain`);
    its state has the same structure.

    Raises:
        ValueError: If ``optimizer`` or ``schedule`` is unknown.
    """
    names = hparam_names(optimizer, schedule)
    values = {n: jnp.asarray(hp[n] if n in hp else DEFAULTS[n], float) for n in names}
    return _chain(optimizer, schedule, values, differentiable)


def make_optimizer(optimizer: str, schedule: str) -> optax.GradientTransformation:
    """Template transform whose hyperparameters all live in ``opt_state.hyperparams``.

    Built with ``optax.inject_hyperparams`` over a factory taking exactly
    :func:`hparam_names`; each is stored as a float32 array (initially :data:`DEFAULTS`).
    The learning rate is ``schedule_value(schedule, count, hyperparams)`` evaluated inside the
    chain, so any value in the state may change between steps without recompilation.

    Chains (``clip`` is ``optax.clip_by_global_norm(clip_norm)``, a no-op for ``inf``; ``wd``
    is ``optax.add_decayed_weights(weight_decay)``; ``lr`` scales by minus the schedule):

    * ``sgd``: clip, wd, lr (weight decay as an L2 gradient term).
    * ``momentum`` / ``nesterov``: clip, wd, ``optax.trace(momentum, nesterov)``, lr.
    * ``adam``: clip, wd, ``scale_by_adam``, lr (coupled L2 weight decay).
    * ``adamw``: clip, ``scale_by_adam``, wd, lr (decoupled, exactly ``optax.adamw``).
    * ``lion``: clip, ``scale_by_lion``, wd, lr (exactly ``optax.lion``).
    * ``adafactor``: clip then ``optax.adafactor(learning_rate=schedule,
      decay_rate=adafactor_decay_rate, clipping_threshold=clipping_threshold,
      weight_decay_rate=weight_decay)`` with its other settings at optax's defaults
      (factored, ``min_dim_size_to_factor=128``, ``eps=1e-30``, parameter-scale
      multiplication, no momentum). As in optax, its weight decay is not multiplied by
      the learning rate.
    * ``sgd_hd`` / ``nesterov_hd`` / ``adam_hd``: clip, wd, then online hypergradient descent
      (Baydin et al. 2018) over SGD, Nesterov momentum or Adam: ``lr`` is the initial rate,
      adapted in the state by ``hd_beta`` (see :mod:`jaxhpo.hypergrad.hd`; read the current rate
      with :func:`jaxhpo.hypergrad.current_lr`); the schedule's shape multiplies each step.
      ``hd_beta=0`` is exactly ``sgd`` / ``nesterov`` / ``adam``.

    Args:
        optimizer: One of :data:`OPTIMIZERS`.
        schedule: One of :data:`SCHEDULES`.

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
    # µP's per-layer learning rates, read from the parameters' metadata (an exact identity for
    # parameters without µP tags); see jaxhpo.models.mup.with_lr_multipliers.
    from jaxhpo.models.mup import with_lr_multipliers

    return with_lr_multipliers(injected(**{n: DEFAULTS[n] for n in names}), optimizer)


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
    if missing, the one in ``defaults``, else the template's own initial value (:data:`DEFAULTS`
    for :func:`make_optimizer`, ``spec.defaults`` for ``spec.template()``). Use
    ``jax.vmap(lambda p, h: init_opt_state(tx, p, h))(params, hparams)`` with per-member
    ``(P,)`` arrays to build a population.

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


#: The resolved optimizer of a run lives in jaxhpo.optim_factory (it imports this module).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {n: "jaxhpo.optim_factory" for n in ("OptimizerSpec", "resolve", "decay_mask")},
    globals(),
)
