"""Checks of a config that need nothing built: the search space against what the optimizer and
task read, structural dimensions against ``population.structure``, and the ``strategy.*``
fields against what the chosen strategy reads. Errors are one-line
:class:`~jaxhpo.config.ConfigError`s naming the field.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any

import numpy as np

from jaxhpo import optim
from jaxhpo.config import Config, ConfigError
from jaxhpo.population.buckets import BUCKET_HPARAMS
from jaxhpo.space import Choice, Fixed, Float, Int, Space
from jaxhpo.tasks import TASKS

#: Valid values of each optimizer hyperparameter: (low, high, low_inclusive, high_inclusive),
#: from the optimizer and schedule tables (jaxhpo.optim).
OPT_DOMAINS: dict[str, tuple[float, float, bool, bool]] = optim.DOMAINS


def _dim_values(dim) -> list[float]:
    if isinstance(dim, Float | Int):
        return [dim.low, dim.high]
    if isinstance(dim, Choice):
        return list(dim.values)
    if isinstance(dim, Fixed):
        return [dim.value]
    return []


def check_space(
    space: Space, known: tuple[str, ...], cfg: Config, task_domains: Any = None
) -> None:
    """Every dimension must be a hyperparameter this optimizer/task reads, numeric, in domain."""
    if task_domains is None:
        task_domains = TASKS[cfg.task.kind].hparam_domains
    domains = {k: (*v[:2], True, v[2]) for k, v in task_domains.items()}
    domains.update(OPT_DOMAINS)
    # per-member batch size: the first b rows of the task's batch (task.batch_size: the largest)
    domains["batch_size"] = (1, cfg.task.batch_size, True, True)
    # masked super-model: the model config gives the largest structure
    # (shape buckets build each structure as its own model: any positive size)
    masked = cfg.population.structure == "masked"
    domains["depth"] = (1, cfg.model.num_layers if masked else np.inf, True, True)
    domains["heads"] = (1, cfg.model.num_heads if masked else np.inf, True, True)
    domains["ff_width"] = (1, cfg.model.d_ff if masked else np.inf, True, True)
    domains["d_model"] = (1, np.inf, True, True)
    domains["seq_len"] = (2, np.inf, True, True)
    for name in space.names:
        where = f"space.{name}"
        if name not in known:
            raise ConfigError(
                f"{where}: not a hyperparameter of optimizer '{cfg.optim.optimizer}' with schedule "
                f"'{cfg.optim.schedule}' on task '{cfg.task.kind}' (known: {', '.join(known)})"
            )
        values = _dim_values(space[name])
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float | np.number):
                raise ConfigError(f"{where}: values must be numbers, got {v!r}")
        lo, hi, lo_in, hi_in = domains.get(name, (-np.inf, np.inf, True, True))
        for v in values:
            bad = v < lo or v > hi or (v == lo and not lo_in) or (v == hi and not hi_in)
            if bad:
                lb, rb = "[" if lo_in else "(", "]" if hi_in else ")"
                raise ConfigError(f"{where}: values must lie in {lb}{lo}, {hi}{rb}, got {v}")


def check_structure(space: Space, cfg: Config) -> tuple[str, ...]:
    """The structural dimensions of the space, checked against ``population.structure``.

    Under buckets every combination of their values must build a model (e.g. ``heads`` must
    divide ``d_model``): checked here, before anything compiles, for up to 4096 combinations.
    """
    names = tuple(n for n in BUCKET_HPARAMS if n in space.names)
    for n in names:
        dim = space[n]
        if isinstance(dim, Float) or any(float(v) != int(v) for v in _dim_values(dim)):
            raise ConfigError(
                f"space.{n}: a structural dimension must be an int or a choice of ints"
            )
    buckets = cfg.population.structure == "buckets"
    if not buckets:
        for n in ("d_model", "seq_len"):
            if n in names:
                raise ConfigError(
                    f"space.{n}: the masked super-model masks depth, heads and ff_width only; "
                    f"searching {n} needs population.structure=buckets"
                )
        return names
    if not names:
        raise ConfigError(
            "population.structure: buckets need a structural dimension in the space "
            f"({', '.join(BUCKET_HPARAMS)})"
        )
    if "seq_len" in names and "seq_len" not in inspect.signature(TASKS[cfg.task.kind]).parameters:
        raise ConfigError(f"space.seq_len: task '{cfg.task.kind}' has no sequence length")
    values = {}
    for n in names:
        dim = space[n]
        if isinstance(dim, Int):
            values[n] = list(range(int(dim.low), int(dim.high) + 1))
        else:
            values[n] = [int(v) for v in _dim_values(dim)]
        if min(values[n]) < 1:
            raise ConfigError(f"space.{n}: values must be positive ints, got {min(values[n])}")
    combos = int(np.prod([len(v) for v in values.values()]))
    if combos <= 4096:
        base = {
            "depth": cfg.model.num_layers,
            "heads": cfg.model.num_heads,
            "d_model": cfg.model.d_model,
        }
        for combo in itertools.product(*values.values()):
            s = {**base, **dict(zip(values, combo, strict=True))}
            if s["d_model"] % s["heads"]:
                where = "space.heads" if "heads" in names else "space.d_model"
                raise ConfigError(
                    f"{where}: heads {s['heads']} do not divide d_model {s['d_model']} (in shape "
                    "buckets every combination of the structural values must build a model)"
                )
    return names
