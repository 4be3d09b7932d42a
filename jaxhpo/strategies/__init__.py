"""Strategies behind one interface: ``init(seed, space, size)`` and ``update(state, obs)``."""

from jaxhpo.strategies.base import Observation, PopulationUpdate, Strategy
from jaxhpo.strategies.search import STRATEGIES, GridSearch, RandomSearch, SobolSearch

__all__ = [
    "STRATEGIES",
    "GridSearch",
    "Observation",
    "PopulationUpdate",
    "RandomSearch",
    "SobolSearch",
    "Strategy",
]
