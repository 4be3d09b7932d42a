"""Strategies behind one interface: ``init(seed, space, size)`` and ``update(state, obs)``."""

from jaxhpo.strategies.base import Observation, PopulationUpdate, Strategy
from jaxhpo.strategies.bo import BayesOpt
from jaxhpo.strategies.bohb import BOHB
from jaxhpo.strategies.evo import EvoSearch
from jaxhpo.strategies.halving import Hyperband, MedianStopping, SuccessiveHalving
from jaxhpo.strategies.hypergrad import UnrolledHypergrad
from jaxhpo.strategies.implicit import ImplicitHypergrad
from jaxhpo.strategies.nsga2 import NSGA2
from jaxhpo.strategies.optuna_search import OptunaSearch
from jaxhpo.strategies.pb2 import PB2
from jaxhpo.strategies.pbt import PBT
from jaxhpo.strategies.pes import PersistentES, TruncatedES
from jaxhpo.strategies.reinforce import Reinforce
from jaxhpo.strategies.replay import Replay
from jaxhpo.strategies.search import GridSearch, RandomSearch, SobolSearch

STRATEGIES: dict[str, type[Strategy]] = {
    "random": RandomSearch,
    "sobol": SobolSearch,
    "grid": GridSearch,
    "pbt": PBT,
    "pb2": PB2,
    "halving": SuccessiveHalving,
    "hyperband": Hyperband,
    "bohb": BOHB,
    "median": MedianStopping,
    "replay": Replay,
    "evo": EvoSearch,
    "nsga2": NSGA2,
    "bo": BayesOpt,
    "rl": Reinforce,
    "optuna": OptunaSearch,  # optional: pip install 'jaxhpo[optuna]'
    "hypergrad": UnrolledHypergrad,
    "implicit": ImplicitHypergrad,
    "pes": PersistentES,
    "truncated_es": TruncatedES,
}

__all__ = [
    "STRATEGIES",
    "PBT",
    "PB2",
    "EvoSearch",
    "NSGA2",
    "BayesOpt",
    "OptunaSearch",
    "Reinforce",
    "Replay",
    "Hyperband",
    "BOHB",
    "MedianStopping",
    "SuccessiveHalving",
    "GridSearch",
    "Observation",
    "PopulationUpdate",
    "RandomSearch",
    "SobolSearch",
    "Strategy",
    "UnrolledHypergrad",
    "ImplicitHypergrad",
    "PersistentES",
    "TruncatedES",
]
