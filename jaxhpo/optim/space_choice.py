"""The optimizer and the schedule searched from a run's space: ``space.optimizer=[adamw, sgd]``.

A space dimension named ``optimizer`` (or ``schedule``) whose values are names (built-in names or
``module:factory`` references; schedule names) makes the run's optimizer (schedule) a per-member
choice among those values (:mod:`jaxhpo.optim.choices`: one program, a ``lax.switch`` on the
member's code). The strategies then search the *code*, an index into the values: the space they
see holds ``optimizer: [0, 1, ...]`` (a fixed name is a choice of one, code 0), and every ``when``
that names the dimension's values is rewritten to the codes. :func:`labels` maps codes back to
names for the reports.

    jaxhpo run 'space.optimizer=[adamw, sgd, optax:lion]' 'space.schedule=[warmup_cosine, constant]'
"""

from __future__ import annotations

from typing import Any

from jaxhpo import optim, refs
from jaxhpo.config import Config, ConfigError
from jaxhpo.optim.choices import OPTIMIZER, SCHEDULE
from jaxhpo.space import Choice, Fixed, Space

#: The space dimensions that choose a program, and the config field each one replaces.
PROGRAM_DIMS = (OPTIMIZER, SCHEDULE)


def _names(space: Space, name: str) -> tuple[str, ...] | None:
    """The names a program dimension chooses among (None: not in the space, or given as codes)."""
    if name not in space.names:
        return None
    dim = space[name]
    values = (
        dim.values if isinstance(dim, Choice) else (dim.value,) if isinstance(dim, Fixed) else ()
    )
    if not values or not all(isinstance(v, str) for v in values):
        return None
    known = optim.OPTIMIZERS if name == OPTIMIZER else optim.SCHEDULES
    for v in values:
        if v not in known and not (name == OPTIMIZER and refs.is_reference(v)):
            extra = ", or module:factory such as optax:lion" if name == OPTIMIZER else ""
            raise ConfigError(
                f"space.{name}: unknown {v!r} (choose from {', '.join(known)}{extra})"
            )
    return tuple(values)


def space_labels(space: Space) -> dict[str, tuple[str, ...]]:
    """``name -> the names its codes index`` for each program dimension ``space`` chooses by
    name (the space as written, before :func:`as_codes`)."""
    out = {n: _names(space, n) for n in PROGRAM_DIMS}
    return {n: v for n, v in out.items() if v is not None}


def labels(cfg: Config) -> dict[str, tuple[str, ...]]:
    """:func:`space_labels` of the run's space (``cfg.space``)."""
    return space_labels(Space.from_config(cfg.space, where="space"))


def program(cfg: Config) -> tuple[Any, Any]:
    """The ``(optimizer, schedule)`` arguments of the run's population: the config's, or the
    tuple of names its space chooses among."""
    chosen = labels(cfg)
    return (
        chosen.get(OPTIMIZER, cfg.optim.optimizer),
        chosen.get(SCHEDULE, cfg.optim.schedule),
    )


def as_codes(cfg: Config, space: Space) -> Space:
    """``space`` with each program dimension's names replaced by their codes (and the ``when``
    conditions that name them); ``space`` itself when it chooses no program by name."""
    chosen = labels(cfg)
    if not chosen:
        return space
    code = {n: {v: i for i, v in enumerate(vals)} for n, vals in chosen.items()}
    dims = {}
    for name in space.names:
        dim = space[name]
        if name in code:
            n = len(code[name])
            dim = Choice(tuple(range(n))) if n > 1 else Fixed(0)
        dims[name] = dim
    when = {
        name: tuple(
            (p, tuple(code[p][v] for v in vals) if p in code else vals) for p, vals in conds
        )
        for name, conds in space.when.items()
    }
    return Space(dims, where=space.where, when=when)
