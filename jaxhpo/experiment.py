"""The run loop: segments -> evaluate -> strategy -> log.

::

    strategy.init ──> hparams[P] ──> population.init
    repeat until train.steps:
        train_segment   one jitted call, K steps, all members
        evaluate        one jitted call, validation metrics [P]
        log rows        metrics.csv (flushed), progress bar
        strategy.update ──> PopulationUpdate, applied the same way for every strategy
    evaluate on test; members.csv, metrics.parquet, summary.md, plots

Everything a strategy or user can get wrong is checked by :func:`prepare` before anything compiles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import itertools
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from jaxhpo import parallel, refs
from jaxhpo.buckets import BUCKET_HPARAMS, BucketedPopulation
from jaxhpo.checkpoint import Checkpointer, CheckpointRefusedError, pack_tree, unpack_tree
from jaxhpo.config import Config, ConfigError
from jaxhpo.optim_factory import resolve as resolve_optimizer
from jaxhpo.population import Population, PopulationState, resolve_devices
from jaxhpo.results import RunWriter, new_run_dir
from jaxhpo.space import Choice, Fixed, Float, Int, Space
from jaxhpo.strategies import STRATEGIES, Observation, PopulationUpdate, Strategy
from jaxhpo.strategies.base import has_compiled_form, lineage_events
from jaxhpo.strategies.cv import CrossValidated
from jaxhpo.tasks import TASKS, Task

#: Valid values of each optimizer hyperparameter: (low, high, low_inclusive, high_inclusive).
OPT_DOMAINS: dict[str, tuple[float, float, bool, bool]] = {
    "lr": (0.0, np.inf, False, False),
    "learning_rate": (0.0, np.inf, False, False),
    "weight_decay": (0.0, np.inf, True, False),
    "b1": (0.0, 1.0, True, False),
    "b2": (0.0, 1.0, True, False),
    "eps": (0.0, np.inf, False, False),
    "momentum": (0.0, 1.0, True, False),
    "clip_norm": (0.0, np.inf, False, True),
    "warmup_steps": (0.0, np.inf, True, False),
    "decay_steps": (0.0, np.inf, False, False),
    "cycle_steps": (0.0, np.inf, False, False),
    "min_lr_ratio": (0.0, 1.0, True, True),
    "decay_rate": (0.0, np.inf, False, False),
    "adafactor_decay_rate": (0.0, 1.0, False, True),
    "clipping_threshold": (0.0, np.inf, False, True),
}


def make_task(cfg: Config) -> Task:
    """Builds the task (reads or generates its data); errors name the config field."""
    if refs.is_reference(cfg.task.kind):  # a task of the user's own: module:Class(**args)
        task_cls = refs.resolve(cfg.task.kind, "task.kind")
        try:
            task = task_cls(**cfg.task.args)
        except TypeError as e:
            raise ConfigError(f"task.args: {cfg.task.kind}: {e}") from None
        if cfg.task.folds > 1:
            task.set_folds(cfg.task.folds)
        return task
    model = dataclasses.asdict(cfg.model)
    task_cls = TASKS[cfg.task.kind]
    if not task_cls.pools or model["pooling"] is None:
        model.pop("pooling")  # only a classifier pools; None keeps the task's default
    # Each task takes the TaskConfig fields its constructor names (kind is the registry key).
    accepted = inspect.signature(task_cls).parameters
    kwargs = {k: v for k, v in dataclasses.asdict(cfg.task).items() if k in accepted}
    task = task_cls(**kwargs, model=model)
    if cfg.task.folds > 1:
        task.set_folds(cfg.task.folds)
    return task


def make_strategy(cfg: Config) -> Strategy:
    try:
        return STRATEGIES[cfg.strategy.name].from_config(cfg.strategy, cfg.train)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def opt_names(cfg: Config, space: Space) -> tuple[str, ...]:
    """The optimizer's per-member hyperparameter names (a factory's: ``learning_rate``, the
    schedule's and the float arguments the space names)."""
    try:
        return resolve_optimizer(cfg.optim.optimizer, cfg.optim.schedule, space.names).names
    except ValueError as e:
        raise ConfigError(str(e)) from None


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


def prepare(cfg: Config, strategy: Strategy | None = None, task: Any = None) -> Prepared:
    """Builds task, space, strategy and population; raises one-line ``ValueError``s.

    Args:
      cfg: the configuration.
      strategy: a strategy object to use instead of the one ``cfg.strategy`` names (for
        strategies written outside the package).
      task: a task object to use instead of building the one ``cfg.task`` names.
    """
    try:
        space = Space.from_config(cfg.space, where="space")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not space.searched and cfg.strategy.name != "grid":
        raise ConfigError("space: no searched dimension (every entry is fixed)")
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
    task = task if task is not None else make_task(cfg)
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
    strategy = strategy if strategy is not None else make_strategy(cfg)
    try:
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
    size = len(next(iter(cols.values()))) if cols else (cfg.population.size or 1)
    data = cfg.population.data_devices
    try:
        if data > len(jax.devices()):
            raise ValueError(
                f"population.data_devices: {data} requested but only {len(jax.devices())} "
                f"{jax.default_backend()} device(s) are visible"
            )
        args = (cfg.optim.optimizer, cfg.optim.schedule, cfg.population.mode)
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
                task, *args, devices=devices, data_devices=data, searched=space.names
            )
    except ValueError as e:
        raise ConfigError(str(e)) from None
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
    return Prepared(cfg, task, space, population, strategy, state, full, size)


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    members: pd.DataFrame  # one row per member: hyperparameters, val_*, test_*, diverged
    state: PopulationState


def apply_update(
    population: Population,
    pop: PopulationState,
    upd: PopulationUpdate,
    root_key: jax.Array,
    next_id: int,
) -> tuple[Population, PopulationState, int]:
    """Applies a strategy's decision; the same code for every strategy.

    Returns the population structure (a new one when ``keep`` re-packs the members onto fewer
    devices), the new state and the next free member id.

    Raises:
      ValueError: if the update does not fit the population (wrong shape, parent index out of
        range, unknown or non-finite hyperparameter), before anything is changed.
    """
    check_update(upd, pop.size, population.hparam_names)
    if upd.parents is not None:
        pop = population.copy_members(pop, upd.parents)
    if upd.reinit is not None and np.any(upd.reinit):
        reinit = np.asarray(upd.reinit, bool)
        ids = _host(pop.member_id).copy()
        n_new = int(reinit.sum())
        ids[reinit] = np.arange(next_id, next_id + n_new)
        next_id += n_new
        pop = population.reinit_members(pop, root_key, reinit, ids)
    if upd.hparams:
        pop = population.set_hparams(pop, upd.hparams)
    if upd.active is not None:
        pop = population.set_active(pop, upd.active)
    if upd.keep is not None:
        pop = population.keep_members(pop, upd.keep)
        population = population.for_size(len(upd.keep))
    # Keep every leaf on the population's devices, so the next segment does not recompile.
    return population, population.place(pop), next_id


def check_update(upd: PopulationUpdate, size: int, names: tuple[str, ...]) -> None:
    """A strategy's update must keep the population's shape and name real members."""

    def shape_ok(field: str, value: Any) -> np.ndarray:
        arr = np.asarray(value)
        if arr.shape != (size,):
            raise ValueError(f"strategy update: {field} must have shape ({size},), got {arr.shape}")
        return arr

    def slots_ok(field: str, arr: np.ndarray) -> None:
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"strategy update: {field} must be integers, got {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= size):
            raise ValueError(
                f"strategy update: {field} must lie in [0, {size}), got {arr.min()}..{arr.max()}"
            )

    if upd.parents is not None:
        slots_ok("parents", shape_ok("parents", upd.parents))
    if upd.keep is not None:
        keep = np.asarray(upd.keep)
        if keep.ndim != 1 or keep.size == 0:
            raise ValueError(f"strategy update: keep must be a non-empty 1-D array, got {keep}")
        slots_ok("keep", keep)
        if len(np.unique(keep)) != keep.size:
            raise ValueError("strategy update: keep lists a slot twice")
    for field in ("reinit", "active"):
        value = getattr(upd, field)
        if value is not None and shape_ok(field, value).dtype != bool:
            raise ValueError(f"strategy update: {field} must be booleans")
    for name, value in (upd.hparams or {}).items():
        if name not in names:
            raise ValueError(f"strategy update: unknown hyperparameter '{name}'")
        arr = np.asarray(value, np.float64)
        if arr.shape not in ((), (size,)):
            raise ValueError(f"strategy update: hparams.{name} must be a scalar or ({size},)")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"strategy update: hparams.{name} has non-finite values")


def _host(tree) -> Any:
    """Host NumPy copies; arrays spread over processes are gathered (every process gets all)."""
    return parallel.to_host(tree)


def _agree_path(path: Path | None) -> Path:
    """Process 0's ``path`` on every process (one run directory for a multi-process run)."""
    if jax.process_count() == 1:
        return path
    from jax.experimental import multihost_utils

    raw = np.zeros(4096, np.uint8)
    if parallel.is_writer():
        b = str(Path(path).absolute()).encode()
        raw[: len(b)] = np.frombuffer(b, np.uint8)
    raw = np.asarray(multihost_utils.broadcast_one_to_all(raw))
    return Path(bytes(raw[raw > 0]).decode())


def _nanmean_rows(losses: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(losses, axis=1)  # NaN for members that took no step


class _Book:
    """What the run loop remembers across segments: each member's last evaluation (stopped
    members are not evaluated again; their last metrics stand), the best fitness and the
    member-steps trained (the budget)."""

    def __init__(self, metric_names):
        self.metric_names = metric_names
        self.last: dict[int, dict[str, Any]] = {}  # member id -> last row
        self.best = np.inf
        self.member_steps = 0

    def fill(self, ids, metrics, active, diverged) -> dict[str, np.ndarray]:
        out = {k: np.asarray(v, np.float64).copy() for k, v in metrics.items()}
        for i, m in enumerate(ids):
            if not active[i] and not diverged[i] and int(m) in self.last:
                for k in self.metric_names:
                    out[k][i] = self.last[int(m)]["metrics"][k]
        return out

    def remember(self, obs: Observation, steps) -> None:
        for i, m in enumerate(obs.member_id):
            self.last[int(m)] = {
                # float32 values by their shortest repr (0.1, not 0.10000000149011612)
                "hparams": {k: float(str(np.float32(v[i]))) for k, v in obs.hparams.items()},
                "metrics": {k: float(obs.metrics[k][i]) for k in self.metric_names},
                "diverged": bool(obs.diverged[i]),
                "steps": int(steps[i]),
            }
        self.best = min(self.best, float(obs.fitness().min()))

    def dump(self) -> dict[str, Any]:
        """JSON-able (NaN/inf as strings) for a checkpoint."""
        enc = lambda v: v if isinstance(v, bool | int | dict) or np.isfinite(v) else repr(v)
        last = {
            str(m): {
                k: ({n: enc(x) for n, x in v.items()} if isinstance(v, dict) else enc(v))
                for k, v in row.items()
            }
            for m, row in self.last.items()
        }
        return {"last": last, "best": enc(self.best), "member_steps": self.member_steps}

    def load(self, data: dict[str, Any]) -> None:
        dec = lambda v: float(v) if isinstance(v, str) else v
        self.last = {
            int(m): {
                k: ({n: dec(x) for n, x in v.items()} if isinstance(v, dict) else dec(v))
                for k, v in row.items()
            }
            for m, row in data["last"].items()
        }
        self.best, self.member_steps = float(dec(data["best"])), int(data["member_steps"])

    def observation(self, pop, hparams, metric: str, maximize: bool, step: int) -> Observation:
        """The last observation of the members in ``pop`` (their remembered metrics; NaN for a
        member not evaluated yet, e.g. re-initialised just before the checkpoint)."""
        ids = _host(pop.member_id)
        nan = {k: np.nan for k in self.metric_names}
        rows = [self.last.get(int(m), {"metrics": nan})["metrics"] for m in ids]
        return Observation(
            step=step,
            member_id=ids,
            hparams=_host(dict(hparams)),
            metrics={k: np.array([r[k] for r in rows]) for k in self.metric_names},
            diverged=_host(pop.diverged),
            active=_host(pop.active),
            objective=metric,
            maximize=maximize,
        )


def run(
    cfg: Config,
    *,
    prepared: Prepared | None = None,
    run_dir: Path | None = None,
    console: Console | None = None,
    quiet: bool = False,
    resume: bool = False,
) -> RunResult:
    """Runs one study and writes its run directory. Returns the directory and final members.

    With ``resume``, ``run_dir`` is an existing run directory: the run continues from its latest
    checkpoint that restores (see :mod:`jaxhpo.checkpoint`) and ends as the uninterrupted run
    would have (use :func:`resume_run`)."""
    prep = prepared or prepare(cfg)
    # Several processes (multi-host): every process computes, process 0 alone writes the run
    # directory and shows progress; the others write into a scratch folder removed at the end.
    writes = parallel.is_writer()
    console = console or Console(stderr=True, quiet=quiet or not writes)
    population, task, strategy = prep.population, prep.task, prep.strategy
    if writes:
        run_dir = Path(run_dir) if run_dir else new_run_dir(cfg.out_dir, cfg.name)
        run_dir.mkdir(parents=True, exist_ok=True)
    run_dir = _agree_path(run_dir)
    out_dir = run_dir if writes else Path(tempfile.mkdtemp(prefix="jaxhpo-process-"))
    names = population.hparam_names
    metric = cfg.strategy.metric
    maximize = metric in task.maximized
    checkpointer = None
    if cfg.train.checkpoint_every and not cfg.train.compiled:
        checkpointer = Checkpointer(run_dir / "checkpoints", cfg.train.keep_checkpoints)
    root_key = jax.random.key(cfg.seed)
    restored = _restore(checkpointer, prep, root_key) if resume else None
    counts = (restored[2]["metrics_rows"], restored[2]["events"]) if restored else None
    if resume and not restored:
        counts = (0, 0)  # killed before the first checkpoint: start again from step 0
    writer = RunWriter(
        out_dir, run_dir.name, names, task.metric_names, resume=counts if writes else None
    )
    if resume:
        info = json.loads((run_dir / "run.json").read_text())
        writer.update_info({"resumed": int(info.get("resumed", 0)) + 1})
    else:
        writer.write_config(
            cfg.to_dict(),
            {
                "task": task.describe(),
                "population_size": prep.size,
                "member_mode": population.mode,
                "member_devices": population.devices,
                "data_devices": population.data_devices,
                "devices": [str(d) for d in jax.devices()],
                "jax": jax.__version__,
                "hparam_names": list(names),
                "searched": list(prep.space.searched),
                "objective": f"val_{metric}",
                "maximize": maximize,
                "strategy": strategy.name,
                "compiled": cfg.train.compiled,
            },
        )
    t0 = time.perf_counter()
    oom = functools.partial(
        _explain_oom, train_data=task.train_data, num_steps=cfg.train.segment_steps
    )
    with oom(population, prep.size):
        pop = population.init(root_key, np.arange(prep.size), prep.hparams)
    next_id = prep.size
    state = prep.strategy_state
    total, seg = cfg.train.steps, cfg.train.segment_steps
    n_segments = -(-total // seg)
    book = _Book(task.metric_names)

    train_data, val_data, test_data = population.run_data()

    def log(step, segment, train_loss, val, hparams, ids, diverged, active, steps) -> Observation:
        val = book.fill(ids, val, active, diverged)
        obs = Observation(
            step=step,
            member_id=ids,
            hparams=hparams,
            metrics=val,
            diverged=diverged,
            active=active,
            objective=metric,
            maximize=maximize,
        )
        writer.log(
            step=step,
            segment=segment,
            wall_time=time.perf_counter() - t0,
            member_id=ids,
            hparams=hparams,
            train_loss=train_loss,
            metrics=val,
            diverged=diverged,
            active=active,
        )
        book.remember(obs, steps)
        return obs

    def observe(pop, step, segment, train_loss) -> Observation:
        val, h, ids, diverged, active, steps = _host(
            (
                population.evaluate(pop, val_data, only_active=True, by_fold=True),
                population.get_hparams(pop),
                pop.member_id,
                pop.diverged,
                pop.active,
                pop.step,
            )
        )
        obs = log(step, segment, train_loss, val, h, ids, diverged, active, steps)
        # shape buckets: members copy only within their bucket, structure stays (buckets.py)
        return dataclasses.replace(obs, groups=population.groups(pop), frozen=population.frozen)

    def status(segment: int, k: int, dt: float, n_trained: int, diverged: int) -> str:
        shown = -book.best if maximize else book.best
        budget = f"/{cfg.train.budget:,}" if cfg.train.budget else ""
        info = (
            f"{n_trained * k / max(dt, 1e-9):,.0f} member-steps/s | "
            f"{book.member_steps:,}{budget} member-steps | best val {metric} {shown:.4f}"
        )
        return info + (f" | {diverged} diverged" if diverged else "")

    timings = {"first_segment_s": None, "train_s": 0.0}
    first = 1
    if restored:
        done_segment, tree, meta = restored
        population = population.from_layout(meta.get("layout", meta))
        pop = population.place(tree["pop"])
        state = unpack_tree(meta["strategy"])
        step, next_id, first = int(meta["step"]), int(meta["next_id"]), done_segment + 1
        book.load(meta["book"])
        t0 -= float(meta["elapsed_s"])
        obs = book.observation(pop, population.get_hparams(pop), metric, maximize, step)
        obs = dataclasses.replace(obs, groups=population.groups(pop), frozen=population.frozen)
        _notice(f"resuming {run_dir.name} after segment {done_segment} (step {step})")
    else:
        obs = observe(pop, 0, 0, np.full(prep.size, np.nan))
        step = 0

    def save(segment: int) -> None:
        meta = {
            "segment": segment,
            "step": step,
            "next_id": next_id,
            "size": pop.size,
            "layout": population.layout(pop),
            "strategy": pack_tree(state),
            "book": book.dump(),
            "metrics_rows": writer.rows,
            "events": writer.events,
            "elapsed_s": time.perf_counter() - t0,
            "config": config_fingerprint(cfg),
        }
        checkpointer.save(segment, {"pop": pop}, meta)

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, disable=quiet) as progress:
        bar = progress.add_task(
            f"{cfg.name}: segment 0/{n_segments}", total=total, info="compiling"
        )
        show = _Progress(progress, bar, console, quiet, cfg.name, n_segments, seg, total)
        if cfg.train.compiled:
            pop, obs, step = _run_compiled(
                cfg,
                prep,
                population,
                pop,
                state,
                (train_data, val_data),
                obs,
                log,
                writer,
                book,
                show,
                timings,
            )
        progress.update(bar, completed=step)
        host_segments = () if cfg.train.compiled else range(first, n_segments + 1)
        for segment in host_segments:
            k = min(seg, total - step)
            n_training = int(np.sum(obs.active & ~obs.diverged))
            if cfg.train.budget and book.member_steps + k * n_training > cfg.train.budget:
                console.print(f"budget of {cfg.train.budget:,} member-steps reached")
                break
            steps_before = int(np.sum(_host(pop.step)))
            ts = time.perf_counter()
            # Always a K=segment_steps program; a shorter last segment masks the extra steps.
            with oom(population, pop.size):
                state, pop, losses = strategy.train_segment(
                    state, population, pop, (train_data, val_data), seg, k
                )
            losses = _host(losses)[:, :k]
            dt = time.perf_counter() - ts
            timings["train_s"] += dt
            if timings["first_segment_s"] is None:
                timings["first_segment_s"] = dt
            step += k
            obs = observe(pop, step, segment, _nanmean_rows(losses))
            book.member_steps += int(np.sum(_host(pop.step))) - steps_before
            show.show(segment, status(segment, k, dt, n_training, int(obs.diverged.sum())))
            # The strategy is told every result, the last one included; an update is applied
            # only while training goes on, so the final table describes the members evaluated.
            state, upd = strategy.update(state, obs)
            if upd.done or segment == n_segments:
                # A study the strategy ends keeps the record of why (e.g. the last stops);
                # a decision after the last segment is not applied and not recorded.
                for ev in upd.events if upd.done else ():
                    writer.event({"step": step, "applied": False, **ev})
                break
            for ev in upd.events:
                writer.event({"step": step, **ev})
            population, pop, next_id = apply_update(population, pop, upd, root_key, next_id)
            if checkpointer and segment % cfg.train.checkpoint_every == 0:
                save(segment)  # the state the next segment starts from
    # No update follows the last observation, so it describes the final members.
    test = _host(population.evaluate(pop, test_data))
    if cfg.train.ensemble_top_k:
        writer.update_info(
            {
                "ensemble": _ensemble(
                    population, pop, obs, test, cfg.train.ensemble_top_k, (val_data, test_data)
                )
            }
        )
    members = _members_table(book, obs, test, task.metric_names)
    members.to_csv(out_dir / "members.csv", index=False)
    if cfg.train.save_best:  # the best member's weights, for fine-tuning (jaxhpo.pretrained)
        from jaxhpo.pretrained import save_best

        save_best(run_dir, task, pop, members, metric, maximize, write=writes)
    timings["total_s"] = time.perf_counter() - t0
    writer.update_info(
        {
            "timings": timings,
            "steps": step,
            "member_steps": book.member_steps,
            "trace_counts": population.trace_counts,
        }
    )
    writer.close()
    if not writes:
        shutil.rmtree(out_dir, ignore_errors=True)
        return RunResult(run_dir, members, pop)
    from jaxhpo.report import write_report

    write_report(run_dir)
    console.print(f"run directory: {run_dir}")
    return RunResult(run_dir, members, pop)


def _ensemble(population, pop, obs: Observation, test, k: int, data) -> dict[str, Any]:
    """The top-``k`` members by the study's objective (finite ones, in the final population),
    their averaged predictions on the validation and test splits, beside the best one alone."""
    fitness = obs.fitness()
    order = [int(i) for i in np.argsort(fitness, kind="stable") if np.isfinite(fitness[i])]
    slots = order[:k]
    if not slots:
        return {"k": 0, "note": "no member with a finite objective"}
    val_data, test_data = data
    out = {
        "k": len(slots),
        "members": [int(obs.member_id[i]) for i in slots],
        "test": population.ensemble_evaluate(pop, slots, test_data),
    }
    if population.folds == 1:  # under k-fold each member has its own validation fold
        out["val"] = population.ensemble_evaluate(pop, slots, val_data)
    out["best_member"] = int(obs.member_id[slots[0]])
    out["best_test"] = {m: float(test[m][slots[0]]) for m in test}
    return out


def config_fingerprint(cfg: Config) -> str:
    """A hash of everything that shapes the run (the config minus where it is written)."""
    data = {k: v for k, v in cfg.to_dict().items() if k != "out_dir"}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class OutOfMemoryError(RuntimeError):
    """The population does not fit on its devices; the message says by how much and what to
    change."""


def _is_oom(e: BaseException) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


@contextlib.contextmanager
def _explain_oom(population: Population, size: int, train_data: Any, num_steps: int):
    """Turns XLA's out-of-memory error into one that names the population size, the estimated
    memory per member and what to change."""
    try:
        yield
    except Exception as e:
        if not _is_oom(e):
            raise
        est = population.memory_estimate(size, train_data, num_steps)
        mib = lambda b: f"{b / 2**20:,.1f} MiB"
        work = est["segment_working"]
        working = f", plus {mib(work)} of XLA working memory per segment" if work == work else ""
        raise OutOfMemoryError(
            f"population.size: {size} members do not fit on {population.devices} "
            f"{jax.default_backend()} device(s): about {mib(est['state_per_member'])} of "
            f"parameters and optimizer state per member{working}. Use fewer members per device "
            "(population.size, or more population.devices), population.mode=chunked with a "
            "small population.chunk_size (or map), fewer train.segment_steps, or a smaller "
            f"model/batch. ({str(e).strip().splitlines()[0][:160]})"
        ) from None


def _notice(message: str) -> None:
    """A line on stderr that ``--quiet`` does not hide (resume and checkpoint warnings)."""
    print(f"jaxhpo: {message}", file=sys.stderr, flush=True)


def _restore(checkpointer, prep: Prepared, root_key) -> tuple | None:
    """The latest checkpoint of a run that restores (``None`` if none; corrupted ones are
    reported and skipped)."""
    if checkpointer is None:
        return None

    fingerprint = config_fingerprint(prep.cfg)

    def abstract(meta):
        if meta.get("config") != fingerprint:
            raise CheckpointRefusedError(
                f"RUN_DIR: the checkpoints in {checkpointer.directory} were written by a "
                "different config than this run directory's config.yaml; nothing was changed"
            )
        layout = meta.get("layout", meta)
        population = prep.population.from_layout(layout)
        return {"pop": population.abstract(layout, root_key)}

    found = checkpointer.restore_latest(abstract, report=lambda m: _notice(f"warning: {m}"))
    if found is None:
        _notice("no checkpoint to resume from: the run starts again from step 0")
    return found


def resume_run(run_dir: str | Path, *, console: Console | None = None, quiet: bool = False):
    """Continues an interrupted run directory from its latest good checkpoint.

    Raises:
      ValueError: ``RUN_DIR`` is not a run directory, or already finished.
    """
    from jaxhpo.config import Config, build, load_file

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise ValueError(f"RUN_DIR: {run_dir} has no config.yaml (is it a jaxhpo run directory?)")
    if (run_dir / "members.csv").exists():
        raise ValueError(f"RUN_DIR: {run_dir} finished already (members.csv is written)")
    cfg = build(Config(), load_file(run_dir / "config.yaml"))
    if cfg.train.compiled:
        raise ValueError("RUN_DIR: a train.compiled run has no checkpoints to resume from")
    return run(cfg, run_dir=run_dir, console=console, quiet=quiet, resume=True)


def _members_table(book: _Book, obs: Observation, test, metric_names) -> pd.DataFrame:
    """One row per member of the study: its last hyperparameters and validation metrics, and
    test metrics for the members still in the population (NaN for members compacted away)."""
    rows = []
    slot = {int(m): i for i, m in enumerate(obs.member_id)}
    for m in sorted(book.last):
        last = book.last[m]
        row = {"member": m, **last["hparams"]}
        for k in metric_names:
            row[f"val_{k}"] = last["metrics"][k]
            row[f"test_{k}"] = float(test[k][slot[m]]) if m in slot else np.nan
        row["diverged"] = last["diverged"]
        row["steps"] = last["steps"]
        rows.append(row)
    return pd.DataFrame(rows)


@dataclasses.dataclass
class _Progress:
    """The progress bar and plain-text progress lines of a run."""

    progress: Progress
    bar: Any
    console: Console
    quiet: bool
    name: str
    n_segments: int
    segment_steps: int
    total: int

    def show(self, segment: int, info: str) -> None:
        done = min(self.total, segment * self.segment_steps)
        desc = f"{self.name}: segment {segment}/{self.n_segments}"
        self.progress.update(self.bar, completed=done, info=info, description=desc)
        if not self.console.is_terminal and not self.quiet:
            self.console.print(f"segment {segment}/{self.n_segments} step {done}: {info}")


def _run_compiled(
    cfg: Config,
    prep: Prepared,
    population: Population,
    pop: PopulationState,
    state: Any,
    data: tuple[Any, Any],
    obs: Observation,
    log: Any,
    writer: RunWriter,
    book: _Book,
    show: _Progress,
    timings: dict[str, Any],
) -> tuple[PopulationState, Observation, int]:
    """``train.compiled``: every segment and every strategy decision in one ``lax.scan``
    program; rows and lineage events are written from its per-segment outputs."""
    maximize = cfg.strategy.metric in prep.task.maximized

    def tick(segment, best_fitness):
        best = float(best_fitness)
        shown = -best if maximize else best
        show.show(int(segment) + 1, f"best val {cfg.strategy.metric} {shown:.4f} (compiled loop)")

    n_segments, seg = show.n_segments, show.segment_steps
    program = population.compiled_run(
        prep.strategy.device_update,
        num_segments=n_segments,
        segment_steps=seg,
        total_steps=show.total,
        objective=cfg.strategy.metric,
        maximize=maximize,
        searched=tuple(prep.space.searched),
        progress=tick,
    )
    ts = time.perf_counter()
    steps_before = int(np.sum(_host(pop.step)))
    with _explain_oom(population, pop.size, data[0], seg):
        pop, _, outs = program(pop, *data, state)
    outs = _host(outs)
    timings["train_s"] = time.perf_counter() - ts
    book.member_steps = int(np.sum(_host(pop.step))) - steps_before
    for s in range(n_segments):
        o = jax.tree.map(lambda x, s=s: x[s], outs)
        steps = np.full(len(o["member_id"]), int(o["step"]))  # per-member counts: final only
        obs = log(
            int(o["step"]),
            s + 1,
            o["train_loss"],
            o["metrics"],
            o["hparams"],
            o["member_id"],
            o["diverged"],
            o["active"],
            steps,
        )
        fit = obs.fitness()
        for ev in lineage_events(
            obs, fit, o["parents"], o["copied"], o["explored"], o["new_hparams"]
        ):
            writer.event({"step": int(o["step"]), **ev})
    return pop, obs, int(outs["step"][-1])
