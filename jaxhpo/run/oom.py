"""XLA's out-of-memory error, explained: the population size, the memory per member and what
to change."""

from __future__ import annotations

import contextlib
from typing import Any

import jax


class OutOfMemoryError(RuntimeError):
    """The population does not fit on its devices; the message says by how much and what to
    change."""


def is_oom(e: BaseException) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


@contextlib.contextmanager
def explain_oom(population: Any, size: int, train_data: Any, num_steps: int):
    """Turns XLA's out-of-memory error into one that names the population size, the estimated
    memory per member and what to change."""
    try:
        yield
    except Exception as e:
        if not is_oom(e):
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
