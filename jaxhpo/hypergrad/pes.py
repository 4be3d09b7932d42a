"""Persistent evolution strategies and truncated ES over unrolled computations.

Vicol, Metz & Sohl-Dickstein 2021, "Unbiased Gradient Estimation in Unrolled Computation Graphs
with Persistent Evolution Strategies", arXiv:2112.13835.

``N`` particles (``N`` even, antithetic pairs ``+eps, -eps``) each carry their own inner state.
At every truncation of ``K`` inner steps particle ``i`` unrolls from its own state with
``theta + eps_i`` (``eps_i ~ N(0, sigma^2)``, fresh each truncation) and reports the
truncation's loss ``L_i``. Persistent ES keeps the sum of every perturbation a particle has
seen since its inner problem started, ``xi_i``, and estimates

    g = 1 / (N sigma^2) * sum_i L_i xi_i,

which is unbiased for the gradient of the loss summed over the *whole* unroll; plain truncated
ES uses only this truncation's ``eps_i`` (``xi_i`` reset every truncation) and is biased the way
truncated backpropagation is.

The estimator is evosax's ``PersistentES`` (Lange 2023, evosax 0.3: ``ask`` adds the fresh
antithetic perturbations to ``pert_accum``, ``tell`` forms ``g`` and takes one step of its optax
optimizer on the mean ``theta``), used as is: its layout is exactly this one (one ``theta``,
``N`` particles whose inner states the caller keeps). Truncated ES is the same algorithm with
the accumulator horizon ``T = K`` (reset after every truncation) while the particles' inner
states still persist. An inner problem of finite length ``T`` resets its particles when
``state.inner_step_counter`` returns to 0 (the caller's job: the inner states are not evosax's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from evosax.algorithms import PersistentES

#: "Never reset": the accumulator horizon of persistent ES over an endless inner problem.
ENDLESS = 2**30


def make_es(
    num_dims: int,
    num_particles: int,
    *,
    sigma: float,
    optimizer: optax.GradientTransformation,
    truncation: int = 1,
    horizon: int | None = None,
    persistent: bool = True,
) -> tuple[PersistentES, Any]:
    """evosax ``PersistentES`` and its params for ``num_particles`` antithetic particles.

    Args:
      num_dims: dimension of ``theta``.
      num_particles: ``N``, even.
      sigma: perturbation standard deviation.
      optimizer: the outer optax optimizer on ``theta`` (e.g. ``optax.sgd(1e-4)``).
      truncation: ``K``, inner steps per truncation.
      horizon: ``T``, inner steps before an inner problem restarts (``None``: never).
      persistent: False gives truncated ES (accumulator reset after every truncation).

    Raises:
      ValueError: naming ``population.size`` for an odd or too small particle count.
    """
    if num_particles < 2 or num_particles % 2:
        raise ValueError(
            f"population.size: persistent/truncated ES needs an even number of particles "
            f"(antithetic pairs), got {num_particles}"
        )
    es = PersistentES(
        population_size=num_particles,
        solution=jnp.zeros((num_dims,)),
        optimizer=optimizer,
        std_schedule=optax.constant_schedule(sigma),
    )
    T = truncation if not persistent else (ENDLESS if horizon is None else horizon)
    params = es.default_params.replace(T=T, K=truncation)
    return es, params


def gradient_estimate(es_state: Any, fitness: jax.Array) -> jax.Array:
    """The ES gradient the next ``tell`` will use: ``fitness @ pert_accum / (N sigma^2)``
    (evosax's formula, for reporting)."""
    n = fitness.shape[0]
    return jnp.dot(fitness, es_state.pert_accum) / es_state.std**2 / n


def truncation_step(
    es: PersistentES,
    params: Any,
    unroll_fn: Callable[[jax.Array, Any], tuple[jax.Array, Any]],
    key: jax.Array,
    es_state: Any,
    inner_N: Any,
) -> tuple[Any, Any, jax.Array, jax.Array]:
    """One truncation: ask, unroll every particle ``K`` steps from its own state, tell.

    Args:
      unroll_fn: ``(theta [D], inner) -> (loss, inner)`` for ONE particle (vmapped here).
      inner_N: the particles' inner states (leading axis ``N``).

    Returns:
      ``(es_state, inner_N, losses [N], gradient [D])``.
    """
    k_ask, k_tell = jax.random.split(key)
    theta_N, es_state = es.ask(k_ask, es_state, params)
    losses, inner_N = jax.vmap(unroll_fn)(theta_N, inner_N)
    grad = gradient_estimate(es_state, losses)
    es_state, _ = es.tell(k_tell, theta_N, losses, es_state, params)
    return es_state, inner_N, losses, grad
