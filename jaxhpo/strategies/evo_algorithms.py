"""The evosax algorithms the ``evo`` strategy can drive: names, aliases, default learning rates
and the cached construction of an algorithm object (:mod:`jaxhpo.strategies.evo` adapts them)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import optax
from evosax import algorithms as _evosax
from evosax.core.optimizer import clipup

#: Friendly name -> evosax 0.3 registry name (``evosax.algorithms.algorithms``). Lookup is
#: case-insensitive, ``-`` counts as ``_``, and every registry name works as well.
ALIASES: dict[str, str] = {
    "cma_es": "CMA_ES",
    "cma": "CMA_ES",
    "sep_cma_es": "Sep_CMA_ES",
    "open_es": "Open_ES",
    "openai_es": "Open_ES",
    "snes": "SNES",
    "xnes": "xNES",
    "pgpe": "PGPE",
    "ars": "ARS",
    "simple_es": "SimpleES",
    "cr_fm_nes": "CR_FM_NES",
    "ma_es": "MA_ES",
    "lm_ma_es": "LM_MA_ES",
    "rm_es": "Rm_ES",
    "des": "DES",
    "les": "LES",
    "asebo": "ASEBO",
    "esmc": "ESMC",
    "guided_es": "GuidedES",
    "persistent_es": "PersistentES",
    "noise_reuse_es": "NoiseReuseES",
    "hill_climbing": "HillClimbing",
    "simulated_annealing": "SimulatedAnnealing",
    "gradientless_descent": "GradientlessDescent",
    "iamalgam_full": "iAMaLGaM_Full",
    "iamalgam_univariate": "iAMaLGaM_Univariate",
    "cma_anchored_les": "CMAAnchoredLES",
    "evotf_es": "EvoTF_ES",
    "simple_ga": "SimpleGA",
    "ga": "SimpleGA",
    "pso": "PSO",
    "de": "DifferentialEvolution",
    "differential_evolution": "DifferentialEvolution",
    "diffusion_evolution": "DiffusionEvolution",
    "gesmr_ga": "GESMR_GA",
    "mr15_ga": "MR15_GA",
    "samr_ga": "SAMR_GA",
    "lga": "LGA",
}

#: Registry names the adapter cannot build (they need arguments it has no value for).
UNSUPPORTED = ("RandomSearch", "SV_CMA_ES", "SV_Open_ES")

#: Learning rates of the mean for algorithms that take an optax ``optimizer``, when
#: ``learning_rate`` is not given. evosax's own defaults are set for neural-network weights
#: (e.g. OpenAI-ES: SGD at 1e-3; PGPE: ClipUp at 0.01 with a 0.02 cap), far too small to move
#: across a search space in the tens of generations a study affords. With ``learning_rate`` set,
#: algorithms that take an ``optimizer`` get ``optax.sgd(learning_rate)`` (PGPE:
#: ``clipup(learning_rate, max_velocity=2 * learning_rate)``, the ClipUp paper's ratio).
DEFAULT_LEARNING_RATES: dict[str, float] = {
    "Open_ES": 1.0,
    "ARS": 1.0,
    "PGPE": 0.15,
}


def _registry() -> dict[str, type]:
    return {k: v for k, v in _evosax.algorithms.items() if k not in UNSUPPORTED}


def _lookup() -> dict[str, str]:
    table = {k.lower(): k for k in _registry()}
    table.update(ALIASES)
    return table


def resolve_algorithm(name: str) -> str:
    """The evosax registry name of ``name`` (case-insensitive; aliases in :data:`ALIASES`).

    Raises:
        ValueError: naming ``strategy.algorithm`` and listing the choices.
    """
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    table = _lookup()
    if key not in table:
        raise ValueError(
            f"strategy.algorithm: unknown {name!r} (choose from {', '.join(ALIASES)}, "
            "or any evosax.algorithms name)"
        )
    return table[key]


def _is_population_based(algo: str) -> bool:
    return algo in _evosax.population_based_algorithms


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a constructor option (for the ES cache), or raise TypeError."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    hash(value)
    return value


#: Built algorithms, shared by strategies of the same settings: evosax jit-compiles ``init``,
#: ``ask`` and ``tell`` with the algorithm object as a static argument, so reusing the object
#: reuses the compiled programs (a study of many seeds compiles once).
_ES_CACHE: dict[tuple, Any] = {}


def _build_es(algo, size, dims, sigma_init, learning_rate, options):
    cls = _evosax.algorithms[algo]
    accepted = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    lr = learning_rate if learning_rate is not None else DEFAULT_LEARNING_RATES.get(algo)
    if "optimizer" in accepted and lr is not None:
        if algo == "PGPE":
            kwargs["optimizer"] = clipup(learning_rate=lr, max_velocity=2 * lr)
        else:
            kwargs["optimizer"] = optax.sgd(lr)
    if "std_schedule" in accepted:
        kwargs["std_schedule"] = optax.constant_schedule(sigma_init)
    for k in options:
        if k not in accepted or k in ("self", "population_size", "solution"):
            choices = [a for a in accepted if a not in ("self", "population_size", "solution")]
            raise ValueError(
                f"strategy.options.{k}: not an argument of evosax {algo} "
                f"(arguments: {', '.join(choices)})"
            )
    kwargs.update(options)
    try:
        es = cls(population_size=size, solution=jnp.zeros((dims,), jnp.float32), **kwargs)
    except AssertionError as e:
        raise ValueError(f"population.size: evosax {algo} refuses {size} members ({e})") from None
    return es
