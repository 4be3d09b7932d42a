"""Any optax optimizer factory as a per-member optimizer.

``optax.adamw``, ``optax.lion``, ``optax.sgd`` or a user's function returning a
``GradientTransformation`` becomes one template transform whose per-member hyperparameters are
float32 arrays in ``opt_state.hyperparams`` (``optax.inject_hyperparams``), exactly as the
built-in optimizers of :mod:`jaxhpo.optim`:

* ``learning_rate`` (the factory's argument) is always per member: it is the peak of the
  schedule (:func:`jaxhpo.optim.schedule_value`), whose own hyperparameters (``warmup_steps``,
  ``decay_steps``, ``min_lr_ratio``, ...) are per member too;
* every other float argument of the factory that the search space names (``weight_decay``,
  ``b1``, ``momentum``, ...) is per member; the factory's other arguments keep its defaults;
* weight decay skips biases and normalisation parameters: a factory with a ``mask`` argument
  gets :func:`decay_mask` (parameters with two or more dimensions decay) unless the user passes
  their own mask (or ``mask=None``: the factory's default, decay everything).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxhpo import optim


def decay_mask(params: Any) -> Any:
    """Weight decay for matrices and kernels only: True for leaves with ``ndim >= 2``."""
    return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


def _float_default(p: inspect.Parameter) -> bool:
    d = p.default
    return isinstance(d, int | float) and not isinstance(d, bool)


class FactoryOptimizer:
    """A factory with its per-member hyperparameters.

    Args:
      factory: the optax factory (takes ``learning_rate``).
      schedule: the learning-rate schedule (:data:`jaxhpo.optim.SCHEDULES`).
      searched: the search space's names; those that are float arguments of the factory become
        per-member hyperparameters (the others are left to the task).
      mask: ``"default"`` (:func:`decay_mask` for factories with a ``mask`` argument), None
        (the factory's own default) or a mask / mask function passed as is.

    Raises:
      ValueError: one line naming the field: a factory without ``learning_rate``, a searched
        argument that is not a float, a schedule name the factory also uses.
    """

    def __init__(
        self,
        factory: Callable[..., optax.GradientTransformation],
        schedule: str = "constant",
        searched: Iterable[str] = (),
        mask: Any = "default",
    ):
        label = getattr(factory, "__qualname__", repr(factory))
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            raise ValueError(f"optim.optimizer: cannot read the arguments of {label}") from None
        if "learning_rate" not in params:
            raise ValueError(
                f"optim.optimizer: {label} has no learning_rate argument (an optax factory "
                "such as optax.adamw, or a function of yours taking learning_rate)"
            )
        optim.hparam_names("sgd", schedule)  # checks the schedule name
        self.schedule_names = tuple(n for n in optim._SCHEDULE_HPARAMS[schedule] if n != "lr")
        clash = sorted(set(self.schedule_names) & set(params))
        if clash:
            raise ValueError(
                f"optim.schedule: schedule '{schedule}' reads {clash[0]}, which {label} also "
                "takes as an argument; use another schedule or rename the argument"
            )
        floats = [n for n, p in params.items() if _float_default(p)]
        own = []
        for name in searched:
            if name == "learning_rate" or name in self.schedule_names:
                continue
            if name in params and name not in floats:
                raise ValueError(
                    f"space.{name}: not a float argument of {label} (its float arguments: "
                    f"learning_rate, {', '.join(floats)})"
                )
            if name in floats:
                own.append(name)
        self.factory, self.schedule, self.label = factory, schedule, label
        self.names = ("learning_rate", *self.schedule_names, *own)
        self.defaults = {
            "learning_rate": optim.DEFAULTS["lr"],
            **{n: optim.DEFAULTS[n] for n in self.schedule_names},
            **{n: float(params[n].default) for n in own},
        }
        self.static: dict[str, Any] = {}
        if "mask" in params and mask is not None:
            self.static["mask"] = decay_mask if mask == "default" else mask

    def chain(
        self, hp: Mapping[str, Any], *, differentiable: bool = False
    ) -> optax.GradientTransformation:
        """The factory's transform with explicit (possibly traced) values; its state is the
        ``inner_state`` of :meth:`template`'s. ``differentiable`` changes nothing here."""
        del differentiable
        values = {n: hp[n] if n in hp else self.defaults[n] for n in self.names}
        sched = {"lr": values["learning_rate"], **{n: values[n] for n in self.schedule_names}}
        rest = {n: v for n, v in values.items() if n not in sched and n != "learning_rate"}
        lr = lambda count: optim.schedule_value(self.schedule, count, sched)
        return self.factory(learning_rate=lr, **rest, **self.static)

    def template(self) -> optax.GradientTransformation:
        """The ``optax.inject_hyperparams`` transform: every name a float32 array in state."""

        def factory(**hp):
            return self.chain(hp)

        factory.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in self.names]
        )
        injected = optax.inject_hyperparams(factory, hyperparam_dtype=jnp.float32)
        return injected(**self.defaults)


class BuiltinOptimizer:
    """A built-in optimizer name (:data:`jaxhpo.optim.OPTIMIZERS`) behind the same interface as
    :class:`FactoryOptimizer`: ``names``, ``defaults``, ``template()``, ``chain(hp)``."""

    def __init__(self, optimizer: str, schedule: str):
        self.optimizer, self.schedule, self.label = optimizer, schedule, optimizer
        self.names = tuple(optim.hparam_names(optimizer, schedule))
        self.defaults = {k: optim.DEFAULTS[k] for k in self.names}

    def template(self) -> optax.GradientTransformation:
        return optim.make_optimizer(self.optimizer, self.schedule)

    def chain(
        self, hp: Mapping[str, Any], *, differentiable: bool = False
    ) -> optax.GradientTransformation:
        return optim.make_chain(self.optimizer, self.schedule, hp, differentiable=differentiable)


def resolve(
    optimizer: str | Callable, schedule: str, searched: Iterable[str] = ()
) -> BuiltinOptimizer | FactoryOptimizer:
    """The optimizer of a run: a built-in name, a ``module:name`` reference to a factory, or a
    factory."""
    from jaxhpo import refs

    if isinstance(optimizer, str) and not refs.is_reference(optimizer):
        return BuiltinOptimizer(optimizer, schedule)
    if isinstance(optimizer, str):
        optimizer = refs.resolve(optimizer, "optim.optimizer")
    return FactoryOptimizer(optimizer, schedule, searched)
