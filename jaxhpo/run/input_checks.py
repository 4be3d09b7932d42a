"""Checks of a run's input that the config's own validation cannot make: the run's name as a
folder name, fields that the task or the population size make meaningless, and whether the
population fits in memory (estimated before anything is built). Errors are one-line
:class:`~jaxhpo.config.ConfigError`s naming the field.
"""

from __future__ import annotations

import os
from typing import Any

from jaxhpo import refs
from jaxhpo.config import Config, ConfigError
from jaxhpo.optim import OptimizerSpec, resolve
from jaxhpo.optim import space_choice as choice_space
from jaxhpo.optim.factory import check_init
from jaxhpo.population import Population
from jaxhpo.tasks import TASKS
from jaxhpo.tasks.user_task import abstract_params

#: The state of one member, in units of its parameters: parameters, gradients, two moments.
STATE_COPIES = 4
GIB, MIB = 1024**3, 1024**2
INT32 = 2**31


#: Sizes a huge value of which crashed (numpy's "Maximum allowed size exceeded", an
#: OverflowError reading the corpus) or hung (model.num_layers=60000: every layer is traced
#: before the memory estimate can refuse it) instead of a one-line error.
SIZES = {
    "task.seq_len": INT32,
    "task.batch_size": INT32,
    "task.eval_batches": INT32,
    "task.max_bytes": 2**62,
    "model.num_layers": 2**10,
    "model.num_heads": INT32,
    "model.d_model": INT32,
    "model.d_ff": INT32,
}


def _check_sizes(cfg: Config) -> None:
    for where, limit in SIZES.items():
        section, field = where.split(".")
        value = getattr(getattr(cfg, section), field, None)
        if isinstance(value, int) and value >= limit:
            raise ConfigError(f"{where}: must be < {limit:.4g}, got {value:.4g}")


def check_run_config(cfg: Config) -> None:
    """What needs nothing built: ``name``, ``model.pooling``, ``train.ensemble_top_k`` and
    ``train.budget`` against ``population.size``.

    Raises:
      ConfigError: naming the field.
    """
    name = cfg.name
    if not isinstance(name, str) or not name.strip() or name in (".", ".."):
        raise ConfigError(f"name: expected a folder name, got {name!r}")
    bad = [c for c in ("/", "\\", "\0") if c in name]
    if bad or len(name.encode()) > 200:
        raise ConfigError(
            f"name: {name!r} must be one folder name inside out_dir (no '/', '\\\\', NUL; at "
            "most 200 bytes)"
        )
    for field in ("steps", "segment_steps"):
        value = getattr(cfg.train, field)
        if isinstance(value, int) and value >= INT32:
            raise ConfigError(
                f"train.{field}: must be < 2**31 (steps are counted in int32), got {value:.4g}"
            )
    _check_sizes(cfg)
    if cfg.task.feed != "host" and not cfg.task.data:
        raise ConfigError(
            f"task.feed: {cfg.task.feed!r} is read only with task.data (a prepared token "
            "folder, jaxhpo data prepare); set task.data=DIR or remove task.feed"
        )

    task_cls = TASKS.get(cfg.task.kind)
    if cfg.model.pooling is not None and task_cls is not None and not task_cls.pools:
        raise ConfigError(
            f"model.pooling: task '{cfg.task.kind}' does not pool its sequence (only the "
            "sequence classifiers do); remove model.pooling"
        )
    size = cfg.population.size
    if size is None:
        return
    if cfg.train.ensemble_top_k > size:
        raise ConfigError(
            f"train.ensemble_top_k: {cfg.train.ensemble_top_k} is more than population.size={size}"
        )
    segment = size * max(cfg.task.folds, 1) * min(cfg.train.segment_steps, cfg.train.steps)
    if cfg.train.budget is not None and cfg.train.budget < segment:
        raise ConfigError(
            f"train.budget: {cfg.train.budget} member-steps do not pay for one segment "
            f"({segment} member-steps: population.size x task.folds x train.segment_steps); "
            "nothing would train"
        )


def member_bytes(task: Any) -> int:
    """Bytes of one member's parameters (abstract shapes: nothing is allocated)."""
    import jax
    import jax.numpy as jnp

    hp = {k: jnp.asarray(v) for k, v in Population.task_defaults(task).items()}
    names = getattr(task, "hparam_names", hp)
    hp = {k: v for k, v in hp.items() if k in names}
    shapes = jax.eval_shape(lambda: task.init(jax.random.key(0), hp))
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes)))


def available_memory() -> tuple[float, str]:
    """Bytes of memory the population can use: the accelerators' together, else the host's."""
    import jax

    devices = jax.devices()
    limits = []
    for d in devices:
        try:
            limits.append(float((d.memory_stats() or {}).get("bytes_limit", 0)))
        except Exception:  # noqa: BLE001 - a backend without memory stats (CPU)
            limits.append(0.0)
    if devices[0].platform != "cpu" and all(limits):
        return sum(limits), f"{devices[0].platform} device"
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "host"


def check_memory(task: Any, size: int | None, folds: int = 1) -> None:
    """Refuses a population whose members' state alone cannot fit in memory.

    Raises:
      ConfigError: naming ``population.size`` and the estimate.
    """
    if size is None or task is None or not callable(getattr(task, "init", None)):
        return
    try:
        per = member_bytes(task) * STATE_COPIES
    except Exception:  # noqa: BLE001 - a user's task the estimate cannot trace: no estimate
        return
    members = int(size) * max(int(folds), 1)
    need = per * members
    have, where = available_memory()
    if need > have:
        raise ConfigError(
            f"population.size: {members} members need about {need / GIB:.3g} GiB "
            f"({per / MIB:.3g} MiB each: parameters, gradients and optimizer moments, "
            f"estimated before building), more than the {have / GIB:.3g} GiB of {where} "
            "memory; lower population.size or the model's size"
        )


def check_optimizer_init(cfg: Config, space: Any, task: Any) -> None:
    """An optimizer factory's ``init``, traced abstractly on one member's parameter shapes
    (``nnx.eval_shape`` of the task's ``init``): before the population is built.

    Raises:
      ValueError: one line naming ``optim.optimizer`` (or the task) and the user's function.
    """
    optimizer, schedule = choice_space.program(cfg)
    if not (isinstance(optimizer, str) and refs.is_reference(optimizer)):
        return  # a built-in name, or a per-member choice (each resolved on its own)
    if not isinstance(schedule, str):
        return
    spec = resolve(optimizer, schedule, space.names)
    if isinstance(spec, OptimizerSpec) and not spec.builtin:
        check_init(spec, abstract_params(task, "task"))
