"""The population: one member's step written once, the members as a transform of it.

::

    trainer.py      Population: init, train a segment (scan over steps, members by vmap /
                    lax.map / chunks / sharding), copy and re-initialise members
    editing.py      hyperparameters and member moves between segments (copy, re-init, keep)
    specialise.py   which task hyperparameters are constants of the step (searched= / fixed=)
    evaluate.py     validation and test evaluation of every member
    step.py         one member's training and evaluation step, written plainly
    members.py      PopulationState (a pytree with a leading member axis), gather / scatter,
                    the member modes
    member_mode.py  population.mode=auto: vmap or lax.map from the step's cost
    batches.py      each member's batch (per-member batch sizes, folds)
    buckets.py      shape buckets: one population per structure (population.structure=buckets)

Names are imported on first use, so that importing one module (``parallel`` from the command
line) does not build the others. Devices and sharding are :mod:`jaxhpo.parallel`'s.
"""

from __future__ import annotations

from jaxhpo._lazy import lazy_exports

_EXPORTS = {
    "Population": "jaxhpo.population.trainer",
    "MEMBER_STREAM": "jaxhpo.population.initialise",
    "resolve_devices": "jaxhpo.population.trainer",
    "BucketedPopulation": "jaxhpo.population.buckets",
    "BUCKET_HPARAMS": "jaxhpo.population.buckets",
    "MEMBER_MODES": "jaxhpo.population.members",
    "PopulationState": "jaxhpo.population.members",
    "gather": "jaxhpo.population.members",
    "scatter": "jaxhpo.population.members",
    "over_members": "jaxhpo.population.members",
    "_gather": "jaxhpo.population.members",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
