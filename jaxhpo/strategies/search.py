"""Grid, random and Sobol search: each proposes one whole population, trained as one program.

Bergstra & Bengio 2012 (random search, JMLR 13); Sobol 1967 / Owen 1998 (scrambled Sobol points,
through ``scipy.stats.qmc``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxhpo.space import Space
from jaxhpo.strategies.base import Capabilities, EmptyState, Strategy, fill_points


def with_points(
    space: Space, cols: Mapping[str, np.ndarray], points: Sequence[Mapping[str, Any]]
) -> dict[str, np.ndarray]:
    """Sampled members ``cols`` whose first rows are ``strategy.points`` (explicit members, full
    or partial assignments; the rest of a partial one stays sampled).

    Raises:
      ValueError: naming ``strategy.points`` (more points than members, an unknown name, a
        value outside the space).
    """
    points = list(points or ())
    if not points:
        return dict(cols)
    size = len(next(iter(cols.values())))
    if len(points) > size:
        raise ValueError(
            f"strategy.points: {len(points)} points but only {size} members sample them "
            "(population.size)"
        )
    bad = [p for p in points if not isinstance(p, Mapping)]
    if bad:
        raise ValueError(
            f"strategy.points: each point must be a mapping name: value, got {bad[0]!r}"
        )
    return fill_points(space, cols, points)


@dataclasses.dataclass(frozen=True)
class SampledConfig:
    """``strategy:`` settings of random and Sobol search."""

    #: explicit first members (name -> value, full or partial); the rest are sampled
    points: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class _Sampled(Strategy):
    """A strategy that samples its members (:attr:`draw`: the space's ``sample`` or ``sobol``)
    and places ``strategy.points`` first."""

    Config = SampledConfig
    State = EmptyState  # it decides once, in init
    # it never changes the population; several objectives: the front of what was trained
    capabilities = Capabilities(compiled=True, objectives=True)
    draw: str = "sample"
    label: str = "random search"

    def init(self, seed, space: Space, size):
        if size is None or size < 1:
            raise ValueError(f"population.size: {self.label} needs a size >= 1, got {size}")
        cols = getattr(space, self.draw)(seed, size)
        return EmptyState(), with_points(space, cols, self.config.points)


class RandomSearch(_Sampled):
    """Independent uniform samples in the space's unit coordinates (log-uniform for log dims);
    ``strategy.points`` are the first members."""

    name = "random"


class SobolSearch(_Sampled):
    """Scrambled Sobol points: more even coverage than random at the same count;
    ``strategy.points`` are the first members."""

    name = "sobol"
    draw = "sobol"
    label = "Sobol search"


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """``strategy:`` settings of grid search."""

    points_per_dim: int = 3  # values per float dimension (ints and choices: all of theirs)

    def __post_init__(self):
        if isinstance(self.points_per_dim, bool) or self.points_per_dim < 2:
            raise ValueError(f"strategy.points_per_dim: must be >= 2, got {self.points_per_dim}")


class GridSearch(Strategy):
    """The full Cartesian grid; ``points_per_dim`` values per float dimension.

    The population size is the grid size; if ``population.size`` is given it must match.
    """

    name = "grid"
    Config = GridConfig
    State = EmptyState
    capabilities = Capabilities(compiled=True, decides_size=True, objectives=True)

    def init(self, seed, space: Space, size):
        cols = space.grid(self.config.points_per_dim)
        n = len(next(iter(cols.values()))) if cols else 1
        if size is not None and size != n:
            dims = ", ".join(space.searched)
            raise ValueError(
                f"population.size: the grid over ({dims}) has {n} points but population.size="
                f"{size}; set population.size={n} or leave it unset"
            )
        return EmptyState(), cols
