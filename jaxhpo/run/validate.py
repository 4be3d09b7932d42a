"""The names of a configuration resolved against the registries, checked in one pass.

:func:`jaxhpo.config.build` parses and checks values that need no registry (it knows no task,
optimizer or strategy, so the config layer imports none of them). :func:`check_config` resolves
every name a run will read: the task (a built-in kind or a user's ``module:Class``), the optimizer
and schedule, the member mode, the µP settings, the strategy and its own settings (typed by the
strategy's ``Config``) and the storage URLs; it returns the config with the strategy's settings
complete, as they are written to ``config.yaml``. :func:`jaxhpo.run.prepare.prepare` runs it first,
so the CLI, :func:`jaxhpo.tune` and research code get the same one-line errors before anything
is built or written.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from jaxhpo import optim, refs
from jaxhpo.config import (
    RENAMED_STRATEGY_KEYS,
    Config,
    ConfigError,
    StrategyConfig,
    TaskConfig,
    merge_settings,
)
from jaxhpo.models import mup
from jaxhpo.objectives import parse_constraints, parse_objectives
from jaxhpo.population import MEMBER_MODES
from jaxhpo.storage_url import check_storage_url
from jaxhpo.strategies import STRATEGIES
from jaxhpo.strategies.base import NoConfig, Strategy, config_names
from jaxhpo.tasks import TASKS
from jaxhpo.tasks.tokens import TokenFileTask


def check_config(cfg: Config, strategy: Strategy | None = None) -> Config:
    """Every name ``cfg`` holds resolved and checked; returns ``cfg`` with
    ``strategy.options`` the strategy's complete settings (those of ``strategy``, a strategy
    object written outside the package, when given: its name needs no registry).

    Raises:
      ConfigError: one line naming the field.
    """
    _check_task(cfg)
    _check_choice("model.parametrization", cfg.model.parametrization, mup.PARAMETRIZATIONS)
    if cfg.model.init_scheme is not None:
        _check_choice("model.init_scheme", cfg.model.init_scheme, mup.INIT_SCHEMES)
    if refs.is_reference(cfg.optim.optimizer):
        _user_object(cfg.optim.optimizer, "optim.optimizer", want_class=False)
    elif cfg.optim.optimizer not in optim.OPTIMIZERS:
        raise ConfigError(
            f"optim.optimizer: unknown '{cfg.optim.optimizer}' "
            f"(choose from {', '.join(optim.OPTIMIZERS)}, or module:factory such as "
            "optax:lion)"
        )
    _check_choice("optim.schedule", cfg.optim.schedule, optim.SCHEDULES)
    _check_choice("population.mode", cfg.population.mode, MEMBER_MODES)
    if cfg.report.optuna_storage is not None:
        try:
            check_storage_url(cfg.report.optuna_storage, "report.optuna_storage")
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if strategy is None:
        strategy_cls, settings = strategy_class(cfg.strategy.name), strategy_settings(cfg.strategy)
    else:  # its Config typed already; a duck-typed strategy may have none
        strategy_cls, settings = type(strategy), getattr(strategy, "config", NoConfig())
    check_objectives(cfg.strategy, strategy_cls, settings)
    if cfg.population.size is None and not strategy_cls.capabilities.decides_size:
        raise ConfigError(f"population.size: required for strategy '{cfg.strategy.name}'")
    options = dataclasses.asdict(settings)
    section = dataclasses.replace(cfg.strategy, options=options)
    if len(section.objectives) == 1 and not section.constraints:  # one objective: the metric
        section = dataclasses.replace(section, metric=next(iter(section.objectives)), objectives={})
    return dataclasses.replace(cfg, strategy=section)


def check_objectives(
    section: StrategyConfig, strategy_cls: type[Strategy], settings: Any = None
) -> None:
    """``strategy.objectives`` and ``strategy.constraints`` parse, and a strategy without a
    multi-objective form is not given several objectives or constraints."""
    try:
        objectives = parse_objectives(section.objectives)
        constraints = parse_constraints(section.constraints)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    several = len(objectives) > 1 or bool(constraints)
    if several and not strategy_cls.capabilities.objectives:
        raise ConfigError(
            f"strategy.objectives: strategy '{section.name}' optimises one objective "
            "(strategy.metric); choose a strategy with a multi-objective form"
        )
    check = getattr(strategy_cls, "check_objectives", None)
    if several and settings is not None and check is not None:
        try:
            check(settings, objectives, constraints)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def strategy_class(name: str) -> type[Strategy]:
    """The built-in strategy called ``name``; a one-line error listing the names otherwise."""
    if name not in STRATEGIES:
        raise ConfigError(f"strategy.name: unknown '{name}' (choose from {', '.join(STRATEGIES)})")
    return STRATEGIES[name]


def strategy_settings(section: StrategyConfig) -> Any:
    """The strategy's own settings as its typed ``Config`` (checked by its ``__post_init__``).

    Raises:
      ConfigError: ``strategy.bo_candidates: renamed strategy.candidates ...`` for a key of the
        old flat section; ``strategy.fraction: not a setting of strategy 'random' ...`` for a
        key the strategy does not read (it would be silently ignored).
    """
    cls = strategy_class(section.name)
    names = config_names(cls)
    for key in section.options:
        if key in names:
            continue
        new = RENAMED_STRATEGY_KEYS.get(key)
        if new is not None and new in names:
            raise ConfigError(
                f"strategy.{key}: renamed strategy.{new} (each strategy's settings now sit "
                f"beside its name: strategy: {{name: {section.name}, {new}: ...}})"
            )
        raise ConfigError(
            f"strategy.{key}: not a setting of strategy '{section.name}' "
            f"(its settings: {', '.join(('name', 'metric', *names))})"
        )
    return merge_settings(cls.Config(), dict(section.options), "strategy")


#: The strategies that read each prefix of the old flat section's fields.
_OLD_PREFIXES: dict[str, tuple[str, ...]] = {
    "grid_": ("grid",),
    "halving_": ("halving", "hyperband"),
    "es_": ("evo",),
    "bo_": ("bo",),
    "optuna_": ("optuna",),
    "rl_": ("rl",),
    "hypergrad_": ("hypergrad", "implicit", "pes", "truncated_es"),
    "pes_": ("pes", "truncated_es"),
    "implicit_": ("implicit",),
}


def upgrade_strategy_section(section: dict[str, Any]) -> dict[str, Any]:
    """A ``strategy:`` section of a run directory written before the settings moved to their
    strategy (every flat field, most at defaults): the chosen strategy's settings under their
    new names, the other strategies' fields dropped. A current section is returned as is."""
    if "grid_points" not in section or "bo_candidates" not in section:
        return section
    name = section.get("name", "random")
    cls = STRATEGIES.get(name)
    names = config_names(cls) if cls is not None else ()
    out = {k: section[k] for k in ("name", "metric") if k in section}
    out.update({k: v for k, v in section.items() if k in names})
    for old, new in RENAMED_STRATEGY_KEYS.items():
        owners = next(v for p, v in _OLD_PREFIXES.items() if old.startswith(p))
        if old in section and new in names and name in owners:
            out[new] = section[old]  # wins over an old field of the same name
    return out


def _check_task(cfg: Config) -> None:
    if refs.is_reference(cfg.task.kind):
        _user_object(cfg.task.kind, "task.kind", want_class=True)
    elif cfg.task.kind not in TASKS:
        raise ConfigError(
            f"task.kind: unknown '{cfg.task.kind}' (choose from {', '.join(TASKS)}, "
            "or module:Class of your own task)"
        )
    elif cfg.task.args:
        raise ConfigError(
            f"task.args: only a task of your own (task.kind=module:Class) takes arguments; "
            f"set the fields of task '{cfg.task.kind}' directly"
        )
    else:
        _check_task_fields(cfg)


#: ``task:`` fields every built-in task has (the run's, not a constructor's).
_RUN_TASK_FIELDS = ("kind", "args", "folds")


def task_settings(kind: str) -> tuple[str, ...]:
    """The ``task:`` fields built-in task ``kind`` reads: its constructor's arguments (the
    ``lm`` task also those of the prepared-token task, ``data`` and ``feed``)."""
    classes = [TASKS[kind], *([TokenFileTask] if kind == "lm" else [])]
    names = {p for cls in classes for p in inspect.signature(cls).parameters if p != "model"}
    return tuple(sorted(names))


def _check_task_fields(cfg: Config) -> None:
    """A ``task.*`` field set (to other than its default) for a task that does not read it is
    refused: it would be silently ignored (e.g. ``task.modulus`` with ``task.kind=lm``)."""
    reads = task_settings(cfg.task.kind)
    default = TaskConfig()
    for field in dataclasses.fields(cfg.task):
        name = field.name
        if name in _RUN_TASK_FIELDS or name in reads:
            continue
        if getattr(cfg.task, name) != getattr(default, name):
            raise ConfigError(
                f"task.{name}: not a setting of task '{cfg.task.kind}' (its settings: "
                f"{', '.join(reads)})"
            )


def _check_choice(where: str, value: str, choices: Any) -> None:
    if value not in choices:
        raise ConfigError(f"{where}: unknown '{value}' (choose from {', '.join(choices)})")


def _user_object(text: str, where: str, want_class: bool) -> Any:
    """Imports a ``module:Name`` reference; a one-line ConfigError naming ``where``."""
    try:
        obj = refs.resolve(text, where)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if want_class and not isinstance(obj, type):
        raise ConfigError(f"{where}: '{text}' is not a class")
    if not callable(obj):
        raise ConfigError(f"{where}: '{text}' is not callable")
    return obj
