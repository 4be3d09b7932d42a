"""An optimizer of a run: a built-in name or any optax factory, as one :class:`OptimizerSpec`.

:func:`resolve_one` turns what a run names as its optimizer into an :class:`OptimizerSpec`: the
per-member hyperparameter names, their defaults, a label, the template transform
(``optax.inject_hyperparams``: every name a float32 array in ``opt_state.hyperparams``) and the
chain with explicit values (its state is the template's ``inner_state``, for hypergradients).
A per-member choice among optimizers is :mod:`jaxhpo.optim.choices`, whose
:func:`~jaxhpo.optim.choices.resolve` takes either (``jaxhpo.optim.resolve``).

* A built-in name (:data:`jaxhpo.optim.OPTIMIZERS`) is exactly :func:`jaxhpo.optim.make_optimizer`
  / :func:`~jaxhpo.optim.make_chain` / :func:`~jaxhpo.optim.hparam_names` /
  :data:`~jaxhpo.optim.DEFAULTS` (µP multipliers included, no weight-decay mask).
* A factory (``optax.adamw``, ``optax.lion``, ``optax.sgd``, a user's function returning a
  ``GradientTransformation``; or its ``module:name`` reference) has its signature read:

  - its ``learning_rate`` argument (required) is always per member, named ``lr`` as for the
    built-in optimizers (one name per hyperparameter; the factory is still called with
    ``learning_rate=``): the peak of the schedule (:func:`jaxhpo.optim.schedule_value`), whose
    own hyperparameters (``warmup_steps``, ``decay_steps``, ``min_lr_ratio``, ...) are per
    member too; the factory gets the schedule as a callable of the step (the value itself for
    ``constant``);
  - every other float argument of the factory that ``searched`` names (``weight_decay``, ``b1``,
    ``momentum``, ...) is per member; a float argument is one annotated with ``float`` (alone or
    in a union), or unannotated with a numeric or no default. Arguments without a default are
    per member whether searched or not. Defaults are the factory's; where it has none (optax's
    ``learning_rate``, ``optax.sgd``'s ``momentum=None``), :data:`jaxhpo.optim.DEFAULTS`'s;
  - the factory's other arguments keep its defaults (static);
  - weight decay skips biases and normalisation parameters: a factory with a ``mask`` (or
    ``weight_decay_mask``) argument gets :func:`decay_mask` (leaves with ``ndim >= 2`` decay)
    unless ``mask=None`` (the factory's own default: decay everything) or a mask of the user's
    is given (passed as is). The mask is evaluated on one member's parameters (inside the
    population's ``vmap``).
  - µP's per-layer learning-rate multipliers are not applied (a factory is run as written).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxhpo import refs
from jaxhpo.optim.schedules import LR, schedule_value
from jaxhpo.optim.table import DEFAULTS, hparam_names
from jaxhpo.optim.transform import make_chain, make_optimizer

Factory = Callable[..., optax.GradientTransformation]

#: The argument through which an optax factory takes its (peak) learning rate; the per-member
#: name of that value is :data:`~jaxhpo.optim.schedules.LR` (``lr``), as for built-in names.
FACTORY_ARGUMENT = "learning_rate"
#: Arguments through which a factory takes a weight-decay mask.
MASK_ARGUMENTS: tuple[str, ...] = ("mask", "weight_decay_mask")


def decay_mask(params: Any) -> Any:
    """Weight decay for matrices and kernels only: True for leaves with ``ndim >= 2`` (biases,
    LayerNorm / BatchNorm scales and biases are not decayed)."""
    return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """A resolved optimizer (from :func:`resolve`): what the population needs of it.

    Attributes:
      names: per-member hyperparameter names, as in ``opt_state.hyperparams``.
      defaults: the default value of each name.
      label: ``"adamw"`` for a built-in name, ``"optax.lion"`` or a function's qualified name
        for a factory (for logs).
      optimizer: the built-in name or the factory.
      schedule: the learning-rate schedule (:data:`jaxhpo.optim.SCHEDULES`).
      kwargs: static arguments passed to the factory on every call (the weight-decay mask).
    """

    names: tuple[str, ...]
    defaults: Mapping[str, float] = dataclasses.field(hash=False)
    label: str
    optimizer: str | Factory
    schedule: str = "constant"
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    @property
    def builtin(self) -> bool:
        """Whether this is a built-in optimizer name."""
        return isinstance(self.optimizer, str)

    def template(self) -> optax.GradientTransformation:
        """The template transform: ``optax.inject_hyperparams`` over :attr:`names` (float32,
        initially :attr:`defaults`), as :func:`jaxhpo.optim.make_optimizer`."""
        if self.builtin:
            return make_optimizer(self.optimizer, self.schedule)

        def factory(**hp: jax.Array) -> optax.GradientTransformation:
            return self._factory_chain(hp)

        # inject_hyperparams binds arguments against the factory's signature.
        factory.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in self.names]
        )
        factory.__name__ = _name(self.optimizer)
        injected = optax.inject_hyperparams(factory, hyperparam_dtype=jnp.float32)
        return injected(**self.defaults)

    def chain(
        self, hp: Mapping[str, Any], *, differentiable: bool = False
    ) -> optax.GradientTransformation:
        """The transform with explicit (possibly traced) values; its state has the structure of
        :meth:`template`'s ``inner_state``. Missing names take :attr:`defaults`.

        ``differentiable``: safe to differentiate through (built-in names, see
        :func:`jaxhpo.optim.make_chain`); a factory is built from the values as it is.
        """
        if self.builtin:
            return make_chain(self.optimizer, self.schedule, hp, differentiable=differentiable)
        return self._factory_chain(
            {n: jnp.asarray(hp[n] if n in hp else self.defaults[n], float) for n in self.names}
        )

    def _factory_chain(self, hp: Mapping[str, Any]) -> optax.GradientTransformation:
        values = dict(hp)
        lr = values.pop(LR)
        sched = {n: values.pop(n) for n in _schedule_names(self.schedule)}
        if self.schedule == "constant":
            learning_rate: Any = lr  # as optax.<factory>(lr): no schedule state
        else:
            sched["lr"] = lr
            learning_rate = lambda count: schedule_value(self.schedule, count, sched)
        return self.optimizer(**{FACTORY_ARGUMENT: learning_rate}, **values, **self.kwargs)


def _schedule_names(schedule: str) -> tuple[str, ...]:
    """The schedule's hyperparameters other than its peak ``lr`` (checks the schedule name)."""
    common = hparam_names("sgd", "constant")
    return tuple(n for n in hparam_names("sgd", schedule) if n not in common)


def _name(factory: Factory) -> str:
    return getattr(factory, "__qualname__", None) or type(factory).__qualname__


def _label(factory: Factory) -> str:
    name = _name(factory)
    if str(getattr(factory, "__module__", "")).startswith("optax") and (
        getattr(optax, name, None) is factory
    ):
        return f"optax.{name}"
    return name


def _mentions_float(annotation: Any) -> bool:
    if annotation is float:
        return True
    if isinstance(annotation, str):  # an annotation that could not be evaluated
        return "float" in annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_mentions_float(a) for a in typing.get_args(annotation))
    return False


def _is_float(p: inspect.Parameter) -> bool:
    """A float argument: annotated with float (alone or in a union), or unannotated with a
    numeric default or none."""
    if p.annotation is not inspect.Parameter.empty:
        return _mentions_float(p.annotation)
    d = p.default
    return d is inspect.Parameter.empty or (isinstance(d, int | float) and not isinstance(d, bool))


def _default(name: str, p: inspect.Parameter) -> float | None:
    """The factory's numeric default of argument ``p`` (per-member name ``name``), else the
    tables' default of ``name``."""
    d = p.default
    if isinstance(d, int | float) and not isinstance(d, bool):
        return float(d)
    return DEFAULTS.get(name)


def factory_arguments(factory: Factory) -> Mapping[str, inspect.Parameter]:
    """The arguments of ``factory`` that can be passed by name.

    Raises:
      ValueError: ``optim.optimizer: cannot read the arguments of ...``.
    """
    try:
        try:
            sig = inspect.signature(factory, eval_str=True)
        except (NameError, SyntaxError, TypeError):
            sig = inspect.signature(factory)
    except (TypeError, ValueError):
        qual = _name(factory)
        raise ValueError(f"optim.optimizer: cannot read the arguments of {qual}") from None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n: p for n, p in sig.parameters.items() if p.kind in kinds}


def _factory_spec(
    factory: Factory, schedule: str, searched: Iterable[str], mask: Any
) -> OptimizerSpec:
    qual = _name(factory)
    params = factory_arguments(factory)
    if FACTORY_ARGUMENT not in params:
        raise ValueError(
            f"optim.optimizer: {qual} has no learning_rate argument (an optax factory such as "
            "optax.adamw, or a function of yours taking learning_rate)"
        )
    if LR in params:
        raise ValueError(
            f"optim.optimizer: {qual} takes an argument named lr, the per-member name of its "
            "learning_rate; rename the argument"
        )
    searched = tuple(searched)
    if FACTORY_ARGUMENT in searched:
        raise ValueError(
            f"space.{FACTORY_ARGUMENT}: the learning rate is named lr (one name for every "
            f"optimizer; {qual} still gets it as learning_rate)"
        )
    schedule_names = _schedule_names(schedule)  # checks the schedule name
    clash = [n for n in schedule_names if n in params]
    if clash:
        raise ValueError(
            f"optim.schedule: schedule '{schedule}' reads {clash[0]}, which {qual} also takes "
            "as an argument; use another schedule or rename the argument"
        )
    floats = [n for n, p in params.items() if _is_float(p)]
    shown = [f"{LR} (its {n})" if n == FACTORY_ARGUMENT else n for n in floats]
    listing = f"(its float arguments: {', '.join(shown)})"
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty]
    own: list[str] = []
    for name in [*searched, *required]:
        if name in (FACTORY_ARGUMENT, LR) or name in schedule_names or name in own:
            continue
        # a required argument that the space does not name is the factory's fault
        field = f"space.{name}:" if name in searched else f"optim.optimizer: {name} is"
        if name in params and name not in floats:
            raise ValueError(f"{field} not a float argument of {qual} {listing}")
        if name not in params:
            if name in DEFAULTS:  # an optimizer's or schedule's name this one ignores
                raise ValueError(
                    f"space.{name}: not an argument of {qual} nor of schedule '{schedule}' "
                    f"{listing}"
                )
            continue  # another name of the space (the task's, e.g. dropout)
        if _default(name, params[name]) is None:
            raise ValueError(
                f"{field} given no numeric default by {qual}; wrap the factory in a "
                f"function of yours with one, e.g. {name}=0.1 {listing}"
            )
        own.append(name)
    names = (LR, *schedule_names, *own)
    defaults = {
        LR: _default(LR, params[FACTORY_ARGUMENT]),
        **{n: DEFAULTS[n] for n in schedule_names},
        **{n: _default(n, params[n]) for n in own},
    }
    kwargs: dict[str, Any] = {}
    masks = [n for n in MASK_ARGUMENTS if n in params]
    if mask is not None and mask != "default" and not masks:
        raise ValueError(f"optim.mask: {qual} takes no mask argument ({', '.join(MASK_ARGUMENTS)})")
    if mask is not None and masks:
        kwargs[masks[0]] = decay_mask if mask == "default" else mask
    spec = OptimizerSpec(
        names=names,
        defaults={n: defaults[n] for n in names},
        label=_label(factory),
        optimizer=factory,
        schedule=schedule,
        kwargs=kwargs,
    )
    check_transform(spec)
    return spec


def _is_transform(out: Any) -> bool:
    return callable(getattr(out, "init", None)) and callable(getattr(out, "update", None))


def check_transform(spec: OptimizerSpec, where: str = "optim.optimizer") -> None:
    """Calls a factory once with its defaults: what it returns must be an optax
    ``GradientTransformation`` (an ``init``/``update`` pair), not a dict or an uncalled factory.

    Raises:
      ValueError: one line naming ``where`` and the factory (what it raised, or returned).
    """
    if spec.builtin:
        return
    factory = spec.optimizer
    try:
        out = spec._factory_chain(dict(spec.defaults))
    except Exception as e:  # noqa: BLE001 - user code: any exception is one line naming it
        raise refs.user_error(where, factory, e) from (e if refs.debug() else None)
    if _is_transform(out):
        return
    what = type(out).__name__
    if callable(out):
        what = f"the function {_name(out)} (a factory not called?)"
    raise ValueError(
        f"{where}: {_name(factory)} returned {what}, not an optax GradientTransformation "
        "(init, update); return e.g. optax.adamw(learning_rate)"
    )


def check_init(spec: OptimizerSpec, params: Any, where: str = "optim.optimizer") -> None:
    """The template transform's ``init`` traced abstractly (``jax.eval_shape``) on one member's
    parameter shapes; whatever it raises is one line naming the factory.

    Raises:
      ValueError: naming ``where``.
    """
    if spec.builtin:
        return
    try:
        jax.eval_shape(spec.template().init, params)
    except Exception as e:  # noqa: BLE001 - user code: any exception is one line naming it
        raise refs.user_error(where, spec.optimizer, e) from (e if refs.debug() else None)


def resolve_one(
    optimizer: str | Factory,
    schedule: str | tuple[str, ...] = "constant",
    searched: Iterable[str] = (),
    *,
    mask: Callable[..., Any] | Any | None = "default",
) -> OptimizerSpec:
    """One optimizer (not a per-member choice among several) as an :class:`OptimizerSpec`.

    Args:
      optimizer: a built-in name (:data:`jaxhpo.optim.OPTIMIZERS`), an optax factory or a
        function of yours returning a ``GradientTransformation`` (taking ``learning_rate``), or
        its ``module:name`` reference.
      schedule: the learning-rate schedule (:data:`jaxhpo.optim.SCHEDULES`), or a tuple of
        them, a per-member choice (the code ``schedule`` per member,
        :mod:`jaxhpo.optim.choices`).
      searched: the search space's names. A factory's float arguments among them become
        per-member hyperparameters; names that are no argument of the factory and no
        optimizer or schedule name (:data:`jaxhpo.optim.DEFAULTS`) are left to the task (e.g.
        its ``dropout``). Built-in names ignore it (all their names are per member).
      mask: the weight-decay mask of a factory with a ``mask`` (or ``weight_decay_mask``)
        argument: ``"default"`` for :func:`decay_mask` (only leaves with ``ndim >= 2`` decay),
        None for the factory's own default (decay everything), or a mask / mask function
        passed as is. Built-in names take no mask (their numerics are unchanged).

    Returns:
      The spec: ``names``, ``defaults``, ``label``, ``template()``, ``chain(hp)``.

    Raises:
      ValueError: one line naming the field: an unknown built-in name or schedule
        (``optim.*``); a factory without ``learning_rate``, or with an argument named as one of
        the schedule's hyperparameters; ``learning_rate`` in the space (the name is ``lr``); a
        searched name that is an argument of the factory but not a float one, that has no
        numeric default, or that is an optimizer or schedule name the factory does not take
        (``space.<name>: ...``, listing the factory's float arguments); a mask for a factory or
        built-in name that takes none (``optim.mask``).
    """
    if isinstance(schedule, list | tuple):  # a per-member choice of schedule
        schedule = tuple(schedule)
    if isinstance(optimizer, str) and not refs.is_reference(optimizer):
        if mask is not None and mask != "default":
            raise ValueError(
                f"optim.mask: the built-in optimizer '{optimizer}' takes no mask (pass an optax "
                "factory such as optax.adamw to mask its weight decay)"
            )
        names = hparam_names(optimizer, schedule)
        return OptimizerSpec(
            names=names,
            defaults={n: DEFAULTS[n] for n in names},
            label=optimizer,
            optimizer=optimizer,
            schedule=schedule,
        )
    if isinstance(optimizer, str):
        optimizer = refs.resolve(optimizer, "optim.optimizer")
    if not callable(optimizer):
        raise ValueError(
            f"optim.optimizer: expected a name, an optax factory or a module:name reference, "
            f"got {type(optimizer).__name__}"
        )
    return _factory_spec(optimizer, schedule, searched, mask)


def FactoryOptimizer(  # noqa: N802 (the earlier class's name, kept for its callers)
    factory: Factory,
    schedule: str = "constant",
    searched: Iterable[str] = (),
    mask: Any = "default",
) -> OptimizerSpec:
    """Deprecated: :func:`resolve_one` of a factory."""
    return _factory_spec(factory, schedule, searched, mask)
