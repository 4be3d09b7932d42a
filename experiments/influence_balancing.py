"""Reproduction: influence balancing (Vicol, Metz & Sohl-Dickstein 2021, arXiv:2112.13835,
Sec. 5.1; the task from Tallec & Ollivier 2017, arXiv:1702.05043), set up as the official
google-research ``persistent_es/influence_balancing.py``.

A linear system of ``n = 23`` states, ``s <- A s + theta * v`` with ``A = 0.5 I + 0.5
superdiagonal``, ``v`` = ten +1 then thirteen -1, ``s0 = ones``; the loss after each
truncation of ``K`` steps is ``0.5 (s[0] - 1)^2``. ``theta`` starts at 0.5 and is trained for
3000 outer iterations with SGD (lr 1e-4); after every iteration it is evaluated by a 500-step
unroll from ``s0``. The optimum is ``theta = -1/6`` (``s*[0] = -6 theta``). Short truncations
see only ``theta``'s direct effect on ``s[0]`` (+1) and not its influence through the other
states (-6 in total), so they push ``theta`` the wrong way.

* ``pes``: persistent ES, K = 1, sigma = 0.1, 1000 antithetic particles, each with its own
  state that never resets (evosax ``PersistentES`` through :mod:`jaxhpo.hypergrad.pes`);
* ``es``: truncated ES, the same but the perturbation accumulators reset every truncation;
* ``tbptt1`` / ``tbptt10``: truncated backpropagation through K = 1 / 10 steps
  (:func:`jaxhpo.hypergrad.unrolled.unroll` and ``jax.grad``), the state carried on.

Claim (from the paper and the official code): PES reaches ``|theta + 1/6| < 1e-3`` and an
evaluation loss ``< 1e-6``; truncated ES and truncated backprop (K = 1, 10) end with ``theta >
1`` and loss ``> 8``. Each estimator's 3000 iterations are one ``lax.scan``.

Usage: ``jaxhpo run experiments/influence_balancing.py [--iterations 3000] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhpo.hypergrad import pes, unrolled
from jaxhpo.results import claim_status

N_STATE, THETA0, SIGMA, PARTICLES, LR, EVAL_STEPS = 23, 0.5, 0.1, 1000, 1e-4, 500


def system():
    A = 0.5 * jnp.eye(N_STATE) + 0.5 * jnp.eye(N_STATE, k=1)
    v = jnp.concatenate([jnp.ones(10), -jnp.ones(N_STATE - 10)])
    return A, v


def inner_step(s, theta, A, v):
    return A @ s + theta * v


def unroll_loss(theta, s, K: int):
    """``K`` steps from ``s``; the loss at the end and the new state."""
    A, v = system()

    def step(c, hp, t):
        del t
        return inner_step(c, hp["theta"], A, v), 0.0

    s, _ = unrolled.unroll(step, s, {"theta": theta}, K, remat=False)
    return 0.5 * (s[0] - 1.0) ** 2, s


def evaluate(theta):
    return unroll_loss(theta, jnp.ones(N_STATE), EVAL_STEPS)[0]


def run_es(persistent: bool, iterations: int, seed: int = 3, particles: int = PARTICLES):
    es, params = pes.make_es(
        1, particles, sigma=SIGMA, optimizer=optax.sgd(LR), truncation=1, persistent=persistent
    )
    key = jax.random.key(seed)
    with jax.numpy_rank_promotion("allow"):
        state = es.init(jax.random.fold_in(key, iterations), jnp.full((1,), THETA0), params)

        def unroll_fn(theta, s):
            return unroll_loss(theta[0], s, 1)

        def body(carry, i):
            state, inner = carry
            state, inner, _, grad = pes.truncation_step(
                es, params, unroll_fn, jax.random.fold_in(key, i), state, inner
            )
            theta = state.mean[0]
            return (state, inner), (theta, evaluate(theta), grad[0])

        inner = jnp.ones((particles, N_STATE))
        _, (theta, loss, grad) = jax.jit(
            lambda s, x: jax.lax.scan(body, (s, x), jnp.arange(iterations))
        )(state, inner)
    return {"theta": np.asarray(theta), "loss": np.asarray(loss), "grad": np.asarray(grad)}


def run_tbptt(K: int, iterations: int):
    opt = optax.sgd(LR)

    def body(carry, _):
        theta, o, s = carry
        (_, s_new), g = jax.value_and_grad(lambda th: unroll_loss(th, s, K), has_aux=True)(theta)
        upd, o = opt.update(g, o, theta)
        theta = optax.apply_updates(theta, upd)
        return (theta, o, s_new), (theta, evaluate(theta), g)

    theta = jnp.asarray(THETA0)
    init = (theta, opt.init(theta), jnp.ones(N_STATE))
    _, (theta, loss, grad) = jax.jit(lambda c: jax.lax.scan(body, c, None, length=iterations))(init)
    return {"theta": np.asarray(theta), "loss": np.asarray(loss), "grad": np.asarray(grad)}


def run_all(iterations: int = 3000, particles: int = PARTICLES) -> dict[str, dict[str, np.ndarray]]:
    return {
        "pes": run_es(True, iterations, particles=particles),
        "es": run_es(False, iterations, particles=particles),
        "tbptt1": run_tbptt(1, iterations),
        "tbptt10": run_tbptt(10, iterations),
    }


def summarise(runs):
    return {
        k: {"theta": float(r["theta"][-1]), "loss": float(r["loss"][-1])} for k, r in runs.items()
    }


def check_claim(summary) -> None:
    p = summary["pes"]
    assert abs(p["theta"] + 1 / 6) < 1e-3, f"PES theta {p['theta']:.6f} is not within 1e-3 of -1/6"
    assert p["loss"] < 1e-6, f"PES loss {p['loss']:.3g} >= 1e-6"
    for k in ("es", "tbptt1", "tbptt10"):
        s = summary[k]
        assert s["theta"] > 1 and s["loss"] > 8, f"{k} should move the wrong way: {s}"


def plot(runs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for k, r in runs.items():
        a.plot(r["theta"], label=k)
        b.semilogy(r["loss"], label=k)
    a.axhline(-1 / 6, color="k", lw=0.5, ls="--")
    a.set(xlabel="iteration", ylabel="theta", title="influence balancing")
    b.set(xlabel="iteration", ylabel="loss (500-step unroll)")
    a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--out", type=Path, default=Path("runs/influence_balancing"))
    args = p.parse_args(argv)
    if args.iterations < 1:
        p.error("--iterations: must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    runs = run_all(args.iterations)
    summary = summarise(runs)
    for k, s in summary.items():
        print(f"{k:8s} theta {s['theta']:+.6f}  loss {s['loss']:.3e}")
    print(f"({time.perf_counter() - t:.1f}s)")
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    plot(runs, args.out / "influence_balancing.png")
    return claim_status(check_claim, summary, args.out)


if __name__ == "__main__":
    sys.exit(main())
