"""Input warping of the GP (``strategy.input_warp``): each dimension through a learned
Kumaraswamy CDF. The kernel and the Thompson draws' features see the same warped inputs, the
warp at its start is the identity, and a fit on a function stationary only in ``x**4`` learns a
warp that explains it better than the plain kernel does."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhpo.space import Float, Space
from jaxhpo.strategies import bo, gp, gp_draws
from jaxhpo.strategies.bo import BayesOpt

PTS = jnp.array([[0.05, 0.2, 0.3], [0.3, 0.1, 0.95], [0.6, 0.9, 0.3]])


def _log(*values):
    return jnp.log(jnp.array(values))


def _theta(**warp):
    theta = {**gp.init_theta(3, input_warp=True), "log_ls": jnp.log(jnp.array([0.3, 0.5, 1.0]))}
    return {**theta, **{k: jnp.asarray(v) for k, v in warp.items()}}


def test_warp_at_its_start_is_the_identity_and_a_cdf_otherwise():
    np.testing.assert_allclose(np.asarray(gp.warp(_theta(), PTS)), np.asarray(PTS), atol=1e-6)
    w = np.asarray(gp.warp(_theta(log_warp_a=jnp.log(jnp.array([0.5, 2.0, 1.0]))), PTS))
    np.testing.assert_allclose(w[:, 0], np.asarray(PTS[:, 0]) ** 0.5, rtol=1e-5)
    np.testing.assert_allclose(w[:, 1], np.asarray(PTS[:, 1]) ** 2.0, rtol=1e-5)
    grid = jnp.tile(jnp.linspace(0.0, 1.0, 101)[:, None], (1, 3))
    theta = _theta(
        log_warp_a=jnp.log(jnp.array([0.3, 3.0, 1.0])),
        log_warp_b=jnp.log(jnp.array([2.0, 0.4, 1.0])),
    )
    g = np.asarray(gp.warp(theta, grid))
    assert np.all(np.diff(g, axis=0) >= 0) and np.all((g >= 0) & (g <= 1))


def test_warped_kernel_is_the_plain_kernel_on_warped_inputs():
    theta = _theta(
        log_warp_a=jnp.log(jnp.array([0.5, 2.0, 1.3])),
        log_warp_b=jnp.log(jnp.array([1.5, 0.7, 1.0])),
    )
    plain = {k: v for k, v in theta.items() if not k.startswith("log_warp")}
    ones = jnp.ones(3)
    k_warped = gp._kernel(theta)(gp._with_mask(PTS, ones), gp._with_mask(PTS, ones))
    W = gp.warp(theta, PTS)
    k_plain = gp._kernel(plain)(gp._with_mask(W, ones), gp._with_mask(W, ones))
    np.testing.assert_allclose(np.asarray(k_warped), np.asarray(k_plain), rtol=1e-6)


def test_warped_features_draw_the_warped_kernels_covariance():
    theta = _theta(log_warp_a=jnp.log(jnp.array([0.4, 2.5, 1.0])))
    with gp.x64():
        z = jnp.zeros(32)
        ds = gp_draws.make_draws(jax.random.key(0), theta, jnp.zeros((32, 3)), z, z, 4000, 256)
        f = jax.vmap(lambda d: gp_draws._prior_value(theta, d, PTS))(ds)
        xm = gp._with_mask(PTS, jnp.ones(3))
        K = np.asarray(gp._kernel(theta)(xm, xm))
    np.testing.assert_allclose(np.cov(np.asarray(f).T), K, atol=0.15)


def test_fit_learns_a_warp_where_the_function_is_stationary_in_x_to_the_fourth():
    rng = np.random.default_rng(0)
    X = rng.random((24, 2))
    y = gp.standardise(np.sin(12.0 * X[:, 0] ** 4) + 0.1 * X[:, 1])
    gains = {}
    with gp.x64():
        data = gp.pad(X, y)
        for warp in (False, True):
            theta0 = jax.tree.map(lambda v: v[None], gp.init_theta(2, input_warp=warp))
            theta, _, _ = gp.fit_restarts(theta0, *data, steps=300)
            gains[warp] = float(gp.log_likelihood_gain(theta, *data))
    assert float(theta["log_warp_a"][0]) > 0.3  # x**a with a > 1: the first axis stretched
    assert gains[True] > gains[False] + 1.0


def test_bo_with_input_warp_proposes_in_the_space_and_rejects_a_non_bool():
    space = Space({f"x{i}": Float(0.0, 1.0) for i in range(5)})
    X = np.random.default_rng(1).random((12, 5))
    y = np.sum((X - 0.3) ** 2, axis=1)
    strategy = BayesOpt(fit_steps=20, input_warp=True)
    u = strategy.propose(space, 0, 2, strategy.init_theta(5), X, y, 4)[0]
    assert u.shape == (4, 5) and np.all((u >= 0) & (u <= 1))
    assert set(strategy.init_theta(5)) >= {"log_warp_a", "log_warp_b"}
    assert "log_warp_a" not in bo.BayesOpt().init_theta(5)


@pytest.mark.parametrize("field", ["input_warp", "restart", "trust_region"])
@pytest.mark.parametrize("value", ["yes", 1])
def test_switches_name_their_field(field, value):
    with pytest.raises(ValueError, match=f"strategy.{field}"):
        BayesOpt(**{field: value})


def _theta_keys(strategy, D, P):
    space = Space({f"x{i}": Float(0.0, 1.0) for i in range(D)})
    state, _ = strategy.init(0, space, P)
    return set(state.theta)


def test_input_warp_is_on_by_default_from_16_members_in_4_dims_with_one_objective():
    """auto_input_warp: the study's first state carries the warp's parameters from 16 members
    per generation in 4+ searched dims (one objective), and an explicit setting wins."""
    warp = {"log_warp_a", "log_warp_b"}
    assert [bo.auto_input_warp(D, P) for D, P in ((5, 16), (5, 15), (3, 64), (8, 64))] == [
        True,
        False,
        False,
        True,
    ]
    assert warp <= _theta_keys(BayesOpt(), 5, 16)
    assert not warp & _theta_keys(BayesOpt(), 5, 10)
    assert not warp & _theta_keys(BayesOpt(), 3, 16)
    assert not warp & _theta_keys(BayesOpt(input_warp=False), 5, 16)
    assert warp <= _theta_keys(BayesOpt(input_warp=True), 5, 4)
    assert not warp & _theta_keys(BayesOpt().for_study(("loss", "time")), 5, 16)


def test_a_fit_from_parameters_without_the_warp_stays_without_it():
    """The default decision lives in the state's GP parameters: a state saved before the
    default (or bohb's start, gp.init_theta) keeps fitting without the warp, and one with it
    keeps it, whatever the batch size of the proposal."""
    X = np.random.default_rng(1).random((12, 5))
    y = np.sum((X - 0.3) ** 2, axis=1)
    strategy = BayesOpt(fit_steps=5)
    plain = strategy._fit(gp.init_theta(5), X, y)[0]
    warped = strategy._fit(gp.init_theta(5, input_warp=True), X, y)[0]
    assert "log_warp_a" not in plain and "log_warp_a" in warped
