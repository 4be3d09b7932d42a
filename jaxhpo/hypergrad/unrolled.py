"""Unrolled (truncated) hypergradients through ``lax.scan`` with rematerialisation.

Maclaurin, Duvenaud & Adams 2015, "Gradient-based Hyperparameter Optimization through
Reversible Learning", arXiv:1502.03492; truncated windows as in learned_optimization's
``TruncatedGrad`` (Metz et al.) and Shaban, Cheng, Hatch & Boots 2019, "Truncated
Back-propagation for Bilevel Optimization", arXiv:1810.10667.

For ONE member: from a training state ``carry``, take ``K`` inner steps with hyperparameters
``hp = from_unconstrained(z)`` and differentiate the validation loss at the end with respect to
``z``::

    L_val(z) = val_fn(scan(step_fn(., hp(z), t), carry, t = 0..K-1), hp(z))

``z`` holds continuous hyperparameters in unconstrained coordinates (:data:`COORDINATES`):
``log`` for positive scales (learning rate, weight decay, eps, decay steps), ``softplus`` for
non-negative step counts (warmup), ``logit`` for values in (0, 1) (b1, b2, momentum, dropout,
label smoothing, min_lr_ratio). An optimizer's and a schedule's coordinates, and which of their
hyperparameters may be differentiated, come from their table entries (:mod:`jaxhpo.optim`).
The start state is a constant of the window (truncation): a long run is a sequence of windows,
each followed by one outer optax step on ``z``.

Memory. Reverse mode through a scan keeps, per step, the carry (parameters and optimizer state)
and the step's residuals (activations). ``remat=True`` wraps the step in ``jax.checkpoint``: only
the carries are kept and each step's activations are recomputed in the backward pass.
``chunk=c`` also checkpoints whole chunks of ``c`` steps (a scan of remat'd scans), so only
``K / c`` carries plus the ``c`` of one chunk are live: ``O(sqrt K)`` carries with ``c ~ sqrt
K``. ``scripts/bench_hypergrad_memory.py`` measures this with XLA's compiled memory analysis.

The population form is :func:`make_window`: the window for one member, ``jax.vmap``-ed, with an
outer optax optimizer whose state is per member.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxhpo.optim.optimizers import OPTIMIZER_TABLE
from jaxhpo.optim.table import TableView, coordinates, differentiable

Array = jax.Array

#: The unconstrained coordinate of each task hyperparameter that can be differentiated. The
#: optimizer's and the schedule's are their table entries' (:func:`jaxhpo.optim.table.coordinates`).
TASK_COORDINATES: dict[str, str] = {
    "dropout": "logit",
    "attn_dropout": "logit",
    "label_smoothing": "logit",
}


#: Unconstrained coordinate of each hyperparameter that can be differentiated: the optimizer
#: tables' (read when looked up, so a new table entry's names are differentiable at once), then
#: :data:`TASK_COORDINATES`.
COORDINATES: Mapping[str, str] = TableView(
    lambda: {**coordinates(), **TASK_COORDINATES}, "Name -> unconstrained coordinate."
)

#: Values are clipped into [FLOOR, ...) (log, softplus) or [FLOOR, 1 - FLOOR] (logit) before the
#: map, so 0 (no weight decay, no dropout) has a finite coordinate. The gradient there is small:
#: a hyperparameter at exactly 0 moves slowly.
FLOOR = 1e-6


def check_names(
    names,
    where: str = "strategy.hypergrad_names",
    *,
    optimizer: str | None = None,
    schedule: str | tuple[str, ...] = "constant",
) -> None:
    """Raises ``ValueError`` naming ``where`` for a name without an unconstrained coordinate.

    With a built-in ``optimizer`` (and its ``schedule``), also for a name its table entry does
    not let hypergradients differentiate (e.g. lion's ``b1``, which reaches the update only
    through a sign).
    """
    known = dict(COORDINATES)
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(
            f"{where}: {', '.join(map(repr, bad))} cannot be differentiated "
            f"(continuous hyperparameters: {', '.join(known)})"
        )
    if optimizer is None or optimizer not in OPTIMIZER_TABLE:
        return
    allowed = (*differentiable(optimizer, schedule), *TASK_COORDINATES)
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(
            f"{where}: {', '.join(map(repr, bad))} cannot be differentiated under optimizer "
            f"'{optimizer}' (its differentiable hyperparameters: {', '.join(allowed)})"
        )


def _to_log(x):
    return jnp.log(jnp.maximum(x, FLOOR))


def _to_softplus(x):  # inverse softplus: log(expm1(x))
    x = jnp.maximum(x, FLOOR)
    return x + jnp.log(-jnp.expm1(-x))


def _to_logit(x):
    x = jnp.clip(x, FLOOR, 1.0 - FLOOR)
    return jnp.log(x) - jnp.log1p(-x)


#: Each coordinate kind's map to unconstrained values and back (smooth in the coordinate).
_MAPS: dict[str, tuple[Callable, Callable]] = {
    "log": (_to_log, jnp.exp),
    "softplus": (_to_softplus, jax.nn.softplus),
    "logit": (_to_logit, jax.nn.sigmoid),
}


def _mapped(values: Mapping[str, Any], direction: int) -> dict[str, Array]:
    check_names(values, "hparams")
    kinds = dict(COORDINATES)
    return {
        k: _MAPS.get(kinds[k], _MAPS["logit"])[direction](jnp.asarray(v, float))
        for k, v in values.items()
    }


def to_unconstrained(hp: Mapping[str, Any]) -> dict[str, Array]:
    """Maps hyperparameter values to unconstrained coordinates (see :data:`COORDINATES`)."""
    return _mapped(hp, 0)


def from_unconstrained(z: Mapping[str, Any]) -> dict[str, Array]:
    """Inverse of :func:`to_unconstrained` (smooth in ``z``)."""
    return _mapped(z, 1)


def unroll(
    step_fn: Callable[[Any, Mapping[str, Array], Array], tuple[Any, Array]],
    carry: Any,
    hp: Mapping[str, Array],
    num_steps: int,
    *,
    remat: bool = True,
    chunk: int = 0,
) -> tuple[Any, Array]:
    """``num_steps`` steps of ``step_fn(carry, hp, t) -> (carry, loss)`` as a ``lax.scan``.

    Args:
      remat: ``jax.checkpoint`` each step (keep carries, recompute activations).
      chunk: if > 0 (and dividing ``num_steps``), also checkpoint chunks of this many steps.

    Returns:
      The final carry and the per-step losses ``[num_steps]``.
    """

    def body(c, t):
        return step_fn(c, hp, t)

    if remat:
        body = jax.checkpoint(body)
    ts = jnp.arange(num_steps, dtype=jnp.int32)
    if chunk and chunk < num_steps:
        if num_steps % chunk:
            raise ValueError(
                f"strategy.chunk: {chunk} does not divide the window of {num_steps} steps"
            )

        @jax.checkpoint
        def block(c, ts_c):
            return jax.lax.scan(body, c, ts_c)

        carry, losses = jax.lax.scan(block, carry, ts.reshape(num_steps // chunk, chunk))
        return carry, losses.reshape(num_steps)
    return jax.lax.scan(body, carry, ts)


def hypergradient(
    step_fn: Callable[[Any, Mapping[str, Array], Array], tuple[Any, Array]],
    val_fn: Callable[[Any, Mapping[str, Array]], Array],
    carry: Any,
    z: Mapping[str, Array],
    fixed: Mapping[str, Array] | None = None,
    *,
    num_steps: int,
    remat: bool = True,
    chunk: int = 0,
) -> tuple[Array, dict[str, Array], Any, Array]:
    """Validation loss after ``num_steps`` inner steps and its gradient w.r.t. ``z``.

    Args:
      step_fn: ``(carry, hp, t) -> (carry, train_loss)``, one inner step of ONE member; ``hp``
        holds ``fixed`` and the decoded ``z``.
      val_fn: ``(carry, hp) -> scalar`` validation loss at the end of the window.
      carry: the start state (a constant: the window is a truncation).
      z: name -> unconstrained coordinate (scalars) of the differentiated hyperparameters.
      fixed: other hyperparameters (values, not differentiated).
      num_steps, remat, chunk: as :func:`unroll`.

    Returns:
      ``(val_loss, grad_z, final_carry, train_losses [num_steps])``.
    """
    fixed = dict(fixed or {})

    def objective(z):
        hp = {**fixed, **from_unconstrained(z)}
        c, losses = unroll(step_fn, carry, hp, num_steps, remat=remat, chunk=chunk)
        return val_fn(c, hp), (c, losses)

    (val, (final, losses)), grad = jax.value_and_grad(objective, has_aux=True)(dict(z))
    return val, grad, final, losses


def make_window(
    step_fn: Callable,
    val_fn: Callable,
    outer: optax.GradientTransformation,
    *,
    num_steps: int,
    remat: bool = True,
    chunk: int = 0,
) -> Callable:
    """One truncation window of online unrolled hypergradients for a POPULATION.

    Returns a jitted ``window(carry_P, z_P, outer_state_P, fixed_P) -> (carry_P, z_P,
    outer_state_P, val_P, grad_P, losses_PxK)``: every member trains ``num_steps`` steps
    differentiably from its own state, then takes one ``outer`` step on its own ``z`` with its
    own outer state (``jax.vmap(outer.init)(z_P)`` builds it). Written for one member,
    ``vmap``-ped over the leading axis. A non-finite hypergradient leaves that member's ``z``
    and outer state unchanged.
    """

    def one(carry, z, outer_state, fixed):
        val, g, final, losses = hypergradient(
            step_fn, val_fn, carry, z, fixed, num_steps=num_steps, remat=remat, chunk=chunk
        )
        updates, new_outer = outer.update(g, outer_state, z)
        new_z = optax.apply_updates(z, updates)
        ok = jnp.isfinite(val) & jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(g)])
        )
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        return final, keep(new_z, z), keep(new_outer, outer_state), val, g, losses

    return jax.jit(jax.vmap(one))
