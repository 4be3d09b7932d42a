"""Pretrained weights: the best member of a finished run, saved for fine-tuning.

``train.save_best=true`` makes a run write ``RUN_DIR/pretrained/``:

* ``params/``: the best member's parameters (an orbax ``StandardCheckpointer`` checkpoint of a
  flat mapping ``"blocks/0/attn/qkv/kernel" -> array``; saved atomically by orbax),
* ``pretrained.json``: the model config, the task's description, the member id, the metric it
  was chosen by and its value.

"Best" is the member of the final population with the best final validation value of
``strategy.metric`` (diverged members and non-finite values excluded). A fine-tuning task
(``task.pretrained=RUN_DIR``, :mod:`jaxhpo.tasks.finetune`) loads it with :func:`load` and copies
the encoder's leaves into every member.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxhpo import parallel

SUBDIR = "pretrained"
INFO = "pretrained.json"
PARAMS = "params"
#: Names of carried (non-parameter) NNX state in a saved flat dict start with this.
STATE_PREFIX = "state:"


def flat_params(state: Any) -> dict[str, np.ndarray]:
    """An ``nnx.State`` of ONE model as ``{"path/to/leaf": host array}``."""
    return {
        "/".join(map(str, path)): np.asarray(var.get_value())
        for path, var in nnx.to_flat_state(state)
    }


def save(directory: str | Path, params: dict[str, np.ndarray], info: dict[str, Any]) -> Path:
    """Writes ``params`` (flat name -> array) and ``info`` into ``directory`` (created; an
    existing checkpoint there is replaced). Returns the directory."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(directory / PARAMS, {k: np.asarray(v) for k, v in params.items()}, force=True)
    ckpt.wait_until_finished()
    (directory / INFO).write_text(json.dumps(info, indent=2, default=str) + "\n")
    return directory


def resolve(path: str | Path, where: str = "task.pretrained") -> Path:
    """The pretrained folder of ``path``: a run directory (its ``pretrained/``) or the folder
    itself.

    Raises:
      ValueError: one line naming ``where`` when there is no such folder or it is incomplete.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"{where}: path does not exist: {p}")
    if (p / SUBDIR / INFO).exists():
        p = p / SUBDIR
    if not (p / INFO).exists() or not (p / PARAMS).exists():
        hint = " (was the pretraining run started with train.save_best=true?)"
        raise ValueError(f"{where}: no pretrained weights in {p}{hint}")
    return p


def load(path: str | Path, where: str = "task.pretrained") -> tuple[dict[str, np.ndarray], dict]:
    """Reads weights saved by :func:`save` (or a run's ``pretrained/``).

    Returns:
      ``(params, info)``: flat name -> numpy array, and the JSON info.

    Raises:
      ValueError: one line naming ``where`` if the folder is missing or unreadable.
    """
    import orbax.checkpoint as ocp

    p = resolve(path, where)
    try:
        info = json.loads((p / INFO).read_text())
        restored = ocp.StandardCheckpointer().restore((p / PARAMS).absolute())
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"{where}: cannot read pretrained weights in {p}: {first}") from None
    return {k: np.asarray(v) for k, v in restored.items()}, info


def load_into(module: nnx.Module, path: str | Path) -> nnx.Module:
    """Writes weights saved by ``train.save_best`` (a run directory or its ``pretrained/``)
    into ``module``, one of the task's own modules: its ``nnx.Param`` and its carried state
    (batch statistics).

    Raises:
      ValueError: one line when the folder is missing or its names or shapes do not match the
        module's.
    """
    flat, _ = load(path, where="pretrained")
    _, params, _, state = nnx.split(module, nnx.Param, nnx.RngState, ...)
    for prefix, tree in (("", params), (STATE_PREFIX, state)):
        for key, var in nnx.to_flat_state(tree):
            name = prefix + "/".join(map(str, key))
            if name not in flat:
                raise ValueError(f"pretrained: {path} has no '{name}' for this module")
            if np.shape(flat[name]) != np.shape(var.get_value()):
                raise ValueError(
                    f"pretrained: '{name}' has shape {np.shape(flat[name])} in {path}, the "
                    f"module's is {np.shape(var.get_value())}"
                )
            var.set_value(jax.numpy.asarray(flat[name]))
    return module


def save_best(
    run_dir: Path,
    task: Any,
    pop: Any,
    members: Any,
    metric: str,
    maximize: bool,
    write: bool = True,
) -> Path | None:
    """Saves the best final member of a finished run into ``run_dir/pretrained``.

    Args:
      run_dir: the run directory.
      task: the run's task (its model config and description go into the JSON).
      pop: the final ``PopulationState``.
      members: the run's members table (``member``, ``val_<metric>``, ``diverged``).
      metric: the validation metric the best member is chosen by.
      maximize: whether higher is better.
      write: False on processes that do not write the run directory (they still take part
        in gathering the parameters).

    Returns:
      The folder written, or None when no member has a finite value (nothing is written).
    """
    ids = np.asarray(parallel.to_host(pop.member_id))
    col = f"val_{metric}"
    table = members[members["member"].isin(ids.tolist()) & ~members["diverged"].astype(bool)]
    table = table[np.isfinite(table[col].to_numpy(np.float64))]
    if table.empty:
        print(f"jaxhpo: train.save_best: no member with a finite {col}; nothing saved")
        return None
    row = table.loc[table[col].idxmax() if maximize else table[col].idxmin()]
    slot = int(np.flatnonzero(ids == int(row["member"]))[0])
    # the member's slice inside jit: an eager index of an array spread over processes fails
    pick = jax.jit(lambda tree: jax.tree.map(lambda x: x[slot], tree))
    one, state = parallel.to_host(pick((pop.params, pop.model_state)))
    if not write:
        return None
    cfg = getattr(task, "model_config", None)
    info = {
        # a task of the user's own has no TransformerConfig: its module is built by task.init
        "model": dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else None,
        "task": task.describe(),
        "member": int(row["member"]),
        "metric": col,
        "value": float(row[col]),
        "run": run_dir.name,
    }
    # carried NNX state (batch statistics) beside the weights, under STATE_PREFIX
    flat = {**flat_params(one), **{STATE_PREFIX + k: v for k, v in flat_params(state).items()}}
    return save(run_dir / SUBDIR, flat, info)
