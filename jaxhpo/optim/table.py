"""What the rest of the package reads of the optimizer and schedule tables.

Every function here reads :data:`~jaxhpo.optim.optimizers.OPTIMIZER_TABLE` and
:data:`~jaxhpo.optim.schedules.SCHEDULE_TABLE` when it is called, so an entry added to a table
(a new optimizer, or a test's) reaches the config's domains, hypergradients' coordinates and µP's
per-layer rates without another edit.

One name per hyperparameter: a name has one default, one domain and one coordinate across the
tables (:func:`hparams` refuses a clash). The peak learning rate is ``lr``, for the built-in
optimizers and for an optax factory alike (:mod:`jaxhpo.optim.factory` passes it as the
factory's ``learning_rate`` argument).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jaxhpo.optim.base import Domain, Hparam, MupRule, OptimizerEntry, check_choice
from jaxhpo.optim.optimizers import OPTIMIZER_TABLE
from jaxhpo.optim.schedules import (
    SCHEDULE_CODE,
    SCHEDULE_TABLE,
    schedule_choice_names,
    schedule_entry,
)

#: The code of a per-member choice among optimizers (:mod:`jaxhpo.optim.choices`).
OPTIMIZER_CODE = "optimizer"
#: The codes of per-member choices: hyperparameters of no entry, default 0 (the first choice).
CODE_DEFAULTS: dict[str, float] = {SCHEDULE_CODE: 0.0, OPTIMIZER_CODE: 0.0}


def optimizer_entry(name: str) -> OptimizerEntry:
    """The table entry of a built-in optimizer; ``optim.optimizer: unknown 'x' (...)`` if none."""
    check_choice("optimizer", name, OPTIMIZER_TABLE)
    return OPTIMIZER_TABLE[name]


def optimizer_names() -> tuple[str, ...]:
    """The built-in optimizers, in table order."""
    return tuple(OPTIMIZER_TABLE)


def schedule_names() -> tuple[str, ...]:
    """The built-in schedules, in table order."""
    return tuple(SCHEDULE_TABLE)


def hparams() -> dict[str, Hparam]:
    """Every hyperparameter of the tables by name: the schedules' first, then the optimizers'.

    Raises:
      ValueError: if two entries give one name different facts (default, domain, coordinate).
    """
    out: dict[str, Hparam] = {}
    entries = [*SCHEDULE_TABLE.values(), *OPTIMIZER_TABLE.values()]
    for entry in entries:
        for h in entry.hparams:
            seen = out.setdefault(h.name, h)
            if seen != h:
                raise ValueError(
                    f"optim table: '{entry.name}' declares {h.name!r} as {h}, another entry as "
                    f"{seen} (one name, one hyperparameter)"
                )
    return out


def defaults() -> dict[str, float]:
    """The default of every hyperparameter of the tables, and of the choice codes."""
    return {**{n: h.default for n, h in hparams().items()}, **CODE_DEFAULTS}


def domains() -> dict[str, Domain]:
    """The valid values of every hyperparameter."""
    return {n: h.domain for n, h in hparams().items()}


class TableView(Mapping[str, Any]):
    """A read-only mapping computed from the tables each time it is read (:data:`DEFAULTS`,
    :data:`DOMAINS`), so that a module holding it sees every entry of the tables."""

    def __init__(self, build: Callable[[], dict[str, Any]], doc: str) -> None:
        self._build = build
        self.__doc__ = doc

    def __getitem__(self, name: str) -> Any:
        return self._build()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())

    def __repr__(self) -> str:
        return repr(self._build())


DEFAULTS: Mapping[str, float] = TableView(
    defaults, "Default of every hyperparameter and choice code; ``clip_norm=inf``: no clipping."
)
DOMAINS: Mapping[str, Domain] = TableView(
    domains, "Valid values of every hyperparameter: ``(low, high, low_incl., high_incl.)``."
)


def differentiable(optimizer: str, schedule: str | tuple[str, ...]) -> tuple[str, ...]:
    """The names hypergradients may differentiate for an optimizer + schedule pair."""
    entry = optimizer_entry(optimizer)
    kinds = (schedule,) if isinstance(schedule, str) else tuple(schedule)
    names: list[str] = []
    for kind in kinds:
        names += [n for n in schedule_entry(kind).differentiable if n not in names]
    return (*names, *entry.differentiable)


def coordinates() -> dict[str, str]:
    """The unconstrained coordinate of every name some entry may differentiate, in table
    order."""
    table = hparams()
    names = [n for e in SCHEDULE_TABLE.values() for n in e.differentiable]
    names += [n for e in OPTIMIZER_TABLE.values() for n in e.differentiable]
    out: dict[str, str] = {}
    for n in names:
        out[n] = table[n].coordinate  # type: ignore[assignment]
    return out


def mup_rule(optimizer: str) -> MupRule | None:
    """µP's learning-rate rule of a built-in optimizer; None for another name."""
    entry = OPTIMIZER_TABLE.get(optimizer)
    return None if entry is None else entry.mup


def hparam_names(optimizer: str, schedule: str | tuple[str, ...]) -> tuple[str, ...]:
    """Names of the hyperparameters read by an optimizer + schedule pair.

    The schedule's names come first (starting with ``lr``), then the optimizer's, ending with
    ``clip_norm``. E.g. ``hparam_names("adamw", "warmup_cosine")`` is ``("lr", "warmup_steps",
    "decay_steps", "min_lr_ratio", "weight_decay", "b1", "b2", "eps", "clip_norm")``.

    Args:
        optimizer: A built-in optimizer's name.
        schedule: A schedule's name, or a tuple of them (a per-member choice: the union of
            their names and the code ``schedule``, :mod:`jaxhpo.optim.choices`).

    Returns:
        The names, in a fixed order, without duplicates.

    Raises:
        ValueError: If ``optimizer`` or ``schedule`` is unknown.
    """
    entry = optimizer_entry(optimizer)
    if not isinstance(schedule, str):
        return schedule_choice_names(tuple(schedule)) + entry.names
    return schedule_entry(schedule).names + entry.names
