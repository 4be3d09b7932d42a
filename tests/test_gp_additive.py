"""The additive GP component (``strategy.kernel: additive``): its random Fourier features draw
prior functions with the kernel's covariance, and the Matern kernel alone is unchanged."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo.strategies import gp, gp_draws


def _theta(additive: bool):
    theta = {
        "log_amp": jnp.log(0.5),
        "log_ls": jnp.log(jnp.array([0.3, 0.5, 1.0])),
        "log_noise": jnp.log(1e-2),
    }
    extra = {"log_amp_add": jnp.log(1.5), "log_ls_add": jnp.log(jnp.array([0.2, 0.4, 2.0]))}
    return {**theta, **extra} if additive else theta


def test_additive_features_draw_the_kernels_covariance():
    theta = _theta(True)
    pts = jnp.array([[0.1, 0.2, 0.3], [0.3, 0.1, 0.5], [0.1, 0.9, 0.3]])
    with gp.x64():
        z = jnp.zeros(32)
        ds = gp_draws.make_draws(jax.random.key(0), theta, jnp.zeros((32, 3)), z, z, 4000, 256)
        f = jax.vmap(lambda d: gp_draws._prior_value(theta, d, pts))(ds)
        xm = gp._with_mask(pts, jnp.ones(3))
        K = np.asarray(gp._kernel(theta)(xm, xm))
    np.testing.assert_allclose(K[0, 0], 0.5**2 + 1.5**2)
    np.testing.assert_allclose(np.cov(np.asarray(f).T), K, atol=0.25)  # 4000 draws
    # the additive part is a mean over axes: points differing in one coordinate only stay
    # correlated through the other axes' shares
    assert K[0, 2] > 2.0 / 3.0 * 1.5**2


def test_matern_alone_is_unchanged_by_the_additive_code():
    theta = _theta(False)
    pts = jnp.array([[0.1, 0.2, 0.3], [0.3, 0.1, 0.5]])
    xm = gp._with_mask(pts, jnp.ones(2))
    r = float(jnp.sqrt(jnp.sum(((pts[0] - pts[1]) / jnp.exp(theta["log_ls"])) ** 2)))
    k = 0.25 * (1 + np.sqrt(5) * r + 5 * r**2 / 3) * np.exp(-np.sqrt(5) * r)
    np.testing.assert_allclose(np.asarray(gp._kernel(theta)(xm, xm))[0, 1], k, rtol=1e-5)
    assert set(gp.init_theta(3)) == {"log_amp", "log_ls", "log_noise"}
