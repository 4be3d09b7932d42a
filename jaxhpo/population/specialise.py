"""Which task hyperparameters are constants of a population's compiled step.

A population specialises by default: every task hyperparameter the caller does not say may
change (``searched``) is held at its default and read by the step as a Python constant, so what
it switches off costs nothing (a dropout of 0 draws no random bits, a full-size structure or
batch masks nothing). The run path passes its own ``fixed`` (what the search space leaves out
and the space's fixed values, ``population.specialise``); ``specialise=False`` keeps every task
hyperparameter a per-member array (the generic step). Writing another value of a fixed one is
an error (:func:`check_fixed_values`), never silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def resolve_fixed(
    task_defaults: Mapping[str, float],
    searched: Iterable[str],
    fixed: Mapping[str, float] | None,
    specialise: bool,
    known: Iterable[str],
) -> dict[str, float]:
    """The task hyperparameters held at one value, name -> float.

    Args:
      task_defaults: every task hyperparameter of the population with its default
        (:meth:`Population.task_defaults`).
      searched: the names the caller may change (optimizer names among them are ignored: they
        live in the optimizer state as arrays anyway).
      fixed: exactly the values to hold, when given (the run path); None derives them.
      specialise: without ``fixed``, True holds every task hyperparameter ``searched`` does not
        name at its default; False holds none.
      known: every hyperparameter name of the population (a ``searched`` name outside it is a
        typo and refused).

    Raises:
      ValueError: a ``fixed`` name that is not a task hyperparameter, or an unknown ``searched``
        name (one line naming it).
    """
    if fixed is not None:
        unknown = sorted(set(fixed) - set(task_defaults))
        if unknown:
            raise ValueError(f"population: fixed names {unknown} are not task hyperparameters")
        return {k: float(v) for k, v in fixed.items()}
    searched = tuple(searched)
    unknown = sorted(set(searched) - set(known))
    if unknown:
        raise ValueError(
            f"population: searched names {unknown} are not hyperparameters of this population "
            f"(known: {', '.join(known)})"
        )
    if not specialise:
        return {}
    return {k: float(v) for k, v in task_defaults.items() if k not in searched}


def check_fixed_values(fixed: Mapping[str, float], values: Mapping[str, Any]) -> None:
    """Refuses a value of a fixed hyperparameter other than the one it is held at.

    Raises:
      ValueError: one line naming the hyperparameter and how to let it change.
    """
    for k in sorted(set(values) & set(fixed)):
        v = np.asarray(values[k], np.float32)
        # NaN: inactive (a conditional dimension), which reads the default
        if not np.all((v == np.float32(fixed[k])) | np.isnan(v)):
            raise ValueError(
                f"hparams: {k} is fixed at {fixed[k]:g} (not searched: a constant of the "
                f"compiled step); add space.{k} to a run's space, or name {k!r} in "
                "Population(searched=...), or build it with specialise=False"
            )
