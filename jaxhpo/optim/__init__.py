"""Per-member optimizers whose hyperparameters are traced arrays: one table entry each.

A population is trained as one JAX program by ``jax.vmap``-ing a single training step over
the members. For that to work the optimizer has to be *one* template transform whose
hyperparameters (learning rate, schedule lengths, betas, weight decay, clipping norm, ...)
are ordinary float32 arrays stored in the optimizer state, not Python constants baked into
the traced program (:func:`optax.inject_hyperparams`).

Where things live:

* :mod:`~jaxhpo.optim.optimizers`: :data:`OPTIMIZER_TABLE`, one
  :class:`~jaxhpo.optim.base.OptimizerEntry` per built-in optimizer: its optax chain, its
  hyperparameters (default, domain, unconstrained coordinate), which of them hypergradients may
  differentiate, and its µP rule. Adding an optimizer touches that file only.
* :mod:`~jaxhpo.optim.schedules`: :data:`SCHEDULE_TABLE`, one
  :class:`~jaxhpo.optim.base.ScheduleEntry` per learning-rate schedule, and
  :func:`schedule_value`.
* :mod:`~jaxhpo.optim.table`: what the rest of the package reads of the tables, derived when
  read: :func:`hparam_names`, :data:`DEFAULTS`, :data:`DOMAINS` (the config's checks),
  :func:`~jaxhpo.optim.table.coordinates` (:mod:`jaxhpo.hypergrad.unrolled`),
  :func:`~jaxhpo.optim.table.mup_rule` (:mod:`jaxhpo.optim.mup`, µP's per-layer rates).
* :mod:`~jaxhpo.optim.transform`: :func:`make_optimizer` (the template transform),
  :func:`make_chain` (explicit values), :func:`init_opt_state`, :func:`get_hparams`,
  :func:`set_hparams`.
* :func:`resolve` (from :mod:`jaxhpo.optim_factory`) gives the one :class:`OptimizerSpec` the
  population uses, for a built-in name or for any optax factory (``optax.adamw``, a function of
  yours returning a ``GradientTransformation``).

One name per hyperparameter: the peak learning rate of the built-in optimizers and schedules is
``lr``, in the space, the config, ``opt_state.hyperparams`` and the tables; an optax factory keeps
its own argument name ``learning_rate``, which shares ``lr``'s default, domain and coordinate.

Hyperparameters are float32 scalars per member, so parameters (and hence optimizer moments)
are expected to be float32 master weights; lower-precision parameters would be promoted to
float32 by the arithmetic with the hyperparameters.
"""

from __future__ import annotations

from typing import Any

from jaxhpo._lazy import lazy_exports
from jaxhpo.optim import table
from jaxhpo.optim.base import (
    ChainInputs,
    Domain,
    Hparam,
    MupRule,
    OptimizerEntry,
    ScheduleEntry,
)
from jaxhpo.optim.optimizers import OPTIMIZER_TABLE
from jaxhpo.optim.schedules import (
    FACTORY_LEARNING_RATE,
    LR,
    SCHEDULE_TABLE,
    schedule_value,
)
from jaxhpo.optim.table import DEFAULTS, DOMAINS, hparam_names
from jaxhpo.optim.transform import (
    get_hparams,
    init_opt_state,
    make_chain,
    make_optimizer,
    set_hparams,
)

__all__ = [
    "DEFAULTS",
    "DOMAINS",
    "FACTORY_LEARNING_RATE",
    "LR",
    "OPTIMIZERS",
    "OPTIMIZER_TABLE",
    "SCHEDULES",
    "SCHEDULE_TABLE",
    "ChainInputs",
    "Domain",
    "Hparam",
    "MupRule",
    "OptimizerEntry",
    "OptimizerSpec",
    "ScheduleEntry",
    "decay_mask",
    "get_hparams",
    "hparam_names",
    "init_opt_state",
    "make_chain",
    "make_optimizer",
    "resolve",
    "schedule_value",
    "set_hparams",
]

#: The names in the tables, in table order, computed when read (so an entry added to a table
#: shows): ``OPTIMIZERS`` and ``SCHEDULES``. ``DEFAULTS`` and ``DOMAINS`` are views of the
#: tables too (:class:`~jaxhpo.optim.table.TableView`).
_DERIVED = {"OPTIMIZERS": table.optimizer_names, "SCHEDULES": table.schedule_names}

#: The resolved optimizer of a run lives in jaxhpo.optim_factory (it imports this package).
_lazy_getattr, _lazy_dir = lazy_exports(
    __name__,
    {n: "jaxhpo.optim_factory" for n in ("OptimizerSpec", "resolve", "decay_mask")},
    globals(),
)


def __getattr__(name: str) -> Any:
    derive = _DERIVED.get(name)
    return derive() if derive is not None else _lazy_getattr(name)


def __dir__() -> list[str]:
    return sorted({*_lazy_dir(), *_DERIVED})
