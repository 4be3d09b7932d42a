"""Checks of a task of the user's own, before anything is built from it.

A task named by reference (``task.kind=file.py:Name`` / ``module:Class``) or passed to
:func:`jaxhpo.tune` is refused in one line when it is not a task class, when its constructor or
its ``init`` raises (the line names the user's function, file and line; ``JAXHPO_DEBUG=1`` or
``jaxhpo --debug`` chains the traceback), when a task hyperparameter's default is not a number,
or when ``init`` (traced abstractly, under ``nnx.eval_shape``: nothing is allocated) does not
return an ``nnx.Module`` with ``nnx.Param`` leaves.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxhpo import refs
from jaxhpo.tasks.protocol import ModelTask

#: Methods every task class has (the protocol of :mod:`jaxhpo.tasks.protocol`).
METHODS: tuple[str, ...] = ("init", "loss", "train_batch", "evaluate_split")
HOW = "subclass jaxhpo.ModelTask and write init(key, hp) and loss(model, batch, hp, key)"


def _name(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__qualname__


def check_task_class(cls: Any, where: str = "task.kind") -> None:
    """Refuses what is not a task class (a function, a module, a class without the protocol).

    Raises:
      TypeError: naming ``where``.
    """
    if not isinstance(cls, type):
        raise TypeError(
            f"{where}: {_name(cls)} is a {type(cls).__name__}, not a task class ({HOW})"
        )
    if issubclass(cls, ModelTask):
        missing = [m for m in ("init", "loss") if getattr(cls, m) is getattr(ModelTask, m)]
    else:
        missing = [m for m in METHODS if not callable(getattr(cls, m, None))]
    if missing:
        raise TypeError(
            f"{where}: {_name(cls)} is not a task class: it has no {' or '.join(missing)} ({HOW})"
        )


def build_user_task(ref: str, args: Mapping[str, Any], folds: int = 1) -> Any:
    """The task ``task.kind=ref`` with ``task.args``: resolved, checked, constructed, checked.

    Raises:
      ValueError: one line naming ``task.kind`` or ``task.args`` (and the user's function).
    """
    cls = refs.resolve(ref, "task.kind")
    try:
        check_task_class(cls, "task.kind")
    except TypeError as e:  # a config's error: the command line's one line, exit 2
        raise ValueError(str(e)) from None
    try:
        inspect.signature(cls).bind(**args)
    except TypeError as e:
        raise ValueError(f"task.args: {ref}: {e}") from None
    except ValueError:
        pass  # a signature inspect cannot read: the call says
    try:
        task = cls(**args)
    except Exception as e:  # noqa: BLE001 - user code: any exception is one line naming it
        raise refs.user_error("task.kind", cls.__init__, e) from (e if refs.debug() else None)
    try:
        check_task(task, "task.kind")
    except TypeError as e:
        raise ValueError(str(e)) from None
    if folds > 1:
        task.set_folds(folds)
    return task


def _is_number(value: Any) -> bool:
    """A real scalar (Python, numpy or JAX), not a bool or a string."""
    if isinstance(value, bool | str | bytes) or value is None:
        return False
    if isinstance(value, numbers.Real):
        return True
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - anything numpy cannot read is no number
        return False
    return arr.ndim == 0 and np.issubdtype(arr.dtype, np.number) and arr.dtype.kind != "c"


def _hparam_defaults(task: Any, where: str) -> dict[str, float]:
    raw = getattr(task, "hparams", None)
    items = raw.items() if isinstance(raw, Mapping) else None
    if items is None:
        try:
            items = dict(task.hparam_defaults).items()
        except Exception as e:  # noqa: BLE001 - a property of the user's: one line
            raise refs.user_error(f"{where}.hparam_defaults", type(task), e) from None
    out = {}
    for name, value in items:
        if not _is_number(value):
            raise TypeError(
                f"{where}.hparams: '{name}' of {type(task).__qualname__} must be a number (its "
                f"default value), got {value!r}"
            )
        out[str(name)] = float(value)
    return out


def abstract_params(task: Any, where: str = "task") -> Any:
    """The ``nnx.Param`` state of one member, traced abstractly (``jax.ShapeDtypeStruct``
    leaves), from ``task.init`` under ``nnx.eval_shape``.

    Raises:
      ValueError / TypeError: one line naming ``where`` and the user's ``init``.
    """
    names = tuple(getattr(task, "hparam_names", ()))
    hp = {k: jnp.float32(v) for k, v in _hparam_defaults(task, where).items() if k in names}
    init = task.init
    try:
        model = nnx.eval_shape(lambda: init(jax.random.key(0), hp))
    except Exception as e:  # noqa: BLE001 - user code: any exception is one line naming it
        raise refs.user_error(where, init, e) from (e if refs.debug() else None)
    if not isinstance(model, nnx.Module):
        raise TypeError(
            f"{where}: {_name(init)} returned {type(model).__name__}, not an nnx.Module "
            "(return the member's freshly initialised flax.nnx module)"
        )
    params = nnx.state(model, nnx.Param)
    if not jax.tree.leaves(params):
        raise ValueError(
            f"{where}: {_name(init)} returned {type(model).__name__} with no nnx.Param "
            "(nothing to train; weights must be nnx.Param, e.g. nnx.Linear's)"
        )
    return params


def check_task(task: Any, where: str = "task") -> Any:
    """Refuses a task object that the population could not train; returns its abstract
    parameters (:func:`abstract_params`).

    Raises:
      TypeError / ValueError: one line naming ``where``.
    """
    if isinstance(task, type):
        raise TypeError(
            f"{where}: got the class {task.__qualname__}; pass a task object, "
            f"{task.__qualname__}(...)"
        )
    check_task_class(type(task), where)
    _hparam_defaults(task, where)
    return abstract_params(task, where)


#: The ``task:`` fields a task of the user's own reads (the others, and the ``model:`` section,
#: configure the built-in tasks and their Transformer).
USER_TASK_FIELDS: tuple[str, ...] = ("kind", "args", "folds")


def check_user_config(cfg: Any) -> None:
    """Refuses a built-in task's setting (``task.seq_len``, ``model.d_model``, ...) given to a
    run of a task of the user's own: it would be written to config.yaml and never read.

    Raises:
      ValueError: one line naming the field.
    """
    if not refs.is_reference(cfg.task.kind):
        return
    for section, skip in (("task", USER_TASK_FIELDS), ("model", ())):
        current, default = getattr(cfg, section), type(getattr(cfg, section))()
        for field in dataclasses.fields(current):
            value = getattr(current, field.name)
            if field.name not in skip and value != getattr(default, field.name):
                raise ValueError(
                    f"{section}.{field.name}: a setting of the built-in tasks, not read by "
                    f"{cfg.task.kind.rpartition(':')[2]} (a task of your own reads task.kind, "
                    f"task.args and task.folds; set its own values in task.args)"
                )


def applicable(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config's plain form (``Config.to_dict()``) with only the fields that apply: for a task
    of the user's own the ``task:`` fields it reads and no ``model:`` section; for a built-in
    task no ``task.args``. A section left out is at its defaults, so the config builds back to
    the same run (:func:`check_user_config` refuses anything else)."""
    out = dict(config)
    task = dict(out.get("task", {}))
    if refs.is_reference(task.get("kind")):
        out["task"] = {k: task[k] for k in USER_TASK_FIELDS if k in task}
        out.pop("model", None)
    elif not task.get("args"):
        task.pop("args", None)
        out["task"] = task
    return out


def task_label(task_or_class: Any) -> str:
    """What a run of the task is named after: its ``name`` (``ModelTask``: the class name in
    lower case), else the class name in lower case."""
    name = getattr(task_or_class, "name", None)
    cls = task_or_class if isinstance(task_or_class, type) else type(task_or_class)
    return name if isinstance(name, str) and name else cls.__name__.lower()
