"""Implicit hypergradients (jaxhpo.hypergrad.implicit) against the closed-form ridge solution
with one weight decay per feature."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhpo.hypergrad import implicit


def _ridge(d=12, n=80, nv=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.linspace(0.5, 2.0, d)[None, :]
    w_true = rng.normal(size=d)
    y = X @ w_true + 0.5 * rng.normal(size=n)
    Xv = rng.normal(size=(nv, d)) * np.linspace(0.5, 2.0, d)[None, :]
    yv = Xv @ w_true + 0.5 * rng.normal(size=nv)
    lam = rng.normal(size=d)  # log weight decay per feature
    return X, y, Xv, yv, lam


def _exact(X, y, Xv, yv, lam):
    """numpy: w* = (X'X + diag(e^lam))^{-1} X'y; dLv/dlam_j = -(H^{-1} gv)_j e^lam_j w*_j."""
    D = np.exp(lam)
    H = X.T @ X + np.diag(D)
    w = np.linalg.solve(H, X.T @ y)
    gv = Xv.T @ (Xv @ w - yv)
    return w, -np.linalg.solve(H, gv) * D * w, H


def _losses(X, y, Xv, yv):
    def train(w, lam):
        r = X @ w - y
        return 0.5 * r @ r + 0.5 * jnp.sum(jnp.exp(lam) * w**2)

    def val(w, lam):
        r = Xv @ w - yv
        return 0.5 * r @ r

    return train, val


def test_cg_matches_closed_form_ridge_hypergradient():
    with jax.enable_x64(True):
        X, y, Xv, yv, lam = _ridge()
        w, exact, _ = _exact(X, y, Xv, yv, lam)
        train, val = _losses(*map(jnp.asarray, (X, y, Xv, yv)))
        g, v = implicit.hypergradient(
            train, val, jnp.asarray(w), jnp.asarray(lam), method="cg", iters=100, tol=1e-14
        )
        rel = np.linalg.norm(np.asarray(g) - exact) / np.linalg.norm(exact)
        assert rel < 1e-5, rel
        assert float(v) == pytest.approx(0.5 * np.sum((Xv @ w - yv) ** 2))


def test_neumann_approaches_closed_form_with_enough_terms():
    with jax.enable_x64(True):
        X, y, Xv, yv, lam = _ridge()
        w, exact, H = _exact(X, y, Xv, yv, lam)
        train, val = _losses(*map(jnp.asarray, (X, y, Xv, yv)))
        alpha = 1.0 / np.linalg.eigvalsh(H).max()  # a power iteration would do; exact here
        cos = []
        for terms in (5, 50, 500):
            g, _ = implicit.hypergradient(
                train,
                val,
                jnp.asarray(w),
                jnp.asarray(lam),
                method="neumann",
                iters=terms,
                alpha=alpha,
            )
            g = np.asarray(g)
            cos.append(g @ exact / np.linalg.norm(g) / np.linalg.norm(exact))
        assert cos[-1] >= 0.99, cos
        assert cos[0] < cos[-1]  # more terms, closer


def test_hvp_is_the_hessian_product_and_unknown_method_raises():
    with jax.enable_x64(True):
        X, y, Xv, yv, lam = _ridge(d=5)
        _, _, H = _exact(X, y, Xv, yv, lam)
        train, val = _losses(*map(jnp.asarray, (X, y, Xv, yv)))
        v = np.arange(5.0)
        hv = implicit.hvp(lambda w: train(w, jnp.asarray(lam)), jnp.zeros(5), jnp.asarray(v))
        np.testing.assert_allclose(np.asarray(hv), H @ v, rtol=1e-10)
    with pytest.raises(ValueError, match="strategy.method"):
        implicit.hypergradient(train, val, jnp.zeros(5), jnp.zeros(5), method="lbfgs")
