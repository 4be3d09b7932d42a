"""A population held in shape buckets (:class:`BucketedState`): each bucket's state and the
study slots its members fill (:mod:`jaxhpo.population.buckets` trains and edits it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from flax import struct

from jaxhpo import parallel
from jaxhpo.population.members import PopulationState

Key = tuple[int, ...]  # a bucket's structure: the values of its bucket names


@struct.dataclass
class BucketedState:
    """A population held in shape buckets.

    Attributes:
      buckets: one :class:`PopulationState` per bucket.
      keys: each bucket's structure (values of ``BucketedPopulation.bucket_names``), static.
      slots: each bucket's members' study slots (``slots[b][j]``: the slot of member ``j`` of
        bucket ``b``), static. Together they cover ``0 .. P-1`` once.
    """

    buckets: tuple[PopulationState, ...]
    keys: tuple[Key, ...] = struct.field(pytree_node=False)
    slots: tuple[tuple[int, ...], ...] = struct.field(pytree_node=False)

    @property
    def size(self) -> int:
        return sum(len(s) for s in self.slots)

    def to_study(self, parts: Sequence[Any]) -> np.ndarray:
        """Per-bucket host arrays (leading member axis) in study slot order."""
        parts = [np.asarray(p) for p in parts]
        out = np.empty((self.size, *parts[0].shape[1:]), parts[0].dtype)
        for s, p in zip(self.slots, parts, strict=True):
            out[list(s)] = p
        return out

    def _field(self, name: str) -> np.ndarray:
        return self.to_study([parallel.to_host(getattr(b, name)) for b in self.buckets])

    @property
    def member_id(self) -> np.ndarray:
        return self._field("member_id")

    @property
    def step(self) -> np.ndarray:
        return self._field("step")

    @property
    def active(self) -> np.ndarray:
        return self._field("active")

    @property
    def diverged(self) -> np.ndarray:
        return self._field("diverged")

    def local_index(self) -> np.ndarray:
        """int [P]: each slot's position inside its bucket."""
        out = np.empty(self.size, np.int64)
        for s in self.slots:
            out[list(s)] = np.arange(len(s))
        return out

    def bucket_of(self) -> np.ndarray:
        """int [P]: the bucket index of each slot."""
        out = np.empty(self.size, np.int32)
        for b, s in enumerate(self.slots):
            out[list(s)] = b
        return out
