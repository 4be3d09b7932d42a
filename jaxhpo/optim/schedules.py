"""The built-in learning-rate schedules: one :class:`~jaxhpo.optim.base.ScheduleEntry` each.

Optax's own schedule constructors branch in Python on their arguments (e.g.
``optax.linear_schedule`` on ``transition_steps``), so they cannot take traced values; the
schedules here are written with ``jax.numpy`` only and are tested against optax's schedules at
fixed values. Every argument may be traced (and batched under ``jax.vmap``); step counts such as
``warmup_steps`` are float arrays. ``warmup_steps <= 0`` means no warmup; warmup is linear from 0
at step 0 to ``lr`` at step ``warmup_steps``.

To add a schedule, write its value function and add one entry to :data:`SCHEDULE_TABLE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxhpo.optim.base import (
    NON_NEGATIVE,
    POSITIVE,
    UNIT,
    Hparam,
    ScheduleEntry,
    check_choice,
    check_choices,
    code_index,
    or_default,
)

Array = jax.Array

#: The name of the peak learning rate of every schedule, so of every optimizer: built-in, or an
#: optax factory (:mod:`jaxhpo.optim.factory`, which passes it as the factory's
#: ``learning_rate`` argument).
LR = "lr"
#: The code of a per-member choice among schedules (:mod:`jaxhpo.optim.choices`).
SCHEDULE_CODE = "schedule"

LR_HPARAM = Hparam(LR, 1e-3, POSITIVE, "log")
WARMUP_STEPS = Hparam("warmup_steps", 0.0, NON_NEGATIVE, "softplus")
DECAY_STEPS = Hparam("decay_steps", 1000.0, POSITIVE, "log")
MIN_LR_RATIO = Hparam("min_lr_ratio", 0.0, UNIT, "logit")
DECAY_RATE = Hparam("decay_rate", 0.5, POSITIVE, "log")
CYCLE_STEPS = Hparam("cycle_steps", 1000.0, POSITIVE, "log")


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


def _ramp(s: Array, hp: Mapping[str, Array]) -> Array:
    return hp[LR] * _warmup_factor(s, hp["warmup_steps"])


def _constant(s: Array, hp: Mapping[str, Array]) -> Array:
    return hp[LR] * jnp.ones_like(s)


def _rsqrt(s: Array, hp: Mapping[str, Array]) -> Array:
    warmup = hp["warmup_steps"]
    denom = jnp.maximum(jnp.maximum(s, warmup), 1.0)
    after = hp[LR] * jnp.sqrt(jnp.maximum(warmup, 1.0) / denom)
    return jnp.where(s < warmup, _ramp(s, hp), after)


def _decay_to_floor(cosine: bool):
    def value(s: Array, hp: Mapping[str, Array]) -> Array:
        lr, warmup = hp[LR], hp["warmup_steps"]
        floor = lr * hp["min_lr_ratio"]
        progress = _decay_progress(s, warmup, hp["decay_steps"])
        shape = 0.5 * (1.0 + jnp.cos(jnp.pi * progress)) if cosine else 1.0 - progress
        return jnp.where(s < warmup, _ramp(s, hp), floor + (lr - floor) * shape)

    return value


def _exponential(s: Array, hp: Mapping[str, Array]) -> Array:
    lr, warmup, decay_steps = hp[LR], hp["warmup_steps"], hp["decay_steps"]
    floor = lr * hp["min_lr_ratio"]
    safe = jnp.where(decay_steps > 0, decay_steps, 1.0)
    exponent = jnp.where(decay_steps > 0, jnp.maximum(s - warmup, 0.0) / safe, 0.0)
    decayed = jnp.maximum(lr * jnp.power(hp["decay_rate"], exponent), floor)
    return jnp.where(s < warmup, _ramp(s, hp), decayed)


def _cosine_restarts(s: Array, hp: Mapping[str, Array]) -> Array:
    lr, warmup = hp[LR], hp["warmup_steps"]
    floor = lr * hp["min_lr_ratio"]
    cycle = jnp.maximum(hp["cycle_steps"], 1.0)
    frac = jnp.mod(jnp.maximum(s - warmup, 0.0), cycle) / cycle
    cosine = floor + (lr - floor) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    return jnp.where(s < warmup, _ramp(s, hp), cosine)


_WARMUP_DECAY = (LR_HPARAM, WARMUP_STEPS, DECAY_STEPS, MIN_LR_RATIO)

SCHEDULE_TABLE: dict[str, ScheduleEntry] = {
    e.name: e
    for e in (
        ScheduleEntry("constant", _constant, (LR_HPARAM,), "lr (no warmup)"),
        ScheduleEntry("warmup_constant", _ramp, (LR_HPARAM, WARMUP_STEPS), "warmup, then lr"),
        ScheduleEntry(
            "warmup_cosine",
            _decay_to_floor(cosine=True),
            _WARMUP_DECAY,
            "warmup, then cosine from lr to lr * min_lr_ratio by step decay_steps, then flat "
            "(optax.warmup_cosine_decay_schedule); decay_steps <= warmup_steps drops to the floor",
        ),
        ScheduleEntry(
            "warmup_linear",
            _decay_to_floor(cosine=False),
            _WARMUP_DECAY,
            "warmup, then linear from lr to lr * min_lr_ratio by step decay_steps, then flat",
        ),
        ScheduleEntry(
            "warmup_exponential",
            _exponential,
            (LR_HPARAM, WARMUP_STEPS, DECAY_STEPS, DECAY_RATE, MIN_LR_RATIO),
            "warmup, then lr * decay_rate ** ((step - warmup_steps) / decay_steps), floored at "
            "lr * min_lr_ratio; decay_steps <= 0 means no decay (as optax)",
        ),
        ScheduleEntry(
            "rsqrt",
            _rsqrt,
            (LR_HPARAM, WARMUP_STEPS),
            "warmup, then lr * sqrt(max(warmup_steps, 1) / max(step, warmup_steps, 1))",
        ),
        ScheduleEntry(
            "cosine_restarts",
            _cosine_restarts,
            (LR_HPARAM, WARMUP_STEPS, CYCLE_STEPS, MIN_LR_RATIO),
            "warmup, then cosine from lr to lr * min_lr_ratio over each cycle of cycle_steps "
            "steps, restarting at lr (SGDR); cycles are at least one step long",
        ),
    )
}


def schedule_entry(name: str) -> ScheduleEntry:
    """The table entry of a schedule; ``optim.schedule: unknown 'x' (...)`` if none."""
    check_choice("schedule", name, SCHEDULE_TABLE)
    return SCHEDULE_TABLE[name]


def schedule_value(kind: str | tuple[str, ...], step: ArrayLike, hp: Mapping[str, Any]) -> Array:
    """Learning rate of schedule ``kind`` at ``step``, as a pure ``jax.numpy`` function.

    The schedules are the entries of :data:`SCHEDULE_TABLE` (each entry's ``doc`` says its
    shape).

    Args:
        kind: A schedule name, or a tuple of them: a per-member choice, the code
            ``hp["schedule"]`` picks one (:func:`switch_schedule_value`).
        step: Update count (integer or float, possibly traced).
        hp: Hyperparameters; must contain the schedule's names.

    Returns:
        The float32 learning rate, broadcast over the shapes of ``step`` and ``hp`` values.

    Raises:
        ValueError: If ``kind`` is unknown.
    """
    if not isinstance(kind, str):
        return switch_schedule_value(tuple(kind), step, hp)
    entry = schedule_entry(kind)
    # float32 (float64 only under jax_enable_x64)
    values = {n: jnp.asarray(hp[n], float) for n in entry.names}
    return entry.value(jnp.asarray(step, float), values)


def schedule_choice_names(schedules: tuple[str, ...]) -> tuple[str, ...]:
    """Hyperparameters of a choice among ``schedules``: ``lr``, the union of the schedules'
    own names (in the order of their entries), then the code ``schedule``."""
    check_choices(SCHEDULE_CODE, schedules, SCHEDULE_TABLE)
    names: list[str] = []
    for kind in schedules:
        names += [n for n in SCHEDULE_TABLE[kind].names if n not in names]
    return (*names, SCHEDULE_CODE)


def switch_schedule_value(
    schedules: tuple[str, ...], step: ArrayLike, hp: Mapping[str, Any]
) -> Array:
    """The learning rate at ``step`` of the schedule ``hp["schedule"]`` picks in ``schedules``.

    Each branch is :func:`schedule_value` of one schedule, reading its own names (NaN, an
    inactive dimension: the entry's default); ``lax.switch`` on the traced code picks one.
    """
    names = schedule_choice_names(schedules)[:-1]

    def branch(kind: str):
        entry = SCHEDULE_TABLE[kind]

        def value(s, h):
            vals = {n: or_default(h[n], d) for n, d in entry.defaults.items()}
            return jnp.asarray(schedule_value(kind, s, vals), jnp.float32)

        return value

    code = code_index(hp[SCHEDULE_CODE], len(schedules))
    operands = {n: hp[n] for n in names}
    return jax.lax.switch(code, [branch(k) for k in schedules], jnp.asarray(step, float), operands)
