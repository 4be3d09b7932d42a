"""Persistent / truncated ES (jaxhpo.hypergrad.pes and the pes / truncated_es strategies)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhpo.hypergrad import pes
from jaxhpo.space import Space
from jaxhpo.strategies.base import Observation
from jaxhpo.strategies.pes import PersistentES, TruncatedES


def _linear_problem():
    """A stable linear system s <- A s + theta v with loss 0.5 (s[0] - 1)^2 after each step."""
    n = 5
    A = 0.5 * jnp.eye(n) + 0.5 * jnp.eye(n, k=1)
    v = jnp.asarray([1.0, 1.0, -1.0, -1.0, -1.0])

    def unroll_fn(theta, s):
        s = A @ s + theta[0] * v
        return 0.5 * (s[0] - 1.0) ** 2, s

    return n, unroll_fn


@pytest.mark.parametrize("persistent", [True, False])
def test_pes_is_unbiased_for_the_whole_unroll_and_truncated_es_is_not(persistent):
    """Summed over T truncations (K=1), the PES gradient estimates match autodiff of the total
    loss of the whole T-step unroll (1% with 20000 particles); truncated ES's do not."""
    T, N, theta0 = 8, 20_000, 0.3
    n, unroll_fn = _linear_problem()

    def total(theta):
        def body(s, _):
            loss, s = unroll_fn(theta, s)
            return s, loss

        return jax.lax.scan(body, jnp.ones(n), None, length=T)[1].sum()

    exact = float(jax.grad(total)(jnp.asarray([theta0]))[0])
    # learning rate 0: theta stays, so the estimates refer to one point
    es, params = pes.make_es(1, N, sigma=0.01, optimizer=optax.sgd(0.0), persistent=persistent)
    with jax.numpy_rank_promotion("allow"):
        state = es.init(jax.random.key(0), jnp.asarray([theta0]), params)

        def body(carry, i):
            state, inner = carry
            state, inner, _, g = pes.truncation_step(
                es, params, unroll_fn, jax.random.fold_in(jax.random.key(1), i), state, inner
            )
            return (state, inner), g[0]

        _, grads = jax.jit(lambda s, x: jax.lax.scan(body, (s, x), jnp.arange(T)))(
            state, jnp.ones((N, n))
        )
    estimate = float(grads.sum())
    if persistent:
        assert estimate == pytest.approx(exact, rel=0.01), (estimate, exact)
    else:
        assert abs(estimate - exact) > 0.2 * abs(exact), (estimate, exact)


def test_make_es_rejects_odd_particle_counts():
    with pytest.raises(ValueError, match="population.size"):
        pes.make_es(1, 7, sigma=0.1, optimizer=optax.sgd(0.1))


SPACE = {"lr": "loguniform(1e-4, 1e-1)", "dropout": "uniform(0.0, 0.5)"}


def _obs(step, cols, fitness, diverged=None):
    P = len(fitness)
    return Observation(
        step=step,
        member_id=np.arange(P),
        hparams={k: np.asarray(v, np.float64) for k, v in cols.items()},
        metrics={"loss": np.asarray(fitness, np.float64)},
        diverged=np.zeros(P, bool) if diverged is None else diverged,
        active=np.ones(P, bool),
    )


def test_strategy_equals_evosax_persistent_es_driven_by_hand():
    from evosax.algorithms import PersistentES as EvosaxPES

    space = Space.from_config(SPACE)
    strat = PersistentES(sigma=0.3, outer_lr=0.1, outer="sgd")
    state, cols = strat.init(5, space, 4)
    fitness = np.asarray([1.0, 2.0, 0.5, 3.0])
    state2, upd = strat.update(state, _obs(10, cols, fitness))
    es = EvosaxPES(
        population_size=4,
        solution=jnp.zeros(2),
        optimizer=optax.sgd(0.1),
        std_schedule=optax.constant_schedule(0.3),
    )
    params = es.default_params.replace(T=pes.ENDLESS, K=1)
    root = jax.random.key(5)
    k_init, k_ask, _ = jax.random.split(jax.random.fold_in(root, 0), 3)
    _, k_ask1, k_tell1 = jax.random.split(jax.random.fold_in(root, 1), 3)
    with jax.numpy_rank_promotion("allow"):
        s = es.init(k_init, jnp.zeros(2), params)
        x, s = es.ask(k_ask, s, params)
        s, _ = es.tell(k_tell1, x, jnp.asarray(fitness, jnp.float32), s, params)
        x1, s = es.ask(k_ask1, s, params)
    np.testing.assert_allclose(state.x, x, rtol=1e-6)
    np.testing.assert_allclose(state2.x, x1, rtol=1e-6)
    decoded = space.from_unconstrained(np.asarray(x1, np.float64))
    for k in SPACE:
        np.testing.assert_allclose(upd.hparams[k], decoded[k], rtol=1e-6)
    # antithetic pairs around the mean: particle i and i + P/2 mirror each other
    np.testing.assert_allclose((x[:2] + x[2:]) / 2, 0.0, atol=1e-6)
    assert sum(e["kind"] == "explore" for e in upd.events) == 4
    assert any(e["kind"] == "generation" for e in upd.events)


def test_truncated_es_strategy_minimises_a_static_objective():
    """With the fitness a fixed function of the hyperparameters, truncated ES moves theta to its
    minimiser (dropout 0.25, lr 10^-2.5: the centre of the space, z = 0)."""
    space = Space.from_config(SPACE)
    strat = TruncatedES(
        sigma=0.3, outer_lr=0.1, outer="adam", points=[{"lr": 1e-3, "dropout": 0.05}]
    )
    state, cols = strat.init(0, space, 8)
    target = np.zeros(2)
    for g in range(150):
        z = np.asarray(space.to_unconstrained(cols))
        fit = np.sum((z - target) ** 2, axis=1)
        state, upd = strat.update(state, _obs(g, cols, fit))
        cols = upd.hparams
    mean = next(e for e in upd.events if e["kind"] == "generation")["mean"]
    assert mean["lr"] == pytest.approx(10**-2.5, rel=0.1) and mean["dropout"] == pytest.approx(
        0.25, abs=0.03
    ), mean


def test_diverged_member_is_reinitialised_and_its_accumulator_cleared():
    space = Space.from_config(SPACE)
    strat = PersistentES()
    state, cols = strat.init(0, space, 4)
    diverged = np.asarray([False, True, False, False])
    state, upd = strat.update(state, _obs(5, cols, [1.0, np.nan, 2.0, 3.0], diverged))
    assert upd.reinit is not None and upd.reinit.tolist() == diverged.tolist()
    accum = state.es["pert_accum"]
    x = state.x
    mean = state.es["mean"]
    # the reinitialised particle's accumulator holds only the fresh perturbation
    np.testing.assert_allclose(accum[1], x[1] - mean, rtol=1e-5, atol=1e-6)


def test_bad_sizes_raise_naming_the_field():
    with pytest.raises(ValueError, match="population.size"):
        PersistentES().init(0, Space.from_config(SPACE), 3)
    with pytest.raises(ValueError, match="strategy.sigma"):
        PersistentES(sigma=0.0)


@pytest.mark.parametrize("horizon", [None, 20])
def test_horizon_restarts_members_and_resets_the_perturbation_sums(horizon):
    """With ``horizon=20`` and segments of 10 steps, the update after step 20 re-initialises
    every member and leaves each particle's sum holding only the fresh perturbation; step 10
    does neither. Without a horizon the sums keep growing and nobody restarts."""
    space = Space.from_config(SPACE)
    strat = PersistentES(sigma=0.3, outer_lr=0.1, horizon=horizon)
    strat.check(100, 10)
    state, cols = strat.init(0, space, 4)
    for step in (10, 20):
        state, upd = strat.update(state, _obs(step, cols, [1.0, 2.0, 0.5, 3.0]))
        cols = upd.hparams
        fresh = state.x - state.es["mean"]  # this ask's perturbation alone
        reset = np.allclose(state.es["pert_accum"], fresh, atol=1e-6)
        restarted = upd.reinit is not None and upd.reinit.all()
        gen = next(e for e in upd.events if e["kind"] == "generation")
        assert reset == restarted == gen["restart"] == (horizon == step), (step, horizon)


def test_horizon_must_fall_on_segment_boundaries():
    with pytest.raises(ValueError, match="strategy.horizon"):
        PersistentES(horizon=15).check(100, 10)
    with pytest.raises(ValueError, match="strategy.horizon"):
        PersistentES(horizon=0)
