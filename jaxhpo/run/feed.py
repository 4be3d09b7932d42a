"""Host-fed training data in the host loop: each segment's batches, read on the host.

A task with ``host_fed`` (:class:`jaxhpo.tasks.tokens.TokenFileTask`, ``task.feed=host``)
gives the windows of the steps a segment needs (:meth:`segment_data`); they are put on the
population's devices once per segment, shared by every member at those steps, and the next
segment's windows are read in a background thread while this one trains. What was read is
recorded in ``run.json`` (``data_feed``).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxhpo import parallel


def host_fed(task: Any) -> bool:
    """True when the task's training batches come from the host, segment by segment."""
    return bool(getattr(task, "host_fed", False))


def feed_segment(loop: Any, num_steps: int, k: int) -> None:
    """Sets ``loop.data``'s training data to the windows of the segment about to train
    (``num_steps`` steps from each member's step, ``k`` of them valid), then starts reading the
    next segment's (each member that can step advanced by ``k``)."""
    task = loop.prep.task
    if not host_fed(task):
        return
    pop = loop.pop
    steps = np.asarray(parallel.to_host(pop.step), np.int64)
    data = task.segment_data(steps, num_steps)
    placed = loop.population.replicate(data)
    if placed is data:
        placed = jax.device_put(data)
    loop.data = (placed, *loop.data[1:])
    go = np.asarray(parallel.to_host(pop.active & ~pop.diverged))
    task.feeder.prefetch(steps + k * go, num_steps)
    stats = dict(task.feeder.stats)
    stats["bytes"] = stats["tokens"] * np.dtype(task.dtype).itemsize
    stats["read_s"] = round(stats["read_s"], 4)
    loop.writer.update_info({"data_feed": stats})
