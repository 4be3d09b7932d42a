"""Log expected improvement (``strategy.acquisition: ei``, bo's default with one member per
generation): ``log_h`` equals the closed form and its derivative wherever the closed form is
representable and stays finite beyond; the GP's log EI equals the closed form on the posterior;
projected Adam finds EI's maximum; the EI member leads the batch and the Thompson draws follow."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm
from searchbench import Resumed, generations_of

from jaxhpo.simulate import simulate
from jaxhpo.space import Float, Space
from jaxhpo.strategies import bo, gp
from jaxhpo.strategies.acquisition import log_ei_at, log_h, maximise_ei
from jaxhpo.strategies.bo import BayesOpt


def test_log_h_equals_the_closed_form_and_its_derivative():
    z = np.concatenate([np.linspace(-30.0, 6.0, 73), [-1.0, -1.0 + 1e-9, -1.0 - 1e-9]])
    with gp.x64():
        got = np.asarray(log_h(jnp.asarray(z)))
        grad = np.asarray(jax.vmap(jax.grad(log_h))(jnp.asarray(z)))
    h = norm.pdf(z) + z * norm.cdf(z)
    np.testing.assert_allclose(got, np.log(h), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grad, norm.cdf(z) / h, rtol=1e-7)  # d/dz log h = Phi / h


def test_log_h_is_finite_and_increasing_where_the_closed_form_underflows():
    z = -np.logspace(1.5, 12, 40)[::-1]  # -1e12 .. -31.6, increasing
    with gp.x64():
        got = np.asarray(log_h(jnp.asarray(z)))
        grad = np.asarray(jax.vmap(jax.grad(log_h))(jnp.asarray(z)))
    assert np.all(np.isfinite(got)) and np.all(np.diff(got) > 0)
    assert np.all(np.isfinite(grad)) and np.all(grad > 0)
    # the asymptote h(z) ~ phi(z) / z^2 as z -> -inf
    np.testing.assert_allclose(got, norm.logpdf(z) - 2 * np.log(-z), rtol=1e-3)


def _fit(n=12, D=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, D))
    y = gp.standardise(np.sum((X - 0.3) ** 2, axis=1))
    theta = {"log_amp": np.asarray(0.0), "log_ls": np.full(D, -1.0), "log_noise": np.log(1e-4)}
    return theta, X, y


def test_log_ei_is_the_closed_form_on_the_gp_posterior():
    theta, X, y = _fit()
    xq = np.random.default_rng(1).random((50, 2))
    with gp.x64():
        data = gp.pad(X, y)
        got = np.asarray(log_ei_at(theta, *data, jnp.asarray(xq), float(np.min(y))))
        mu, var = (np.asarray(a) for a in gp.posterior(theta, *data, jnp.asarray(xq)))
    s = np.sqrt(var)
    z = (np.min(y) - mu) / s
    ei = s * (z * norm.cdf(z) + norm.pdf(z))
    ok = ei > 1e-12  # where the closed form keeps its digits
    assert ok.sum() >= 25
    np.testing.assert_allclose(got[ok], np.log(ei[ok]), rtol=1e-6)
    assert np.all(np.isfinite(got))


def test_projected_adam_finds_the_maximum_of_log_ei_on_a_grid():
    theta, X, y = _fit(n=8)
    g = np.linspace(0.0, 1.0, 201)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    cand = np.random.default_rng(2).random((64, 2))
    with gp.x64():
        data = gp.pad(X, y)
        x, best, on_cand = (
            np.asarray(a) for a in maximise_ei(theta, *data, jnp.asarray(cand), steps=200)
        )
        on_grid = np.asarray(log_ei_at(theta, *data, jnp.asarray(grid), float(np.min(y))))
    assert float(best) >= float(np.max(on_cand))  # the local search starts from the candidates
    assert float(best) >= float(np.max(on_grid)) - 1e-3
    assert np.all((np.asarray(x) >= 0) & (np.asarray(x) <= 1))


SPACE5 = Space({f"x{i}": Float(-5.0, 5.0) for i in range(5)})


def _data(n=20):
    rng = np.random.default_rng(3)
    X = rng.random((n, 5))
    return X, np.sum((10 * X - 5) ** 4 - 16 * (10 * X - 5) ** 2, axis=1)


def test_one_member_takes_the_ei_maximiser_and_a_batch_leads_with_it():
    X, y = _data()
    ei = BayesOpt(fit_steps=20, acquisition="ei", greedy=0)
    u1, theta, _ = ei.propose(SPACE5, 0, 3, bo.init_theta(5), X, y, 1)
    # the member's log EI is at least every candidate's (the fit is the one propose made)
    _, data, ys, _ = ei._fit(bo.init_theta(5), X, bo.warp_outputs(y, "log"))
    cand = ei._candidates(SPACE5, np.random.default_rng([0, 3]), X, ys)
    with gp.x64():
        both = jnp.asarray(np.concatenate([cand, u1]))
        vals = np.asarray(log_ei_at(theta, *data, both, float(ys.min())))
    assert vals[-1] >= vals[:-1].max()
    # a batch: the EI member first, then the Thompson draws of the batch without it
    u4 = ei.propose(SPACE5, 0, 3, bo.init_theta(5), X, y, 4)[0]
    ts = BayesOpt(fit_steps=20, acquisition="thompson", greedy=0)
    u3 = ts.propose(SPACE5, 0, 3, bo.init_theta(5), X, y, 4)[0]
    np.testing.assert_array_equal(u4[0], u1[0])
    assert len({tuple(r) for r in u4}) == 4
    assert sum(any(np.array_equal(r, q) for q in u3) for r in u4[1:]) >= 2


def test_default_acquisition_is_ei_for_one_member_up_to_six_dims_and_thompson_else():
    cases = ((1, 5), (1, 6), (1, 8), (2, 5), (16, 5))
    assert [bo.auto_acquisition(P, D) for P, D in cases] == ["ei", "ei"] + ["thompson"] * 3
    X, y = _data()
    a = BayesOpt(fit_steps=20).propose(SPACE5, 0, 1, bo.init_theta(5), X, y, 4)[0]
    b = BayesOpt(fit_steps=20, acquisition="thompson").propose(
        SPACE5, 0, 1, bo.init_theta(5), X, y, 4
    )[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("value", ["ucb", 1, ""])
def test_acquisition_names_its_field(value):
    with pytest.raises(ValueError, match="strategy.acquisition: one of thompson, ei"):
        BayesOpt(acquisition=value)


SPACE4 = Space({f"x{i}": Float(-2.0, 2.0) for i in range(4)})


@pytest.mark.parametrize("size, steps", [(1, 8), (16, 3)])
def test_resumed_study_with_the_new_defaults_proposes_what_the_uninterrupted_one_would(size, steps):
    """One member in 4 dims (log EI with the log warp) and 16 members (the input warp in the
    GP's parameters): the state packed and restored after every update proposes the same."""

    def curve(hp, ids, t, rng):
        return sum((np.asarray(hp[k]) - 0.5) ** 2 for k in SPACE4.searched)

    def run(strategy):
        return simulate(strategy, SPACE4, curve, steps=steps, segment_steps=1, size=size, seed=2)

    plain, resumed = run(BayesOpt(fit_steps=30)), run(Resumed(lambda: BayesOpt(fit_steps=30)))
    for a, b in zip(
        generations_of(plain, SPACE4, steps), generations_of(resumed, SPACE4, steps), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    gens = [e for e in plain.events if e["kind"] == "generation"]
    assert gens[-1].get("proposal") != "sobol"  # the GP proposed by the end
