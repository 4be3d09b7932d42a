"""Preparing a run: everything a strategy or user can get wrong, checked before anything compiles.

:func:`prepare` builds the task, the search space, the strategy and the population from a config
and raises one-line :class:`~jaxhpo.config.ConfigError`s that name the field (the checks that
need nothing built live in :mod:`jaxhpo.run.checks`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import time
from typing import Any

import jax
import numpy as np

from jaxhpo import refs
from jaxhpo.config import Config, ConfigError, StrategyConfig, TrainConfig
from jaxhpo.objectives import parse_objectives
from jaxhpo.optim import resolve as resolve_optimizer
from jaxhpo.optim import space_choice as choice_space
from jaxhpo.population import Population, resolve_devices
from jaxhpo.population.buckets import BUCKET_HPARAMS, BucketedPopulation
from jaxhpo.run.checks import check_space, check_structure
from jaxhpo.run.input_checks import check_memory, check_optimizer_init, check_run_config
from jaxhpo.run.validate import check_config, strategy_class, strategy_settings
from jaxhpo.space import Space
from jaxhpo.strategies import Strategy
from jaxhpo.strategies.base import has_compiled_form
from jaxhpo.strategies.cv import CrossValidated
from jaxhpo.tasks import TASKS, Task
from jaxhpo.tasks.measured import requested, with_measured
from jaxhpo.tasks.tokens import TokenFileTask
from jaxhpo.tasks.user_task import build_user_task


def make_task(cfg: Config) -> Task:
    """Builds the task (reads or generates its data); errors name the config field."""
    if refs.is_reference(cfg.task.kind):  # a task of the user's own: module:Class(**args)
        return measured_task(cfg, build_user_task(cfg.task.kind, cfg.task.args, cfg.task.folds))
    model = dataclasses.asdict(cfg.model)
    task_cls = TASKS[cfg.task.kind]
    if cfg.task.data:  # prepared token files (jaxhpo.data)
        task_cls = token_task(cfg)
    if not task_cls.pools or model["pooling"] is None:
        model.pop("pooling")  # only a classifier pools; None keeps the task's default
    # Each task takes the TaskConfig fields its constructor names (kind is the registry key).
    accepted = inspect.signature(task_cls).parameters
    kwargs = {k: v for k, v in dataclasses.asdict(cfg.task).items() if k in accepted}
    task = task_cls(**kwargs, model=model)
    if cfg.task.folds > 1:
        task.set_folds(cfg.task.folds)
    return measured_task(cfg, task)


def measured_task(cfg: Config, task: Any) -> Any:
    """``task`` also reporting the metrics the framework measures (``params``, ``flops``:
    :mod:`jaxhpo.tasks.measured`) that the objectives, constraints or metric name."""
    section = cfg.strategy
    names = requested((section.metric,), section.objectives, section.constraints)
    try:
        return with_measured(task, names)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def token_task(cfg: Config) -> type:
    """The task of ``task.data`` (host-fed unless ``task.feed=device``)."""
    if cfg.task.kind != "lm":
        raise ConfigError(f"task.data: only task.kind=lm trains on it, not '{cfg.task.kind}'")
    host = cfg.task.feed == "host"
    if host and (cfg.train.compiled or cfg.population.structure == "buckets"):
        raise ConfigError(
            "task.feed: host-fed data trains in the host loop of one population "
            "(set task.feed=device, or train.compiled=false and no structure buckets)"
        )
    return TokenFileTask


def make_strategy(cfg: Config) -> Strategy:
    """The strategy ``strategy.name`` names, built from its typed settings."""
    return build_strategy(cfg.strategy, cfg.train)


def build_strategy(section: StrategyConfig, train: TrainConfig) -> Strategy:
    """The strategy of a ``strategy:`` section (its settings typed by the strategy's
    ``Config``) for a run of ``train``'s length; one-line ``ConfigError``s."""
    settings = strategy_settings(section)
    try:
        return strategy_class(section.name).from_config(settings, train, section.metric)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def opt_names(cfg: Config, space: Space) -> tuple[str, ...]:
    """The optimizer's per-member hyperparameter names (a factory's: ``lr``, the
    schedule's and the float arguments the space names)."""
    try:
        return resolve_optimizer(*choice_space.program(cfg), space.names).names
    except ValueError as e:
        raise ConfigError(str(e)) from None


#: Where each structural hyperparameter lives in the config.
_STRUCTURE_FIELDS = {
    "depth": ("model", "num_layers"),
    "heads": ("model", "num_heads"),
    "ff_width": ("model", "d_ff"),
    "d_model": ("model", "d_model"),
    "seq_len": ("task", "seq_len"),
}


def make_bucket_task(cfg: Config, structure: dict[str, int]) -> Task:
    """The task of one shape bucket: the config with its structural fields set."""
    parts: dict[str, dict[str, int]] = {"model": {}, "task": {}}
    for name, value in structure.items():
        section, field = _STRUCTURE_FIELDS[name]
        parts[section][field] = int(value)
    bucket = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, **parts["model"]),
        task=dataclasses.replace(cfg.task, **parts["task"]),
    )
    return make_task(bucket)


@dataclasses.dataclass
class Prepared:
    """Everything a run needs, built and checked before the first compile."""

    cfg: Config
    task: Task
    space: Space
    population: Population
    strategy: Strategy
    strategy_state: Any
    hparams: dict[str, np.ndarray]  # first population, float [P] per name (all names)
    size: int
    started: float = dataclasses.field(default_factory=time.perf_counter)  # prepare() began


def prepare(cfg: Config, strategy: Strategy | None = None, task: Any = None) -> Prepared:
    """Builds task, space, strategy and population; raises one-line ``ValueError``s.

    Args:
      cfg: the configuration.
      strategy: a strategy object to use instead of the one ``cfg.strategy`` names (for
        strategies written outside the package).
      task: a task object to use instead of building the one ``cfg.task`` names.
    """
    started = time.perf_counter()
    cfg = check_config(cfg, strategy)  # every name resolved, the strategy's settings typed
    check_run_config(cfg)  # name, pooling, ensemble/budget against the size: nothing built
    try:
        space = choice_space.as_codes(cfg, Space.from_config(cfg.space, where="space"))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not space.searched and cfg.strategy.name != "grid":
        raise ConfigError("space: no searched dimension (every entry is fixed)")
    task, structural = _checked_task(cfg, space, task)
    check_optimizer_init(cfg, space, task)  # a factory's abstract init on the task's params
    check_memory(task, cfg.population.size, cfg.task.folds)  # before the strategy samples
    strategy = strategy if strategy is not None else make_strategy(cfg)
    strategy, state, cols = _checked_strategy(cfg, space, strategy)
    size = len(next(iter(cols.values()))) if cols else (cfg.population.size or 1)
    if size != cfg.population.size:  # a size the strategy chose (grid, Hyperband, k folds)
        check_memory(task, size)
    population = _make_population(cfg, task, space, structural, strategy, size)
    full = _first_hparams(cfg, task, population, strategy, cols, size)
    return Prepared(cfg, task, space, population, strategy, state, full, size, started)


def _checked_task(cfg: Config, space: Space, task: Any) -> tuple[Task, tuple[str, ...]]:
    """The task (built here unless given), checked against the space and the config; and the
    space's structural dimensions."""
    if task is None and refs.is_reference(cfg.task.kind):
        task = make_task(cfg)  # a user's task: its hyperparameters are the object's
    elif task is not None and cfg.task.folds > 1 and task.folds == 1:
        task.set_folds(cfg.task.folds)
    task_hp = task if task is not None else TASKS[cfg.task.kind]
    known = opt_names(cfg, space) + tuple(task_hp.hparam_names)
    known += tuple(n for n in ("batch_size", *BUCKET_HPARAMS) if n in space.names)
    check_space(space, known, cfg, task_hp.hparam_domains)
    own = [n for n in BUCKET_HPARAMS if n in space.names]
    if own and task is not None and getattr(task, "model_config", None) is None:
        raise ConfigError(
            f"space.{own[0]}: task '{task.name}' has no structural settings to search "
            "(depth, heads, ff_width, d_model and seq_len are the built-in Transformer's)"
        )
    structural = check_structure(space, cfg)
    task = measured_task(cfg, task) if task is not None else make_task(cfg)
    if cfg.train.ensemble_top_k and not callable(getattr(task, "logits", None)):
        raise ConfigError(
            f"train.ensemble_top_k: task '{task.name}' has no logits(model, batch, hp) method "
            "whose softmax an ensemble could average"
        )
    if cfg.train.ensemble_top_k and set(task.metric_names) != {"loss", "accuracy"}:
        raise ConfigError(
            f"train.ensemble_top_k: task '{cfg.task.kind}' has no predicted distribution to "
            "average (its metrics: " + ", ".join(task.metric_names) + ")"
        )
    if cfg.strategy.metric not in task.metric_names:
        raise ConfigError(
            f"strategy.metric: unknown '{cfg.strategy.metric}' for task '{cfg.task.kind}' "
            f"(choose from {', '.join(task.metric_names)})"
        )
    for field in ("objectives", "constraints"):
        for name in getattr(cfg.strategy, field):
            if name not in task.metric_names:
                raise ConfigError(
                    f"strategy.{field}.{name}: task '{cfg.task.kind}' reports no metric "
                    f"'{name}' (its metrics: {', '.join(task.metric_names)})"
                )
    return task, structural


def _checked_strategy(
    cfg: Config, space: Space, strategy: Strategy
) -> tuple[Strategy, Any, dict[str, np.ndarray]]:
    """The strategy (cross-validated under k-fold), checked against the run's options; its
    state and the first population's hyperparameters."""
    try:
        if len(cfg.strategy.objectives) > 1:  # hypergradients descend the members' weightings
            strategy = strategy.for_study(parse_objectives(cfg.strategy.objectives))
        if cfg.task.folds > 1:  # every trial as k members, one per fold (strategies/cv.py)
            strategy = CrossValidated(strategy, cfg.task.folds)
        strategy.check(cfg.train.steps, cfg.train.segment_steps)
        if cfg.train.compiled and cfg.train.budget:
            raise ConfigError(
                "train.budget: not available with train.compiled=true (the compiled loop runs "
                "every segment); set one of them"
            )
        if cfg.train.compiled and cfg.population.structure == "buckets":
            raise ConfigError(
                "train.compiled: shape buckets run one program per bucket, not the whole run "
                "as one; set train.compiled=false or population.structure=masked"
            )
        if cfg.train.ensemble_top_k and cfg.population.structure == "buckets":
            raise ConfigError(
                "train.ensemble_top_k: not available with population.structure=buckets (the "
                "members' programs differ); use population.structure=masked"
            )
        if cfg.train.compiled and not has_compiled_form(strategy):
            raise ConfigError(
                f"train.compiled: strategy '{strategy.name}' decides on the host between "
                "segments and has no compiled form; set train.compiled=false"
            )
        state, cols = strategy.init(cfg.seed, space, cfg.population.size)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return strategy, state, cols


def _make_population(
    cfg: Config,
    task: Task,
    space: Space,
    structural: tuple[str, ...],
    strategy: Strategy,
    size: int,
) -> Population | BucketedPopulation:
    """The population trainer (one shape, or shape buckets), on its devices."""
    data = cfg.population.data_devices
    try:
        if data > len(jax.devices()):
            raise ValueError(
                f"population.data_devices: {data} requested but only {len(jax.devices())} "
                f"{jax.default_backend()} device(s) are visible"
            )
        args = (*choice_space.program(cfg), cfg.population.mode)
        args += (cfg.population.chunk_size,)
        if cfg.population.structure == "buckets":
            # each bucket shards over the most devices (up to population.devices) dividing it
            devices = cfg.population.devices or len(jax.devices()) // data
            population = BucketedPopulation(
                functools.partial(make_bucket_task, cfg),
                task,
                structural,
                *args,
                devices=devices,
                data_devices=data,
                placement=cfg.population.bucket_placement,
            )
            strategy.check_population(population)
        else:
            devices = resolve_devices(cfg.population.devices, size, len(jax.devices()) // data)
            population = Population(
                task,
                *args,
                devices=devices,
                data_devices=data,
                searched=space.names,
                fixed=fixed_task_hparams(task, space, cfg.population.specialise),
            )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return population


def fixed_task_hparams(task: Task, space: Space, specialise: bool = True) -> dict[str, float]:
    """The task hyperparameters one value holds for the whole run: those the space leaves out
    (at the task's defaults) and the space's fixed values. The step reads them as constants
    (``population.specialise``; see :attr:`jaxhpo.population.Population.fixed`)."""
    if not specialise:
        return {}
    probe = Population.task_defaults(task)
    out = {k: v for k, v in probe.items() if k not in space.names}
    for name in space.names:
        value = space[name].value if name not in space.searched else None
        if name in probe and isinstance(value, int | float):
            out[name] = float(value)
    return out


def _first_hparams(
    cfg: Config, task: Task, population: Any, strategy: Strategy, cols: dict, size: int
) -> dict[str, np.ndarray]:
    """The first population's hyperparameters, every name (defaults and schedule horizons
    filled in), checked against the run's length."""
    hp = {k: np.asarray(v, np.float64) for k, v in cols.items()}
    # Schedules decay over a member's life (the run, or one generation of a generation-based
    # searcher) unless the space says otherwise.
    horizon = strategy.member_steps(cfg.train.steps, cfg.train.segment_steps)
    for name, default in (("decay_steps", horizon), ("cycle_steps", horizon)):
        if name in population.opt_names and name not in hp:
            hp[name] = np.full(size, float(default))
    full = population.full_hparams(hp, size)
    epoch_size = getattr(population, "epoch_size", None)
    if epoch_size:  # members train for their epochs: the run must be long enough for them
        b = full.get("batch_size", np.full(size, float(task.batch_size)))
        need = int(np.max(np.ceil(full["epochs"].astype(np.float64) * epoch_size / b)))
        if need > cfg.train.steps:
            raise ConfigError(
                f"train.steps: {cfg.train.steps} steps would cut members short: the first "
                f"population's epochs and batch sizes need up to {need} steps"
            )
    return full
