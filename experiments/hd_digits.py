"""Reproduction: online hypergradient descent on logistic regression (Baydin, Cornish, Martinez
Rubio, Schmidt & Wood 2018, "Online Learning Rate Adaptation with Hypergradient Descent",
arXiv:1703.04782, Sec. 5.1), on scikit-learn's bundled digits (1797 8x8 images, 10 classes;
pixels scaled to [0, 1]; 80/20 train/test split with a fixed seed).

Multinomial logistic regression (64 x 10 weights and 10 biases, zero-initialised) trained with
minibatches of 128 for ``STEPS`` steps by a population over initial learning rates ``alpha_0 in
{1e-4, 1e-3, 1e-2, 1e-1, 1}`` for each of SGD, SGD-HD, Adam and Adam-HD. Every optimizer is
the package's own (:func:`jaxhpo.optim.make_optimizer` with ``sgd``, ``sgd_hd``, ``adam``,
``adam_hd`` and the ``constant`` schedule), its per-member ``lr`` and ``hd_beta`` set in the
state: one ``jax.vmap`` over the five members and one ``lax.scan`` over the steps per optimizer.
The final loss is the full training set's cross-entropy after the last step.

beta (``hd_beta``): the paper used 1e-3 (SGD-HD) and 1e-7 (Adam-HD) on MNIST, where a step sees
gradients of 7850 parameters; here the SGD-HD rate must climb five decades in a few hundred
steps of a 650-parameter problem with gradients of norm ~0.1-1, so beta is scaled up:
:data:`BETA` = {sgd_hd: 0.1, adam_hd: 1e-3}.

Claim (from an independent numpy run): HD's final loss is far less sensitive to alpha_0 — for
every alpha_0 <= 1e-2, SGD-HD's final loss is <= 0.5x SGD's; over alpha_0 in [1e-4, 1e-1] the
ratio max/min of final loss is <= 3 for SGD-HD and >= 5 for SGD. Adam and Adam-HD are reported.

Usage: ``jaxhpo run experiments/hd_digits.py [--steps 500] [--out DIR]``.
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

from jaxhpo import optim
from jaxhpo.hypergrad import current_lr
from jaxhpo.results import claim_status

ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
OPTIMIZERS = ("sgd", "sgd_hd", "adam", "adam_hd")
BETA = {"sgd_hd": 0.1, "adam_hd": 1e-3}
STEPS, BATCH = 500, 128


def digits(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    xt, xs, yt, ys = train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)
    return jnp.asarray(xt), jnp.asarray(yt), jnp.asarray(xs), jnp.asarray(ys)


def loss_fn(params, x, y):
    logits = x @ params["w"] + params["b"][None, :]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def run(name: str, steps: int = STEPS, alphas=ALPHAS, beta: float | None = None, seed: int = 0):
    """Final training loss, final adapted learning rate and the loss curve of every alpha_0."""
    xt, yt, _, _ = digits(seed)
    tx = optim.make_optimizer(name, "constant")
    P = len(alphas)
    hp = {"lr": jnp.asarray(alphas, jnp.float32)}
    if name.endswith("_hd"):
        hp["hd_beta"] = jnp.full((P,), BETA[name] if beta is None else beta, jnp.float32)
    params0 = {"w": jnp.zeros((64, 10)), "b": jnp.zeros((10,))}
    key = jax.random.key(seed)

    def member(h):
        state = optim.init_opt_state(tx, params0, h)

        def step(carry, t):
            params, state = carry
            idx = jax.random.choice(jax.random.fold_in(key, t), xt.shape[0], (BATCH,), False)
            g = jax.grad(loss_fn)(params, xt[idx], yt[idx])
            updates, state = tx.update(g, state, params)
            params = optax.apply_updates(params, updates)
            return (params, state), loss_fn(params, xt, yt)

        (params, state), curve = jax.lax.scan(step, (params0, state), jnp.arange(steps))
        alpha = current_lr(state) if name.endswith("_hd") else h["lr"]
        return curve[-1], alpha, curve

    final, alpha, curve = jax.jit(jax.vmap(member))(hp)
    return {"final": np.asarray(final), "alpha": np.asarray(alpha), "curve": np.asarray(curve)}


def summarise(runs) -> dict[str, dict[str, float]]:
    out = {}
    in_range = np.asarray([a <= 1e-1 for a in ALPHAS])
    for name, r in runs.items():
        f = r["final"]
        finite = f[in_range]
        out[name] = {
            **{f"final@{a:g}": float(v) for a, v in zip(ALPHAS, f, strict=True)},
            **{f"alpha_end@{a:g}": float(v) for a, v in zip(ALPHAS, r["alpha"], strict=True)},
            "spread_1e-4_1e-1": float(finite.max() / finite.min()),
        }
    return out


def check_claim(summary) -> None:
    sgd, hd = summary["sgd"], summary["sgd_hd"]
    for a in (1e-4, 1e-3, 1e-2):
        r = hd[f"final@{a:g}"] / sgd[f"final@{a:g}"]
        assert r <= 0.5, f"alpha_0={a:g}: SGD-HD/SGD final loss ratio {r:.3f} > 0.5"
    assert hd["spread_1e-4_1e-1"] <= 3, f"SGD-HD spread {hd['spread_1e-4_1e-1']:.2f} > 3"
    assert sgd["spread_1e-4_1e-1"] >= 5, f"SGD spread {sgd['spread_1e-4_1e-1']:.2f} < 5"


def plot(runs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3.5), sharey=True)
    for ax, (name, r) in zip(axes, runs.items(), strict=True):
        for a, c in zip(ALPHAS, r["curve"], strict=True):
            ax.semilogy(c, label=f"alpha0={a:g}")
        ax.set(title=name, xlabel="step")
    axes[0].set_ylabel("training loss")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--out", type=Path, default=Path("runs/hd_digits"))
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps: must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    runs = {name: run(name, args.steps) for name in OPTIMIZERS}
    summary = summarise(runs)
    for name, s in summary.items():
        finals = " ".join(f"{s[f'final@{a:g}']:.4f}" for a in ALPHAS)
        print(
            f"{name:8s} final loss over alpha0 {ALPHAS}: {finals}; spread "
            f"{s['spread_1e-4_1e-1']:.2f}"
        )
    print(f"({time.perf_counter() - t:.1f}s, beta {BETA})")
    (args.out / "results.json").write_text(json.dumps({"beta": BETA, **summary}, indent=2))
    plot(runs, args.out / "hd_digits.png")
    return claim_status(check_claim, summary, args.out)


if __name__ == "__main__":
    sys.exit(main())
