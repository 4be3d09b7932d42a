"""The Python entry point: tune a task object, get the best member back.

::

    result = jaxhpo.tune(MyTask(), {"lr": {"type": "float", "low": 1e-4, "high": 1e-1,
                                           "log": True}},
                         strategy="pbt", optimizer=optax.adamw, population=8, steps=600)
    result.best_hparams, result.best_metrics      # the best member by validation metric
    model = result.best_model()                   # its weights in the task's own module

With several objectives (``objectives={"loss": "min", "accuracy": "max"}``, optionally
``constraints={"accuracy": ">= 0.9"}``) ``result.front`` is the members table's rows on the
Pareto front, and ``result.model(member_id)`` any of their models (``kept``: the final
population holds its weights).

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
      members: one row per member (``members.csv``): the hyperparameters the space searched or
        fixed, ``val_*``, ``test_*``, ``diverged``, ``steps``.
      best_member: id of the best member by the validation metric (None if none is finite).
      best_hparams: its hyperparameters (the same columns as ``members``).
      best_metrics: its validation and test metrics.
      params: its ``nnx.Param`` state; ``model_state``: its other NNX state (batch stats).
      task: the task object that was tuned.
      curves: ``metrics.csv`` as a DataFrame: one row per member per evaluation (step,
        hyperparameters, ``train_loss``, ``val_*``).
      state: the final population's state (on its devices): every final member's weights.
      objectives: the study's objectives and constraints
        (:class:`jaxhpo.reporting.front.Front`; one objective: the metric in its direction).
    """

    run_dir: Path
    members: pd.DataFrame
    best_member: int | None
    best_hparams: dict[str, float]
    best_metrics: dict[str, float]
    params: Any
    model_state: Any
    task: Any
    curves: pd.DataFrame | None = None
    state: Any = dataclasses.field(default=None, repr=False)
    objectives: Any = None

    @property
    def front(self) -> pd.DataFrame:
        """The members on the Pareto front (:func:`jaxhpo.pareto.front_mask`: feasible and
        non-dominated in the study's objectives; diverged members never), rows of
        :attr:`members` in their order, with a column ``kept``: whether the final population
        holds the member's weights, so :meth:`model` can build it. With one objective: the
        best members (ties included)."""
        from jaxhpo import pareto

        if self.objectives is None:
            on = np.zeros(len(self.members), bool)
        else:
            on = pareto.front_mask(*self.objectives.matrix(self.members))
        rows = self.members[on]
        ids = [] if self.state is None else np.asarray(parallel.to_host(self.state.member_id))
        return rows.assign(kept=np.isin(rows["member"].to_numpy(), ids))

    def summary(self) -> str:
        """Two lines: the best member's hyperparameters, its metrics and the run directory."""
        return (
            f"best member {self.best_member}: {self.best_hparams}\n"
            f"metrics {self.best_metrics}; run directory {self.run_dir}"
        )

    def load_into(self, module: nnx.Module, member_id: int | None = None) -> nnx.Module:
        """Writes a member's weights (and batch statistics) into ``module``; the best member's
        without ``member_id``."""
        params, model_state = self._weights(member_id)
        nnx.update(module, params, model_state)
        return module

    def model(self, member_id: int | None = None) -> nnx.Module:
        """A fresh module of the task with a member's weights, in evaluation mode: the best
        member's without ``member_id``, else any member of the final population (a member
        replaced during the run, by PBT or a new generation, kept no weights).

        Raises:
          ValueError: naming the members whose weights the run kept.
        """
        member = self.best_member if member_id is None else int(member_id)
        hp = dict(self.task.hparam_defaults)
        row = self.members[self.members["member"] == member]
        for k in self.task.hparam_names:
            if k in row.columns and len(row) and np.isfinite(float(row[k].iloc[0])):
                hp[k] = float(row[k].iloc[0])
        params, model_state = self._weights(member)
        module = self.task.init(jax.random.key(0), {k: np.float32(v) for k, v in hp.items()})
        nnx.update(module, params, model_state)
        module.eval()
        return module

    def best_model(self) -> nnx.Module:
        """A fresh module of the task with the best member's weights, in evaluation mode."""
        return self.model(None)

    def _weights(self, member_id: int | None) -> tuple[Any, Any]:
        """``(params, model_state)`` of a member of the final population, on the host."""
        if member_id is None or member_id == self.best_member:
            if self.params is None:
                raise ValueError("no member has a finite validation metric: nothing to load")
            return self.params, self.model_state
        ids = [] if self.state is None else np.asarray(parallel.to_host(self.state.member_id))
        if int(member_id) not in list(ids):
            kept = ", ".join(str(int(i)) for i in ids) or "none"
            raise ValueError(
                f"member_id: member {member_id} is not in the final population, whose weights "
                f"the run kept (members {kept})"
            )
        return member_weights(self.state, int(member_id))


def member_weights(state: Any, member_id: int) -> tuple[Any, Any]:
    """``(params, model_state)`` of one member of a population state, on the host."""
    ids = np.asarray(parallel.to_host(state.member_id))
    slot = int(np.flatnonzero(ids == member_id)[0])
    pick = jax.jit(lambda t: jax.tree.map(lambda x: x[slot], t))
    return parallel.to_host(pick((state.params, state.model_state)))


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
    first_member: int = 0,
    steps: int = 300,
    segment_steps: int = 50,
    metric: str = "loss",
    objectives: Mapping[str, str] | None = None,
    constraints: Mapping[str, str] | None = None,
    seed: int = 0,
    out_dir: str | Path = "runs",
    name: str | None = None,
    points: Sequence[Mapping[str, float]] | None = None,
    settings: Mapping[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
    quiet: bool = False,
) -> TuneResult:
    """Tunes ``task`` and returns the best member.

    The defaults are :data:`jaxhpo.presets.USER_TASK_DEFAULTS`, which ``jaxhpo run
    task.kind=module:Class`` starts from too: the same task, space, strategy and seed give the
    same run from Python and from the command line.

    Args:
      task: a task object (:class:`jaxhpo.ModelTask` subclass, or a built-in task).
      space: the search space, as in a config file's ``space:`` section (name -> a value, a
        list of choices, ``loguniform(a, b)`` and the other shorthands, or
        ``{type: float|int|choice, low, high, log, values}``); names are ``lr`` (the learning
        rate, which an optax factory gets as ``learning_rate``), the factory's other float
        arguments (``weight_decay``, ``b1``, ...), the schedule's and the task's ``hparams``.
      strategy: a strategy name (``random``, ``sobol``, ``grid``, ``pbt``, ``halving``,
        ``hyperband``, ``median``, ``evo``, ``bo``, ``optuna``, ``rl``, ``hypergrad``,
        ``implicit``, ``pes``, ...) or a :class:`jaxhpo.Strategy` object.
      optimizer: a built-in name (``adamw``, ``lion``, ...) or an optax factory
        (``optax.adamw``, ``optax.lion``, a function of yours returning a
        ``GradientTransformation``), defined at module level.
      schedule: the learning-rate schedule (``constant``, ``warmup_cosine``, ...).
      population: members (None: the strategy decides, e.g. a full grid).
      first_member: the first member's id (``population.first_member``), the others' follow.
        A member's initial weights, data order and dropout derive from the seed and its id, so
        ``population=1, points=[hp], first_member=5`` trains member 5 of a larger run with the
        same seed and settings (``hp``: its hyperparameters, which its strategy kept) alone:
        the same member, bit for bit on CPU.
      steps: optimizer steps per member.
      segment_steps: steps between evaluations.
      metric: the validation metric strategies rank by (one of the task's metrics), and the
        one :attr:`TuneResult.best_member` is chosen by.
      objectives: several objectives instead, metric -> ``min`` | ``max``
        (``strategy.objectives``), e.g. ``{"loss": "min", "accuracy": "max"}``; the strategy
        must have a multi-objective form; :attr:`TuneResult.front` is their Pareto front. One
        objective alone is ``metric`` in that direction.
      constraints: metric -> ``"<= 2e6"`` (``<=``, ``>=``, ``<``, ``>``; ``strategy.constraints``):
        members that violate one are infeasible, never on the front.
      seed: the run's seed.
      out_dir: the run directory's parent folder.
      name: the run's name (default ``TASKNAME-STRATEGY``, as from the command line).
      points: explicit first members, name -> value (``strategy.points``), e.g.
        ``population=1, points=[{"lr": 3e-3}]`` trains that one point; the rest are sampled.
      settings: more config sections, e.g. ``{"strategy": {"fraction": 0.25},
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
        "population": {"size": population, "first_member": _plain_int(first_member)},
        "train": {"steps": steps, "segment_steps": segment_steps},
    }
    if points is not None:
        layer["strategy"]["points"] = [dict(p) for p in points]
    for field, value in (("objectives", objectives), ("constraints", constraints)):
        if value is not None:
            if not isinstance(value, Mapping):
                raise TypeError(f"{field}: expected a mapping metric -> ..., got {_short(value)}")
            layer["strategy"][field] = dict(value)
    if objectives is not None and len(objectives) == 1 and not constraints:
        metric = str(next(iter(objectives)))  # one objective: the metric (as the config does)
    cfg = run_config(task, layer, name, settings)
    prep = experiment.prepare(
        cfg, strategy=None if isinstance(strategy, str) else strategy, task=task
    )
    out = experiment.run(cfg, prepared=prep, quiet=quiet, callbacks=callbacks)
    front = study_objectives(cfg.strategy, metric, metric in task.maximized)
    return result_of(out, task, metric, metric in task.maximized, front)


def study_objectives(section: Any, metric: str, maximize: bool) -> Any:
    """The study's objectives and constraints as a :class:`jaxhpo.reporting.front.Front`; a
    study of one metric: that metric in its direction."""
    from jaxhpo.objectives import Objective
    from jaxhpo.reporting.front import Front

    several = Front.of({"objectives": section.objectives, "constraints": section.constraints})
    return several or Front((Objective(metric, maximize),), ())


def run_config(
    task: Any, layer: dict[str, Any], name: str | None, settings: Mapping[str, Any] | None
) -> config_lib.Config:
    """The run's config: ``layer`` (:func:`tune`'s arguments) with the task's section, the
    run's name (``TASKNAME-STRATEGY`` unless given) and ``settings`` merged in, checked."""
    from jaxhpo.tasks.user_task import check_user_config, task_label

    layer = {**layer, "task": task_config(task)}
    layer["name"] = name if name is not None else f"{task_label(task)}-{layer['strategy']['name']}"
    extra = {k: dict(v) if isinstance(v, Mapping) else v for k, v in (settings or {}).items()}
    for section, values in extra.items():
        if isinstance(values, dict) and isinstance(layer.get(section), dict):
            layer[section] = {**layer[section], **values}
        else:
            layer[section] = values
    cfg = config_lib.build(config_lib.Config(), layer)
    config_lib.validate(cfg)
    check_user_config(cfg)
    return cfg


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


def _plain_int(value: Any) -> Any:
    """A NumPy integer (a member id read from ``TuneResult.members``) as an ``int``; anything
    else as given, for the config to check."""
    return int(value) if isinstance(value, np.integer) else value


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


def result_of(
    out: Any, task: Any, metric: str, maximize: bool, objectives: Any = None
) -> TuneResult:
    """The best member of a finished run (``experiment.RunResult``) and the study's objectives
    (:func:`study_objectives`)."""
    from jaxhpo.results import read_metrics

    members = out.members
    curves = read_metrics(out.run_dir) if (Path(out.run_dir) / "metrics.csv").exists() else None
    col = f"val_{metric}"
    ok = members[~members["diverged"].astype(bool)]
    ok = ok[np.isfinite(ok[col].to_numpy(np.float64))]
    if ok.empty:
        return TuneResult(
            out.run_dir, members, None, {}, {}, None, None, task, curves, out.state, objectives
        )
    row = ok.loc[ok[col].idxmax() if maximize else ok[col].idxmin()]
    best = int(row["member"])
    ids = np.asarray(parallel.to_host(out.state.member_id))
    params = model_state = None
    if best in ids.tolist():
        params, model_state = member_weights(out.state, best)
    metrics = {c: float(row[c]) for c in members.columns if c.startswith(("val_", "test_"))}
    skip = {"member", "diverged", "active", "step", "steps"}
    hparams = {
        c: float(row[c])
        for c in members.columns
        if c not in skip and c not in metrics and np.issubdtype(members[c].dtype, np.number)
    }
    return TuneResult(
        out.run_dir, members, best, hparams, metrics, params, model_state, task, curves, out.state,
        objectives,
    )  # fmt: skip
