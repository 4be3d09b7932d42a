"""Multi-host start-up and moving data between the host and a mesh that spans processes.

One process per host (TPU pod slice, multi-GPU nodes, or several processes on one CPU machine)
runs the same program over one global :class:`jax.sharding.Mesh`; JAX's SPMD machinery is the
distributed engine (no process pool, no RPC of our own):

* :func:`initialize` starts ``jax.distributed`` from the environment before anything else touches
  JAX: ``JAXHPO_COORDINATOR`` (``host:port`` of process 0), ``JAXHPO_NUM_PROCESSES`` and
  ``JAXHPO_PROCESS_ID`` (the ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
  ``JAX_PROCESS_ID`` names work too). On TPU pods and SLURM/Open MPI clusters, where JAX finds
  these by itself, ``JAXHPO_DISTRIBUTED=1`` starts it with no arguments.
* :func:`put` places host values (identical on every process) or arrays on a global sharding.
* :func:`to_host` brings (possibly non-addressable) arrays back as NumPy on every process.
* :func:`is_writer`: only process 0 writes the run directory; every process computes.

Data is addressed, not fed: a member's batch at step ``s`` is a function of the data seed and
``s`` computed on the device, so every process holds the (small) training source and each device
computes only its own members' batches, or its own slice of them on the ``data`` axis.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

_ENV = {
    "coordinator": ("JAXHPO_COORDINATOR", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("JAXHPO_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
    "process_id": ("JAXHPO_PROCESS_ID", "JAX_PROCESS_ID"),
}


def _env(name: str) -> str | None:
    for var in _ENV[name]:
        if os.environ.get(var):
            return os.environ[var]
    return None


def initialize() -> bool:
    """Starts ``jax.distributed`` when the environment asks for it; returns True if it did.

    Call before any other JAX use (``jaxhpo run`` does). On CPU the cross-process collectives
    are gloo's (``jax_cpu_collectives_implementation``).

    Raises:
      ValueError: one line naming the variable, for a partial or malformed environment.
    """
    coordinator = _env("coordinator")
    auto = os.environ.get("JAXHPO_DISTRIBUTED", "") not in ("", "0")
    if coordinator is None and not auto:
        return False
    kwargs: dict[str, Any] = {}
    if coordinator is not None:
        n, pid = _env("num_processes"), _env("process_id")
        if n is None or pid is None:
            raise ValueError(
                f"{_ENV['coordinator'][0]}: set together with {_ENV['num_processes'][0]} and "
                f"{_ENV['process_id'][0]}"
            )
        try:
            kwargs = {
                "coordinator_address": coordinator,
                "num_processes": int(n),
                "process_id": int(pid),
            }
        except ValueError:
            raise ValueError(
                f"{_ENV['num_processes'][0]}/{_ENV['process_id'][0]}: integers expected, "
                f"got {n!r}/{pid!r}"
            ) from None
        if not 0 <= kwargs["process_id"] < kwargs["num_processes"]:
            raise ValueError(
                f"{_ENV['process_id'][0]}: must lie in [0, {kwargs['num_processes']}), got {pid}"
            )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    return True


def is_writer() -> bool:
    """True on the process that writes the run directory (process 0)."""
    return jax.process_index() == 0


def _global(sharding: jax.sharding.Sharding) -> bool:
    return not sharding.is_fully_addressable


def put(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """Every leaf of ``tree`` on ``sharding``.

    In one process this is ``jax.device_put``. When the sharding spans processes, host values
    (which every process holds identically: data, hyperparameters decided by the strategy on every
    process) become global arrays from each process's own shards, and arrays already on the mesh
    are re-sharded by a jitted identity (XLA moves the bytes).
    """
    if not _global(sharding):
        return jax.device_put(tree, sharding)
    reshard = jax.jit(lambda x: x, out_shardings=sharding)

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x if x.sharding == sharding else reshard(x)
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return reshard(x)
        value = np.asarray(x)
        return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])

    return jax.tree.map(one, tree)


def to_host(tree: Any) -> Any:
    """Every leaf as a NumPy array with its full (global) value, on every process."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(one, tree)


def check_member_mesh(devices: int, data_devices: int, offset: int, batch_size: int) -> None:
    """A population's ``devices x data_devices`` mesh from device ``offset`` must exist and
    split the batch; one-line errors naming ``population.devices`` / ``data_devices``."""
    n_dev = len(jax.devices())
    if data_devices < 1 or data_devices > n_dev:
        raise ValueError(f"population.data_devices: must lie in [1, {n_dev}], got {data_devices}")
    if batch_size % data_devices:
        raise ValueError(
            f"population.data_devices: the batch of {batch_size} examples does not "
            f"split over {data_devices} devices (use a divisor of task.batch_size)"
        )
    last = offset + devices * data_devices - 1
    if offset < 0 or last >= n_dev:
        raise ValueError(
            f"population.devices: devices {offset}..{last} do not exist ({n_dev} visible)"
        )
    if devices < 1 or devices * data_devices > n_dev:
        raise ValueError(
            f"population.devices: must lie in [1, {n_dev // data_devices}] "
            f"({n_dev} devices / data_devices {data_devices}), got {devices}"
        )


def member_mesh(devices: int, data_devices: int, offset: int = 0) -> jax.sharding.Mesh:
    """The ``("pop", "data")`` mesh of a population on devices ``offset ...``."""
    return jax.make_mesh(
        (devices, data_devices),
        ("pop", "data"),
        devices=jax.devices()[offset : offset + devices * data_devices],
        axis_types=(jax.sharding.AxisType.Auto,) * 2,  # let jit move inputs onto the mesh
    )
