"""The types of the optimizer table: a hyperparameter, a built-in optimizer, a schedule.

A built-in optimizer is one :class:`OptimizerEntry` (:mod:`jaxhpo.optim.optimizers`): its optax
chain, its hyperparameters (:class:`Hparam`: name, default, domain, unconstrained coordinate),
which of them hypergradients may differentiate, and its µP rule (:class:`MupRule`). A schedule is
one :class:`ScheduleEntry` (:mod:`jaxhpo.optim.schedules`). Everything else (the names an
optimizer reads, :data:`jaxhpo.optim.DEFAULTS`, the domains the config checks, the coordinates
of :mod:`jaxhpo.hypergrad.unrolled`, µP's per-layer rates) is derived from the entries by
:mod:`jaxhpo.optim.table`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array

#: Unconstrained coordinates of a differentiable hyperparameter (:mod:`jaxhpo.hypergrad.unrolled`):
#: ``log`` for positive scales, ``softplus`` for non-negative step counts, ``logit`` for (0, 1).
COORDINATE_KINDS: tuple[str, ...] = ("log", "softplus", "logit")

INF = float("inf")


class Domain(NamedTuple):
    """The valid values of a hyperparameter: ``low .. high``, each end open or closed."""

    low: float
    high: float
    low_inclusive: bool
    high_inclusive: bool

    def contains(self, value: float) -> bool:
        """Whether ``value`` is a valid value."""
        above = value > self.low or (self.low_inclusive and value == self.low)
        below = value < self.high or (self.high_inclusive and value == self.high)
        return bool(above and below)


POSITIVE = Domain(0.0, INF, False, False)
NON_NEGATIVE = Domain(0.0, INF, True, False)
UNIT = Domain(0.0, 1.0, True, True)


@dataclasses.dataclass(frozen=True)
class Hparam:
    """One per-member hyperparameter of a built-in optimizer or schedule.

    Attributes:
      name: its name everywhere: the space, ``opt_state.hyperparams``, the tables.
      default: the value a member gets when the space does not name it.
      domain: the values the config accepts.
      coordinate: the unconstrained coordinate of hypergradients (:data:`COORDINATE_KINDS`), or
        None where the chain is not differentiable in it.
    """

    name: str
    default: float
    domain: Domain
    coordinate: str | None = None


ROLES: tuple[str, ...] = ("hidden", "vector", "readout")
"""Parameter roles under µP (a parameter's ``mup_role`` metadata, :mod:`jaxhpo.models.mup`)."""


@dataclasses.dataclass(frozen=True)
class MupRule:
    """µP's learning-rate multiplier of each parameter role, as a power of ``width_mult``.

    Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466, Table 8 (the ``mup`` package's
    form): under Adam-like optimizers hidden matrices get ``1 / width_mult``; under SGD vectors
    and the readout get ``width_mult``.
    """

    name: str
    hidden: int
    vector: int
    readout: int

    def multiplier(self, role: str | None, width_mult: float) -> float:
        """The multiplier of a parameter with ``role`` (None: untagged, 1)."""
        if role is None:
            return 1.0
        if role not in ROLES:
            raise ValueError(f"mup role: unknown {role!r} (choose from {', '.join(ROLES)})")
        power = getattr(self, role)
        if power == 0:
            return 1.0
        w = float(width_mult)
        return w**power if power > 0 else 1.0 / w**-power


MUP_ADAM = MupRule("adam", hidden=-1, vector=0, readout=0)
MUP_SGD = MupRule("sgd", hidden=0, vector=1, readout=1)


def smooth_clip_by_global_norm(max_norm: Array) -> optax.GradientTransformation:
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


@dataclasses.dataclass(frozen=True)
class ChainInputs:
    """What an entry's chain is built from, with the pieces every chain shares.

    Attributes:
      hp: the (possibly traced) hyperparameters, the optimizer's and the schedule's.
      schedule: the schedule's name, or a tuple of them (a per-member choice).
      learning_rate: the schedule as a function of the update count.
      differentiable: build a chain safe to differentiate *through* (hypergradients): smooth
        clipping and ``eps_root=1e-30`` in Adam's square root; the forward values are the same.
    """

    hp: Mapping[str, Array]
    schedule: str | tuple[str, ...]
    learning_rate: Callable[[Array], Array]
    differentiable: bool = False

    @property
    def eps_root(self) -> float:
        """Adam's ``eps_root``: a finite derivative where a second moment is exactly 0."""
        return 1e-30 if self.differentiable else 0.0

    def clip(self) -> optax.GradientTransformation:
        """Clipping by the global norm ``clip_norm`` (``inf``: none)."""
        if self.differentiable:
            return smooth_clip_by_global_norm(self.hp["clip_norm"])
        return optax.clip_by_global_norm(self.hp["clip_norm"])

    def weight_decay(self) -> optax.GradientTransformation:
        """``optax.add_decayed_weights(weight_decay)``."""
        return optax.add_decayed_weights(self.hp["weight_decay"])

    def scale_by_learning_rate(self, flip_sign: bool = True) -> optax.GradientTransformation:
        """Scales by (minus, unless ``flip_sign=False``) the schedule's rate."""
        return optax.scale_by_learning_rate(self.learning_rate, flip_sign=flip_sign)


def check_choice(field: str, value: str, choices: Mapping[str, object]) -> None:
    """Raises ``optim.<field>: unknown 'x' (choose from ...)`` unless ``value`` is a key."""
    if value not in choices:
        raise ValueError(f"optim.{field}: unknown {value!r} (choose from {', '.join(choices)})")


def check_choices(field: str, values: Sequence[Any], known: Mapping[str, object] | None) -> None:
    """Checks a per-member choice: not empty, no repeat, every value known (if ``known``)."""
    if not values:
        raise ValueError(f"optim.{field}: a choice needs at least one value")
    labels = [v if isinstance(v, str) else getattr(v, "__qualname__", repr(v)) for v in values]
    if len(set(labels)) != len(labels):
        raise ValueError(f"optim.{field}: a choice lists {labels} with a repeat")
    for v in values:
        if known is not None:
            check_choice(field, v, known)


def code_index(code: Array, n: int) -> Array:
    """The int32 branch index of a float code (rounded, clipped to ``0..n-1``; NaN is 0)."""
    c = jnp.nan_to_num(jnp.asarray(code, jnp.float32), nan=0.0)
    return jnp.clip(jnp.round(c), 0, n - 1).astype(jnp.int32)


def or_default(value: Any, default: float) -> Array:
    """``value``, or ``default`` where it is NaN (an inactive dimension)."""
    v = jnp.asarray(value, float)
    return jnp.where(jnp.isnan(v), jnp.asarray(default, v.dtype), v)


def _names(hparams: tuple[Hparam, ...]) -> tuple[str, ...]:
    return tuple(h.name for h in hparams)


class _Hparams:
    """The facts an entry derives from its :class:`Hparam` tuple ``hparams``."""

    hparams: tuple[Hparam, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return _names(self.hparams)

    @property
    def defaults(self) -> dict[str, float]:
        return {h.name: h.default for h in self.hparams}

    @property
    def domains(self) -> dict[str, Domain]:
        return {h.name: h.domain for h in self.hparams}


@dataclasses.dataclass(frozen=True)
class OptimizerEntry(_Hparams):
    """One built-in optimizer: everything the package knows of it.

    Attributes:
      name: the name a config gives (``optim.optimizer``).
      chain: ``ChainInputs -> optax.GradientTransformation``: the chain, clipping included.
      hparams: its own per-member hyperparameters, in order (the schedule's come before them).
      differentiable: the names among :attr:`hparams` that hypergradients may differentiate
        (each has a coordinate); the schedule's are always differentiable.
      mup: µP's per-layer learning-rate rule (:data:`MUP_ADAM` or :data:`MUP_SGD`).
      doc: the chain in one line, for the docs.
    """

    name: str
    chain: Callable[[ChainInputs], optax.GradientTransformation]
    hparams: tuple[Hparam, ...]
    differentiable: tuple[str, ...]
    mup: MupRule = MUP_ADAM
    doc: str = ""


@dataclasses.dataclass(frozen=True)
class ScheduleEntry(_Hparams):
    """One built-in learning-rate schedule.

    Attributes:
      name: the name a config gives (``optim.schedule``).
      value: ``(step, hp) -> rate``: a pure ``jax.numpy`` function of the float step and
        float arrays of :attr:`hparams` (any of them may be traced).
      hparams: its hyperparameters, starting with the peak rate ``lr``. A rate is smooth in each
        of them, so every one with a coordinate is differentiable.
      doc: the shape in one line, for the docs.
    """

    name: str
    value: Callable[[Array, Mapping[str, Array]], Array]
    hparams: tuple[Hparam, ...]
    doc: str = ""

    @property
    def differentiable(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hparams if h.coordinate is not None)
