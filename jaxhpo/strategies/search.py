"""Grid, random and Sobol search: each proposes one whole population, trained as one program.

Bergstra & Bengio 2012 (random search, JMLR 13); Sobol 1967 / Owen 1998 (scrambled Sobol points,
through ``scipy.stats.qmc``).
"""

from __future__ import annotations

from jaxhpo.space import Space
from jaxhpo.strategies.base import Strategy


class RandomSearch(Strategy):
    """Independent uniform samples in the space's unit coordinates (log-uniform for log dims)."""

    name = "random"

    def init(self, seed, space: Space, size):
        if size is None or size < 1:
            raise ValueError(f"population.size: random search needs a size >= 1, got {size}")
        return None, space.sample(seed, size)


class SobolSearch(Strategy):
    """Scrambled Sobol points: more even coverage than random at the same count."""

    name = "sobol"

    def init(self, seed, space: Space, size):
        if size is None or size < 1:
            raise ValueError(f"population.size: Sobol search needs a size >= 1, got {size}")
        return None, space.sobol(seed, size)


class GridSearch(Strategy):
    """The full Cartesian grid; ``points`` values per float dimension.

    The population size is the grid size; if ``population.size`` is given it must match.
    """

    name = "grid"
    config_fields = ("grid_points",)
    decides_size = True

    @classmethod
    def from_config(cls, cfg, train):
        return cls(points=cfg.grid_points)

    def __init__(self, points: int = 3):
        if points < 1:
            raise ValueError(f"strategy.grid_points: must be >= 1, got {points}")
        self.points = points

    def init(self, seed, space: Space, size):
        cols = space.grid(self.points)
        n = len(next(iter(cols.values()))) if cols else 1
        if size is not None and size != n:
            dims = ", ".join(space.searched)
            raise ValueError(
                f"population.size: the grid over ({dims}) has {n} points but population.size="
                f"{size}; set population.size={n} or leave it unset"
            )
        return None, cols
