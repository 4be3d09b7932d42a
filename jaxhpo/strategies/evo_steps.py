"""One ``evo`` group's evosax steps: the algorithm object and its params, the keys of a
generation, the first generation and one tell/ask (:class:`jaxhpo.strategies.evo.EvoSearch`
drives one such group per set of scalarisation weights)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jaxhpo import conditions
from jaxhpo.space import Space
from jaxhpo.strategies.decision import shape_fitness
from jaxhpo.strategies.evo_algorithms import _ES_CACHE, _build_es, _freeze, _is_population_based


def make_es(algorithm: str, config: Any, size: int, dims: int):
    """The evosax algorithm and its params for ``size`` members in ``dims`` dimensions
    (the algorithm from :data:`_ES_CACHE`: one object, so one compile, per structure);
    ``config``: the :class:`~jaxhpo.strategies.evo.EvoConfig`."""
    args = (algorithm, size, dims, config.sigma_init, config.learning_rate)
    try:
        cache_key = (*args, _freeze(config.options))
    except TypeError:  # an unhashable option: build a new one
        cache_key = None
    es = _ES_CACHE.get(cache_key) if cache_key else None
    if es is None:
        es = _build_es(*args, config.options)
        if cache_key:
            _ES_CACHE[cache_key] = es
    params = es.default_params
    fields = getattr(params, "__dataclass_fields__", {})
    over = dict(config.params)
    if "std_init" in fields and "std_init" not in over:
        over["std_init"] = config.sigma_init
    for k, v in over.items():
        if k not in fields:
            raise ValueError(
                f"strategy.params.{k}: not a parameter of evosax {algorithm} "
                f"(parameters: {', '.join(fields) or 'none'})"
            )
        old = getattr(params, k)
        params = params.replace(
            **{k: jnp.asarray(v, jnp.asarray(old).dtype) if hasattr(old, "dtype") else v}
        )
    return es, params


def keys(key_data: np.ndarray, generation: int):
    """``(init, ask, tell)`` keys of ``generation``."""
    root = jax.random.wrap_key_data(jnp.asarray(key_data, jnp.uint32))
    return jax.random.split(jax.random.fold_in(root, generation), 3)


def template(algorithm: str, es, params, key, x):
    """A fresh evosax state of the right structure (``from_state_dict`` needs one)."""
    if _is_population_based(algorithm):
        P = x.shape[0]
        return es.init(key, jnp.asarray(x), jnp.zeros((P,), jnp.float32), params)
    return es.init(key, jnp.zeros((x.shape[1],), jnp.float32), params)


def to_dict(es_state) -> dict[str, Any]:
    return jax.device_get(serialization.to_state_dict(es_state))


def first(algorithm: str, sigma_init: float, es, params, key_data, mean):
    """One group's first generation: ``(x [n, D], evosax state)``."""
    k_init, k_ask, _ = keys(key_data, 0)
    n, D = es.population_size, mean.shape[0]
    with jax.numpy_rank_promotion("allow"):
        if _is_population_based(algorithm):
            x = mean + sigma_init * jax.random.normal(k_ask, (n, D))
            es_state = template(algorithm, es, params, k_init, np.asarray(x))
        else:
            es_state = es.init(k_init, jnp.asarray(mean), params)
            es_state = serialization.from_state_dict(es_state, to_dict(es_state))
            x, es_state = es.ask(k_ask, es_state, params)
    return np.asarray(jax.device_get(x), np.float32), es_state


def tell_ask(algorithm: str, es, params, key_data, g: int, space: Space, started: bool, x, raw,
             es_dict):  # fmt: skip
    """One group tells generation ``g`` (its points ``x``, fitness ``raw``) and asks the
    next: ``(new_x, evosax state, mean)``; ``started``: a population-based algorithm has been
    initialised from a told generation."""
    fit = shape_fitness(raw)
    k_init0, _, _ = keys(key_data, 0)
    _, _, k_tell = keys(key_data, g)
    _, k_ask, _ = keys(key_data, g + 1)
    with jax.numpy_rank_promotion("allow"):
        es_state = serialization.from_state_dict(
            template(algorithm, es, params, k_init0, x), es_dict
        )
        if space.when and getattr(es_state, "mean", None) is not None:
            x = conditions.centre_inactive(space, x, es_state.mean)  # inactive: no step
        if _is_population_based(algorithm) and not started:
            es_state = es.init(k_tell, jnp.asarray(x), jnp.asarray(fit), params)
        else:
            es_state, _ = es.tell(k_tell, jnp.asarray(x), jnp.asarray(fit), es_state, params)
        es_state = serialization.from_state_dict(es_state, to_dict(es_state))
        new_x, es_state = es.ask(k_ask, es_state, params)
    new_x = np.asarray(jax.device_get(new_x), np.float32)
    if not np.isfinite(new_x).all():
        raise ValueError(
            f"strategy.algorithm: evosax {algorithm} proposed non-finite points for "
            f"generation {g + 1} (try a smaller strategy.sigma_init or strategy.learning_rate)"
        )
    mean = getattr(es_state, "mean", None)
    mean = x.mean(axis=0) if mean is None else np.asarray(jax.device_get(mean))
    return new_x, es_state, mean
