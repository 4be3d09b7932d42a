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
* :mod:`~jaxhpo.optim.factory`: :class:`OptimizerSpec`, what the population uses of one
  optimizer, a built-in name or any optax factory (``optax.adamw``, a function of yours returning
  a ``GradientTransformation``, or its ``module:name`` reference), and :func:`decay_mask`.
* :mod:`~jaxhpo.optim.choices`: a per-member choice among optimizers or schedules (one program,
  a ``lax.switch`` on a code), and :func:`resolve`, the one entry point: a run's optimizer, one
  or a choice, as an :class:`OptimizerSpec`.

Imports go one way: ``base`` <- ``optimizers``/``schedules`` <- ``table`` <- ``mup`` <-
``transform`` <- ``factory`` <- ``choices`` <- this package.

One name per hyperparameter: the peak learning rate is ``lr`` in the space, the config,
``opt_state.hyperparams`` and the tables, for the built-in optimizers and for an optax factory
alike (which is called with ``learning_rate=``, optax's argument name).

Hyperparameters are float32 scalars per member, so parameters (and hence optimizer moments)
are expected to be float32 master weights; lower-precision parameters would be promoted to
float32 by the arithmetic with the hyperparameters.
"""

from __future__ import annotations

from typing import Any

from jaxhpo.optim import table
from jaxhpo.optim.base import (
    ChainInputs,
    Domain,
    Hparam,
    MupRule,
    OptimizerEntry,
    ScheduleEntry,
)
from jaxhpo.optim.choices import ChoiceSpec, resolve
from jaxhpo.optim.factory import OptimizerSpec, decay_mask
from jaxhpo.optim.optimizers import OPTIMIZER_TABLE
from jaxhpo.optim.schedules import LR, SCHEDULE_TABLE, schedule_value
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
    "LR",
    "OPTIMIZERS",
    "OPTIMIZER_TABLE",
    "SCHEDULES",
    "SCHEDULE_TABLE",
    "ChainInputs",
    "ChoiceSpec",
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


def __getattr__(name: str) -> Any:
    derive = _DERIVED.get(name)
    if derive is None:
        raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
    return derive()


def __dir__() -> list[str]:
    return sorted({*globals(), *_DERIVED})
