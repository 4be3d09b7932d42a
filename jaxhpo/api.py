"""The Python entry point: tune a task object, get the best member back.

::

    result = jaxhpo.tune(MyTask(), {"lr": {"type": "float", "low": 1e-4, "high": 1e-1,
                                           "log": True}},
                         strategy="pbt", optimizer=optax.adamw, population=8, steps=600)
    result.best_hparams, result.best_metrics      # the best member by validation metric
    model = result.best_model()                   # its weights in the task's own module

The run directory is written as by ``jaxhpo run``; its ``config.yaml`` names the task and the
optimizer factory by importable reference (``task.kind: module:Class``, ``task.args``), so
``jaxhpo run RUN_DIR/config.yaml`` re-runs it and ``jaxhpo resume RUN_DIR`` resumes it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd
from flax import nnx

from jaxhpo import config as config_lib
from jaxhpo import parallel, refs


@dataclasses.dataclass
class TuneResult:
    """What :func:`tune` returns.

    Attributes:
      run_dir: the run directory (tables, plots, logs, checkpoints).
      members: one row per member: hyperparameters, ``val_*``, ``test_*``, ``diverged``.
      best_member: id of the best member by the validation metric (None if none is finite).
      best_hparams: its hyperparameters.
      best_metrics: its validation and test metrics.
      params: its ``nnx.Param`` state; ``model_state``: its other NNX state (batch stats).
      task: the task object that was tuned.
    """

    run_dir: Path
    members: pd.DataFrame
    best_member: int | None
    best_hparams: dict[str, float]
    best_metrics: dict[str, float]
    params: Any
    model_state: Any
    task: Any

    def summary(self) -> str:
        """Two lines: the best member's hyperparameters, its metrics and the run directory."""
        return (
            f"best member {self.best_member}: {self.best_hparams}\n"
            f"metrics {self.best_metrics}; run directory {self.run_dir}"
        )

    def load_into(self, module: nnx.Module) -> nnx.Module:
        """Writes the best member's weights (and batch statistics) into ``module``."""
        if self.params is None:
            raise ValueError("no member has a finite validation metric: nothing to load")
        nnx.update(module, self.params, self.model_state)
        return module

    def best_model(self) -> nnx.Module:
        """A fresh module of the task with the best member's weights, in evaluation mode."""
        hp = {k: self.best_hparams[k] for k in self.task.hparam_names if k in self.best_hparams}
        module = self.task.init(jax.random.key(0), {k: np.float32(v) for k, v in hp.items()})
        self.load_into(module)
        module.eval()
        return module


def _optimizer_name(optimizer: str | Callable) -> str:
    return optimizer if isinstance(optimizer, str) else refs.reference(optimizer)


def tune(
    task: Any,
    space: Mapping[str, Any],
    *,
    strategy: str | Any = "random",
    optimizer: str | Callable = "adamw",
    schedule: str = "constant",
    population: int | None = 8,
    steps: int = 300,
    segment_steps: int = 50,
    metric: str = "loss",
    seed: int = 0,
    out_dir: str | Path = "runs",
    name: str | None = None,
    settings: Mapping[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
    quiet: bool = False,
) -> TuneResult:
    """Tunes ``task`` and returns the best member.

    Args:
      task: a task object (:class:`jaxhpo.ModelTask` subclass, or a built-in task).
      space: the search space, as in a config file's ``space:`` section (name -> a value, a
        list of choices, or ``{type: float|int|choice, low, high, log, values}``); names are
        ``lr`` (the learning rate, which an optax factory gets as ``learning_rate``), the
        factory's other float arguments (``weight_decay``, ``b1``, ...), the schedule's and
        the task's ``hparams``.
      strategy: a strategy name (``random``, ``sobol``, ``grid``, ``pbt``, ``halving``,
        ``hyperband``, ``median``, ``evo``, ``bo``, ``optuna``, ``rl``, ``hypergrad``,
        ``implicit``, ``pes``, ...) or a :class:`jaxhpo.Strategy` object.
      optimizer: a built-in name (``adamw``, ``lion``, ...) or an optax factory
        (``optax.adamw``, ``optax.lion``, a function of yours returning a
        ``GradientTransformation``), defined at module level.
      schedule: the learning-rate schedule (``constant``, ``warmup_cosine``, ...).
      population: members (None: the strategy decides, e.g. a full grid).
      steps, segment_steps: optimizer steps per member; steps between evaluations.
      metric: the validation metric strategies rank by (one of the task's metrics).
      seed, out_dir, name: the run's seed, parent folder and name.
      settings: more config sections, e.g. ``{"strategy": {"pbt_fraction": 0.25},
        "train": {"checkpoint_every": 2}, "population": {"mode": "vmap"}}``.
      callbacks: objects with ``on_start`` / ``on_evaluation`` / ``on_end`` hooks
        (:mod:`jaxhpo.reporting.callbacks`), e.g. :class:`jaxhpo.reporting.trackers.WandbCallback`.
      quiet: no progress output.

    Returns:
      A :class:`TuneResult`.

    Raises:
      jaxhpo.config.ConfigError: one line naming the field, before anything compiles.
      TypeError / ValueError: one line naming the argument (a space that is not a mapping, a
        strategy that is neither a name nor a Strategy, a task hyperparameter that is not a
        number, a task whose ``init`` raises), before anything is built.
    """
    from jaxhpo import experiment

    check_arguments(task, space, strategy, optimizer, settings)
    strategy_name = strategy if isinstance(strategy, str) else strategy.name
    layer: dict[str, Any] = {
        "seed": seed,
        "out_dir": str(out_dir),
        "space": dict(space),
        "strategy": {"name": strategy_name, "metric": metric},
        "optim": {"optimizer": _optimizer_name(optimizer), "schedule": schedule},
        "population": {"size": population},
        "train": {"steps": steps, "segment_steps": segment_steps},
        "task": task_config(task),
    }
    if name is not None:
        layer["name"] = name
    extra = {k: dict(v) if isinstance(v, Mapping) else v for k, v in (settings or {}).items()}
    for section, values in extra.items():
        if isinstance(values, dict) and isinstance(layer.get(section), dict):
            layer[section] = {**layer[section], **values}
        else:
            layer[section] = values
    cfg = config_lib.build(config_lib.Config(), layer)
    config_lib.validate(cfg)
    prep = experiment.prepare(
        cfg, strategy=None if isinstance(strategy, str) else strategy, task=task
    )
    out = experiment.run(cfg, prepared=prep, quiet=quiet, callbacks=callbacks)
    return result_of(out, task, metric, metric in task.maximized)


def check_arguments(
    task: Any, space: Any, strategy: Any, optimizer: Any, settings: Any = None
) -> None:
    """The arguments of :func:`tune` whose type the config cannot check, and the task object
    (:func:`jaxhpo.tasks.user_task.check_task`), before anything is built.

    Raises:
      TypeError / ValueError: one line naming the argument.
    """
    from jaxhpo.tasks.user_task import check_task

    if not isinstance(space, Mapping):
        raise TypeError(
            f"space: expected a mapping name -> value, list of choices or {{type: float|int|"
            f"choice, ...}}, got {type(space).__name__} {_short(space)}"
        )
    if not isinstance(strategy, str) and not (
        isinstance(getattr(strategy, "name", None), str)
        and callable(getattr(strategy, "init", None))
    ):
        raise TypeError(
            f"strategy: expected a strategy name (random, pbt, bo, ...) or a jaxhpo.Strategy "
            f"object, got {type(strategy).__name__} {_short(strategy)}"
        )
    if not (isinstance(optimizer, str) or callable(optimizer)):
        raise TypeError(
            f"optimizer: expected a built-in name or an optax factory (optax.adamw), got "
            f"{type(optimizer).__name__} {_short(optimizer)}"
        )
    if settings is not None and not isinstance(settings, Mapping):
        raise TypeError(
            f"settings: expected a mapping section -> fields, got {type(settings).__name__}"
        )
    check_task(task, "task")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def task_config(task: Any) -> dict[str, Any]:
    """The ``task:`` config section that builds ``task`` again: a built-in task's kind, or
    ``kind: module:Class`` with the constructor's arguments."""
    from jaxhpo.tasks import TASKS

    for kind, cls in TASKS.items():
        if type(task) is cls:
            raise ValueError(
                f"task: built-in task '{kind}' objects are configured by their fields; use "
                f"jaxhpo run with task.kind={kind}, or pass a task of your own"
            )
    args = getattr(task, "init_args", None)
    if args is None:
        raise ValueError(
            f"task: {type(task).__name__} does not record its constructor's arguments; "
            "subclass jaxhpo.ModelTask"
        )
    try:
        json.dumps(args)
    except TypeError:
        raise ValueError(
            f"task.args: the arguments of {type(task).__name__} must be plain values "
            f"(numbers, strings, lists, dicts) to be written to config.yaml, got {args!r}"
        ) from None
    return {"kind": refs.reference(type(task)), "args": dict(args)}


def result_of(out: Any, task: Any, metric: str, maximize: bool) -> TuneResult:
    """The best member of a finished run (``experiment.RunResult``)."""
    members = out.members
    col = f"val_{metric}"
    ok = members[~members["diverged"].astype(bool)]
    ok = ok[np.isfinite(ok[col].to_numpy(np.float64))]
    if ok.empty:
        return TuneResult(out.run_dir, members, None, {}, {}, None, None, task)
    row = ok.loc[ok[col].idxmax() if maximize else ok[col].idxmin()]
    best = int(row["member"])
    state = out.state
    ids = np.asarray(parallel.to_host(state.member_id))
    params = model_state = None
    if best in ids.tolist():
        slot = int(np.flatnonzero(ids == best)[0])
        pick = jax.jit(lambda t: jax.tree.map(lambda x: x[slot], t))
        params, model_state = parallel.to_host(pick((state.params, state.model_state)))
    metrics = {c: float(row[c]) for c in members.columns if c.startswith(("val_", "test_"))}
    skip = {"member", "diverged", "active", "step", "steps"}
    hparams = {
        c: float(row[c])
        for c in members.columns
        if c not in skip and c not in metrics and np.issubdtype(members[c].dtype, np.number)
    }
    return TuneResult(out.run_dir, members, best, hparams, metrics, params, model_state, task)
