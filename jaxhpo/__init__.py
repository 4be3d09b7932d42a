"""jaxhpo: tune hyperparameters by training a whole population of models as one JAX program.

The public API::

    jaxhpo.tune(task, space, strategy=..., optimizer=..., ...) -> jaxhpo.TuneResult
    jaxhpo.ModelTask        base class of a user's task (any Flax NNX module, loss and data)
    jaxhpo.load_best        the best member's saved weights into a module of the user's
    jaxhpo.Population       the population trainer, for research code that drives it directly
    jaxhpo.Space            search spaces
    jaxhpo.Strategy, jaxhpo.Observation, jaxhpo.PopulationUpdate   writing a strategy

Names are imported on first use, so that ``import jaxhpo`` does not start JAX (the command line
sets XLA's flags, e.g. one virtual device per CPU core, before JAX starts).
"""

from __future__ import annotations

from jaxhpo._lazy import lazy_exports

__version__ = "0.2.0"  # 0.2: each strategy owns its settings (strategy: {name, ...})

_EXPORTS = {
    "tune": "jaxhpo.api",
    "TuneResult": "jaxhpo.api",
    "ModelTask": "jaxhpo.tasks.protocol",
    "load_best": ("jaxhpo.pretrained", "load_into"),
    "Population": "jaxhpo.population",
    "PopulationState": "jaxhpo.population",
    "Space": "jaxhpo.space",
    "Strategy": "jaxhpo.strategies.base",
    "Observation": "jaxhpo.strategies.base",
    "PopulationUpdate": "jaxhpo.strategies.base",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("jaxhpo", _EXPORTS, globals())
