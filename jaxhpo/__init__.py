"""jaxhpo: tune hyperparameters by training a whole population of models as one JAX program.

The public API::

    jaxhpo.tune(task, space, strategy=..., optimizer=..., ...) -> jaxhpo.TuneResult
    jaxhpo.ModelTask        base class of a user's task (any Flax NNX module, loss and data)
    jaxhpo.Population       the population trainer, for research code that drives it directly
    jaxhpo.Space            search spaces
    jaxhpo.Strategy, jaxhpo.Observation, jaxhpo.PopulationUpdate   writing a strategy
"""

from jaxhpo.api import TuneResult, tune
from jaxhpo.population import Population, PopulationState
from jaxhpo.pretrained import load_into as load_best
from jaxhpo.space import Space
from jaxhpo.strategies.base import Observation, PopulationUpdate, Strategy
from jaxhpo.tasks.protocol import ModelTask

__all__ = [
    "TuneResult",
    "load_best",
    "tune",
    "ModelTask",
    "Observation",
    "Population",
    "PopulationState",
    "PopulationUpdate",
    "Space",
    "Strategy",
]
