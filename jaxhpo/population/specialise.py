"""Which task hyperparameters are constants of a population's compiled step.

A population specialises by default: every task hyperparameter the caller does not say may
change (``searched``) is held at its default and read by the step as a Python constant, so what
it switches off costs nothing (a dropout of 0 draws no random bits, a full-size structure or
batch masks nothing). The run path passes its own ``fixed`` (what the search space leaves out
and the space's fixed values, ``population.specialise``); ``specialise=False`` keeps every task
hyperparameter a per-member array (the generic step). Writing another value of a fixed one is
an error (:func:`check_fixed_values` for values on the host, :func:`check_fixed_names` for the
compiled loop, where only the names are known before it runs), never silently ignored.
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


def fixed_error(name: str, value: float, where: str = "hparams") -> ValueError:
    """The one-line error of writing ``name``, held at ``value``, on any path (``where`` names
    the path: ``hparams`` for a value written on the host, ``train.compiled`` for the compiled
    loop)."""
    return ValueError(
        f"{where}: {name} is fixed at {value:g} (not searched: a constant of the compiled "
        f"step); add space.{name} to a run's space, or name {name!r} in "
        "Population(searched=...), or build it with specialise=False"
    )


def check_fixed_values(fixed: Mapping[str, float], values: Mapping[str, Any]) -> None:
    """Refuses a value of a fixed hyperparameter other than the one it is held at.

    Raises:
      ValueError: one line naming the hyperparameter and how to let it change.
    """
    for k in sorted(set(values) & set(fixed)):
        v = np.asarray(values[k], np.float32)
        # NaN: inactive (a conditional dimension), which reads the default
        if not np.all((v == np.float32(fixed[k])) | np.isnan(v)):
            raise fixed_error(k, fixed[k])


def check_fixed_names(
    fixed: Mapping[str, float], names: Iterable[str], where: str = "train.compiled"
) -> None:
    """Refuses any fixed hyperparameter among ``names``, whatever its value: where the values
    are traced (a strategy's decision inside the compiled loop, :mod:`jaxhpo.run.compiled`) only
    the names can be checked, and they are, once, before the program runs. The step reads a
    fixed one as a constant, so a value written there would be recorded but never trained with.

    Args:
      fixed: the population's :attr:`~jaxhpo.population.Population.fixed`.
      names: the names the compiled loop lets the strategy write (its searched names), or the
        names of one traced decision's ``hparams``.
      where: the path, first in the message.

    Raises:
      ValueError: one line naming the first such hyperparameter and how to let it change.
    """
    held = sorted(set(names) & set(fixed))
    if held:
        raise fixed_error(held[0], fixed[held[0]], where)
