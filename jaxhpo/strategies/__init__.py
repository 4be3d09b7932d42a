"""Strategies behind one interface: ``init(seed, space, size)`` and ``update(state, obs)``."""

from jaxhpo.strategies.base import Observation, PopulationUpdate, Strategy
from jaxhpo.strategies.pbt import PBT
from jaxhpo.strategies.search import GridSearch, RandomSearch, SobolSearch

STRATEGIES: dict[str, type[Strategy]] = {
    "random": RandomSearch,
    "sobol": SobolSearch,
    "grid": GridSearch,
    "pbt": PBT,
}

__all__ = [
    "STRATEGIES",
    "PBT",
    "GridSearch",
    "Observation",
    "PopulationUpdate",
    "RandomSearch",
    "SobolSearch",
    "Strategy",
]
