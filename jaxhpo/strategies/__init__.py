"""Strategies behind one interface: ``init(seed, space, size)`` and ``update(state, obs)``."""

from jaxhpo.strategies.base import Observation, PopulationUpdate, Strategy
from jaxhpo.strategies.evo import EvoSearch
from jaxhpo.strategies.halving import Hyperband, MedianStopping, SuccessiveHalving
from jaxhpo.strategies.pbt import PBT
from jaxhpo.strategies.replay import Replay
from jaxhpo.strategies.search import GridSearch, RandomSearch, SobolSearch

STRATEGIES: dict[str, type[Strategy]] = {
    "random": RandomSearch,
    "sobol": SobolSearch,
    "grid": GridSearch,
    "pbt": PBT,
    "halving": SuccessiveHalving,
    "hyperband": Hyperband,
    "median": MedianStopping,
    "replay": Replay,
    "evo": EvoSearch,
}

__all__ = [
    "STRATEGIES",
    "PBT",
    "EvoSearch",
    "Replay",
    "Hyperband",
    "MedianStopping",
    "SuccessiveHalving",
    "GridSearch",
    "Observation",
    "PopulationUpdate",
    "RandomSearch",
    "SobolSearch",
    "Strategy",
]
