"""Implicit-function-theorem hypergradients with Neumann-series or conjugate-gradient
inverse-Hessian-vector products.

Lorraine, Vicol & Duvenaud 2020, "Optimizing Millions of Hyperparameters by Implicit
Differentiation", arXiv:1911.02590 (Neumann series); the CG variant as in Pedregosa 2016,
"Hyperparameter optimization with approximate gradient", arXiv:1602.02355, and Rajeswaran et al.
2019 (iMAML), arXiv:1909.04630.

At a minimiser ``w*(lam)`` of the training loss ``L_T(w, lam)``, ``grad_w L_T(w*, lam) = 0``, so

    dL_V/dlam = dL_V/dlam|_direct - (d^2 L_T / dlam dw) H^{-1} dL_V/dw,   H = d^2 L_T / dw^2.

``H^{-1} v`` is never formed: products ``H u`` are forward-over-reverse (``jax.jvp`` of
``jax.grad``), and the solve is either

* ``neumann``: ``H^{-1} ~ alpha * sum_{j=0}^{J} (I - alpha H)^j`` (Lorraine 2020, Alg. 3),
  convergent for ``0 < alpha < 2 / lambda_max(H)``; or
* ``cg``: conjugate gradients (``jax.scipy.sparse.linalg.cg``; ``H`` symmetric positive
  definite at a strict minimum), exact up to its tolerance.

The mixed term is one vector-Jacobian product: ``-grad_lam <u, grad_w L_T(w*, lam)>`` with
``u = H^{-1} v`` held constant. Parameters and hyperparameters are any pytrees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax

METHODS = ("cg", "neumann")


def hvp(loss: Callable[[Any], jax.Array], w: Any, v: Any) -> Any:
    """Hessian-vector product ``H(w) v`` of a scalar ``loss(w)`` (forward over reverse)."""
    return jax.jvp(jax.grad(loss), (w,), (v,))[1]


def neumann_inverse_hvp(
    loss: Callable[[Any], jax.Array], w: Any, v: Any, *, terms: int, alpha: float
) -> Any:
    """``alpha * sum_{j=0}^{terms-1} (I - alpha H)^j v`` (``lax.fori_loop``)."""

    def body(_, carry):
        cur, acc = carry
        cur = jax.tree.map(lambda c, h: c - alpha * h, cur, hvp(loss, w, cur))
        return cur, jax.tree.map(jnp.add, acc, cur)

    _, acc = jax.lax.fori_loop(0, terms - 1, body, (v, v))
    return jax.tree.map(lambda a: alpha * a, acc)


def cg_inverse_hvp(
    loss: Callable[[Any], jax.Array], w: Any, v: Any, *, maxiter: int, tol: float = 1e-10
) -> Any:
    """``H^{-1} v`` by conjugate gradients (``jax.scipy.sparse.linalg.cg``)."""
    u, _ = jax.scipy.sparse.linalg.cg(lambda x: hvp(loss, w, x), v, tol=tol, maxiter=maxiter)
    return u


def hypergradient(
    train_loss: Callable[[Any, Any], jax.Array],
    val_loss: Callable[[Any, Any], jax.Array],
    w: Any,
    lam: Any,
    *,
    method: str = "cg",
    iters: int = 100,
    alpha: float = 1e-2,
    tol: float = 1e-10,
) -> tuple[Any, jax.Array]:
    """Implicit hypergradient of ``val_loss(w*(lam), lam)`` at an (approximate) minimiser
    ``w`` of ``train_loss(., lam)``.

    Args:
      train_loss, val_loss: ``(w, lam) -> scalar``.
      w: the inner solution (its quality bounds the hypergradient's).
      lam: hyperparameters (pytree).
      method: ``cg`` or ``neumann``.
      iters: CG iterations or Neumann terms.
      alpha: Neumann step (below ``2 / lambda_max(H)``).
      tol: CG tolerance.

    Returns:
      ``(grad_lam, val_loss)``.

    Raises:
      ValueError: for an unknown ``method`` (naming ``strategy.method``).
    """
    if method not in METHODS:
        raise ValueError(f"strategy.method: unknown {method!r} (choose from {', '.join(METHODS)})")
    val, (v_w, direct) = jax.value_and_grad(val_loss, argnums=(0, 1))(w, lam)
    loss_w = lambda w_: train_loss(w_, lam)
    if method == "cg":
        u = cg_inverse_hvp(loss_w, w, v_w, maxiter=iters, tol=tol)
    else:
        u = neumann_inverse_hvp(loss_w, w, v_w, terms=iters, alpha=alpha)
    u = jax.lax.stop_gradient(u)
    mixed = jax.grad(lambda lam_: optax.tree.vdot(u, jax.grad(train_loss)(w, lam_)))(lam)
    return jax.tree.map(lambda d, m: d - m, direct, mixed), val


def max_eigenvalue(loss: Callable[[Any], jax.Array], w: Any, *, iters: int = 20) -> jax.Array:
    """Largest Hessian eigenvalue of ``loss`` at ``w`` by power iteration on HVPs (to choose
    the Neumann step ``alpha < 2 / lambda_max``)."""
    flat, unravel = jax.flatten_util.ravel_pytree(w)
    v0 = jnp.ones_like(flat) / jnp.sqrt(flat.size)

    def body(_, v):
        hv = jax.flatten_util.ravel_pytree(hvp(loss, w, unravel(v)))[0]
        return hv / jnp.linalg.norm(hv)

    v = jax.lax.fori_loop(0, iters, body, v0)
    return jnp.vdot(v, jax.flatten_util.ravel_pytree(hvp(loss, w, unravel(v)))[0])
