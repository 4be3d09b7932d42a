"""Reproduction: µTransfer (Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466, Fig. 1).

Under the standard parametrization (SP) the best Adam learning rate of a network shifts as the
network gets wider; under µP it stays put, so it can be tuned on a narrow network and
transferred to a wide one. Here: an MLP (16 inputs, four hidden ReLU layers of width n, i.e.
three n x n hidden matrices, 10 classes) fits the labels of a fixed random teacher network
(8192 examples, batches of 256) with Adam at a constant learning rate for 300 steps, at widths
n = 64, 128, 256, 512 (µP base width 64). For each width and parametrization
the learning-rate sweep (log2 lr on a half-octave grid) and the seeds are ONE population:
``jaxhpo.population.Population`` trains every (lr, seed) member in one compiled program, and
the per-layer µP learning rates reach Adam through :func:`jaxhpo.optim.make_optimizer` (the
parameters' ``mup_role`` metadata, :mod:`jaxhpo.models.mup`). The figure of merit is the
training loss averaged over the last 20% of the steps, averaged over seeds, as in the paper.

Claim (from an independent numpy run): the best log2 learning rate drifts by >= 2 octaves from
width 64 to width 512 under SP, and by <= 1 octave under µP.

Coordinate check (the paper's Fig. 5 / the ``mup`` package's ``get_coord_data``): after a few
Adam steps at a fixed learning rate, the root-mean-square of the change of the network's output
logits grows with width under SP (claim: by at least sqrt(width ratio), half of SP's Θ(width)
on a log scale) and stays flat under µP (within x0.67..x1.5). It is checked on this MLP and on
the package's Transformer (``model.parametrization=mup``), at widths 64 to 512.

Usage: ``jaxhpo run experiments/mutransfer.py [--steps 300] [--seeds 3] [--out DIR]``; the run
directory gets ``results.json``, ``sweep.csv`` (one row per width x parametrization x lr),
``best_lr.md`` (the table) and ``mutransfer.png`` (loss vs log2 lr per width, both
parametrizations). ``--quick`` runs a reduced sweep (the default test's version).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxhpo import optim
from jaxhpo.models import Transformer, TransformerConfig, mup
from jaxhpo.population import Population
from jaxhpo.results import claim_status
from jaxhpo.tasks.base import Splits, Task, data_key, sample_rows, split_rng

BASE_WIDTH = 64
WIDTHS = (64, 128, 256, 512)
D_IN, DEPTH, NUM_CLASSES, TEACHER_WIDTH = 16, 4, 10, 64
PARAMETRIZATIONS = ("standard", "mup")
#: Claim thresholds (octaves of the best learning rate, width 64 -> 512).
SP_MIN_DRIFT, MUP_MAX_DRIFT = 2.0, 1.0
#: The reduced sweep of ``--quick`` and the default test (widths 64 -> 256, where SP's best lr
#: moves by 2 octaves and µP's by <= 1 in this setup).
QUICK = {"widths": (64, 256), "seeds": 2, "steps": 150, "batch_size": 128}


# -- the MLP --------------------------------------------------------------------------------
class MLP(nnx.Module):
    """``d_in -> width -> ... -> width -> NUM_CLASSES`` (``depth`` ReLU layers), SP or µP.

    Both parametrizations draw every matrix from LeCun normal (variance ``1/fan_in``, PyTorch's
    convention). µP (the ``mup`` package's MLP): the input layer and biases are vector-like (lr
    x1), the hidden matrix is matrix-like (Adam lr x ``1/width_mult``), the readout is
    zero-initialised with output multiplier ``1/width_mult`` (lr x1).
    """

    def __init__(self, width: int, parametrization: str, *, depth: int, d_in: int, rngs: nnx.Rngs):
        self.width_mult = width / BASE_WIDTH
        self.is_mup = parametrization == "mup"
        init = mup.kernel_init("truncated_normal", 1.0, self.width_mult)

        def linear(d_in, d_out, role, kernel_init=init):
            return nnx.Linear(
                d_in,
                d_out,
                kernel_init=kernel_init,
                rngs=rngs,
                kernel_metadata=mup.metadata(role, self.width_mult, self.is_mup),
                bias_metadata=mup.metadata("vector", self.width_mult, self.is_mup),
            )

        self.inp = linear(d_in, width, "vector")
        self.hidden = nnx.List([linear(width, width, "hidden") for _ in range(depth - 1)])
        readout_init = mup.zeros_init if self.is_mup else init
        self.out = linear(width, NUM_CLASSES, "readout", readout_init)

    def __call__(self, x_BxI: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.inp(x_BxI))
        for layer in self.hidden:
            h = jax.nn.relu(layer(h))
        logits = self.out(h)
        return logits / self.width_mult if self.is_mup else logits


class TeacherTask(Task):
    """Classify ``x ~ N(0, I_32)`` by the argmax of a fixed random two-layer tanh teacher.

    The training batch at a step is drawn (with replacement) from ``num_train`` fixed examples,
    from the data seed and the step, like every jaxhpo task.
    """

    name = "mutransfer_mlp"
    hparam_names = ()
    hparam_defaults: Mapping[str, float] = {}
    hparam_domains: Mapping[str, tuple[float, float, bool]] = {}

    def __init__(
        self,
        width: int,
        parametrization: str,
        *,
        depth: int = DEPTH,
        d_in: int = D_IN,
        batch_size: int = 256,
        num_train: int = 8192,
        data_seed: int = 0,
    ):
        self.width, self.parametrization, self.batch_size = width, parametrization, batch_size
        self.depth, self.d_in = depth, d_in
        self.model_config = None
        rng = split_rng(data_seed, "teacher")
        w1 = rng.normal(size=(d_in, TEACHER_WIDTH)) / math.sqrt(d_in)
        w2 = rng.normal(size=(TEACHER_WIDTH, NUM_CLASSES)) / math.sqrt(TEACHER_WIDTH)
        x = rng.normal(size=(num_train + 1024, d_in)).astype(np.float32)
        y = np.argmax(np.tanh(x @ w1) @ w2, axis=1).astype(np.int32)
        self.train_data = {
            "x": jnp.asarray(x[:num_train]),
            "targets": jnp.asarray(y[:num_train]),
            "key": data_key(data_seed),
        }
        val = {
            "x": jnp.asarray(x[num_train:]).reshape(4, 256, d_in),
            "targets": jnp.asarray(y[num_train:]).reshape(4, 256),
            "weights": jnp.ones((4, 256), jnp.float32),
        }
        self.splits = Splits(val=val, test=val)

    def make_model(self, key: jax.Array, hp=None) -> MLP:
        del hp
        return MLP(
            self.width, self.parametrization, depth=self.depth, d_in=self.d_in, rngs=nnx.Rngs(key)
        )

    def train_batch(self, train_data, step):
        batch = sample_rows(train_data, step, self.batch_size, ("x", "targets"))
        return {**batch, "weights": jnp.ones((self.batch_size,), jnp.float32)}

    def _logits(self, model, batch, hp, key):
        del hp, key
        return model(batch["x"])

    def loss(self, model, batch, hp, key):
        logits = self._logits(model, batch, hp, key)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()
        return ce, {"train_loss": jax.lax.stop_gradient(ce)}


# -- the sweep ------------------------------------------------------------------------------
def log2_lr_grid(low: float = -12.0, high: float = -5.0, step: float = 0.5) -> np.ndarray:
    """The swept log2 learning rates."""
    return np.arange(low, high + step / 2, step)


QUICK["grid"] = log2_lr_grid(-12.0, -5.0, 1.0)


def sweep(
    width: int,
    parametrization: str,
    log2_lrs: Sequence[float],
    *,
    seeds: int,
    steps: int,
    seed: int = 0,
    mode: str = "auto",
    **task_args,
) -> np.ndarray:
    """Trains every (lr, seed) member of one width as one population.

    Returns:
        The training loss averaged over the last 20% of the steps, float [num_lrs, seeds];
        inf where a member diverged.
    """
    task = TeacherTask(width, parametrization, **task_args)
    population = Population(task, "adam", "constant", mode=mode, devices=1)
    lrs = np.repeat(2.0 ** np.asarray(log2_lrs, np.float64), seeds)
    ids = np.arange(len(lrs))  # member i: lr index i // seeds, its own init key
    pop = population.init(jax.random.key(seed), ids, {"lr": lrs})
    pop, losses_PxK = population.train_segment(pop, task.train_data, steps)
    losses = np.asarray(losses_PxK)
    tail = losses[:, -max(steps // 5, 1) :].mean(axis=1)
    tail = np.where(np.isfinite(tail) & ~np.asarray(pop.diverged), tail, np.inf)
    return tail.reshape(len(log2_lrs), seeds)


def best_log2_lr(log2_lrs: Sequence[float], loss_LxS: np.ndarray) -> float:
    """The log2 learning rate of the lowest seed-averaged loss (diverged seeds count as inf)."""
    mean = loss_LxS.mean(axis=1)
    return float(np.asarray(log2_lrs)[int(np.argmin(mean))])


def run_sweeps(widths, log2_lrs, *, seeds, steps, verbose=True, **task_args) -> dict[str, Any]:
    """Every width x parametrization; returns losses and best log2 lr per pair."""
    out: dict[str, Any] = {"widths": list(widths), "log2_lrs": [float(x) for x in log2_lrs]}
    for p in PARAMETRIZATIONS:
        out[p] = {}
        for w in widths:
            t = time.perf_counter()
            loss = sweep(w, p, log2_lrs, seeds=seeds, steps=steps, **task_args)
            best = best_log2_lr(log2_lrs, loss)
            out[p][w] = {"loss": loss, "best_log2_lr": best}
            if verbose:
                print(
                    f"{p:8s} width {w:4d}: best log2 lr {best:+.1f} (loss "
                    f"{loss.mean(1).min():.4f}), {len(loss) * seeds} members x {steps} steps in "
                    f"{time.perf_counter() - t:.1f}s",
                    flush=True,
                )
    return out


def drift(result: Mapping[str, Any], parametrization: str) -> float:
    """|best log2 lr at the widest width - at the narrowest| in octaves."""
    widths = result["widths"]
    r = result[parametrization]
    return abs(r[widths[-1]]["best_log2_lr"] - r[widths[0]]["best_log2_lr"])


# -- coordinate check -----------------------------------------------------------------------
def coord_check_mlp(widths, parametrization: str, *, steps: int = 5, lr: float = 2.0**-10):
    """RMS of the change of the MLP's logits on a fixed batch after ``steps`` Adam steps, per
    width (mean over 3 seeds). The change, not the logits: SP's readout starts at O(1) logits,
    and µP is about the size of the *update* (Θ(1) under µP, Θ(width) under SP)."""
    out = []
    for w in widths:
        task = TeacherTask(w, parametrization)
        population = Population(task, "adam", "constant", mode="vmap", devices=1)
        pop0 = population.init(jax.random.key(0), np.arange(3), {"lr": np.full(3, lr)})
        pop, _ = population.train_segment(pop0, task.train_data, steps)
        x = task.splits.val["x"][0]

        def rms(params, params0, x=x, graphdef=population.graphdef):
            delta = nnx.merge(graphdef, params)(x) - nnx.merge(graphdef, params0)(x)
            return jnp.sqrt(jnp.mean(delta**2))

        out.append(float(jnp.mean(jax.vmap(rms)(pop.params, pop0.params))))
    return np.asarray(out)


def transformer_config(width: int, parametrization: str) -> TransformerConfig:
    """The coordinate check's Transformer: 2 layers, 4 heads, d_ff = 4 width, untied."""
    return TransformerConfig(
        vocab_size=64,
        max_len=16,
        num_layers=2,
        num_heads=4,
        d_model=width,
        d_ff=4 * width,
        tie_embeddings=False,
        parametrization=parametrization,
        mup_base_width=BASE_WIDTH,
    )


def coord_check_transformer(
    widths, parametrization: str, *, steps: int = 5, lr: float = 1e-2, seed: int = 0
) -> np.ndarray:
    """RMS of the change of the Transformer's logits after ``steps`` Adam steps on a fixed batch
    of random tokens, per width. The optimizer is :func:`jaxhpo.optim.make_optimizer` (so µP's
    per-layer learning rates come from the parameters' metadata)."""
    tokens = jax.random.randint(jax.random.key(seed + 1), (8, 16), 0, 64)
    out = []
    for w in widths:
        model = Transformer(transformer_config(w, parametrization), rngs=nnx.Rngs(seed))
        graphdef, params = nnx.split(model)
        tx = optim.make_optimizer("adam", "constant")
        opt_state = optim.init_opt_state(tx, params, {"lr": lr})

        def loss_fn(p, graphdef=graphdef):
            logits = nnx.merge(graphdef, p)(tokens)
            return optax.softmax_cross_entropy_with_integer_labels(
                logits[:, :-1], tokens[:, 1:]
            ).mean()

        def step(carry, _, tx=tx, loss_fn=loss_fn):
            p, s = carry
            g = jax.grad(loss_fn)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (params1, _), _ = jax.jit(lambda c, step=step: jax.lax.scan(step, c, None, steps))(
            (params, opt_state)
        )
        delta = nnx.merge(graphdef, params1)(tokens) - nnx.merge(graphdef, params)(tokens)
        out.append(float(jnp.sqrt(jnp.mean(delta**2))))
    return np.asarray(out)


def coord_growth(rms: np.ndarray) -> float:
    """Ratio of the widest width's RMS logit change to the narrowest's."""
    return float(rms[-1] / rms[0])


# -- claim, table, plot ---------------------------------------------------------------------
def check_claim(result: Mapping[str, Any], coords: Mapping[str, np.ndarray] | None = None):
    """Raises AssertionError, with the numbers, when a claim does not hold."""
    sp, mu = drift(result, "standard"), drift(result, "mup")
    assert sp >= SP_MIN_DRIFT, f"SP's best log2 lr drifted by {sp} octaves (< {SP_MIN_DRIFT})"
    assert mu <= MUP_MAX_DRIFT, f"µP's best log2 lr drifted by {mu} octaves (> {MUP_MAX_DRIFT})"
    ratio = result["widths"][-1] / result["widths"][0]
    for name, rms in (coords or {}).items():
        growth = coord_growth(rms)
        if name.endswith("standard"):
            assert growth >= math.sqrt(ratio), (
                f"{name}: SP logit change grew only x{growth:.2f} over x{ratio:g} width ({rms})"
            )
        else:
            assert 0.67 <= growth <= 1.5, f"{name}: µP logit change grew x{growth:.2f} ({rms})"


def table(result: Mapping[str, Any]) -> str:
    widths = result["widths"]
    lines = [
        "| parametrization | " + " | ".join(f"width {w}" for w in widths) + " | drift (octaves) |",
        "|---" * (len(widths) + 2) + "|",
    ]
    for p in PARAMETRIZATIONS:
        best = [f"{result[p][w]['best_log2_lr']:+.1f}" for w in widths]
        lines.append(f"| {p} | " + " | ".join(best) + f" | {drift(result, p):.1f} |")
    return "\n".join(lines)


def write_csv(result: Mapping[str, Any], path: Path) -> None:
    import pandas as pd

    rows = []
    for p in PARAMETRIZATIONS:
        for w in result["widths"]:
            loss = result[p][w]["loss"]
            for i, x in enumerate(result["log2_lrs"]):
                row = {"parametrization": p, "width": w, "log2_lr": x}
                row.update({f"loss_seed{s}": float(v) for s, v in enumerate(loss[i])})
                row["loss_mean"] = float(loss[i].mean())
                rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)


def plot(result: Mapping[str, Any], coords: Mapping[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    x = np.asarray(result["log2_lrs"])
    for ax, p in zip(axes[:2], PARAMETRIZATIONS, strict=True):
        for w in result["widths"]:
            mean = result[p][w]["loss"].mean(axis=1)
            ax.plot(x, np.where(np.isfinite(mean), mean, np.nan), marker=".", label=f"width {w}")
            ax.axvline(result[p][w]["best_log2_lr"], lw=0.5, color=ax.lines[-1].get_color())
        finite = np.concatenate([result[p][w]["loss"].ravel() for w in result["widths"]])
        finite = finite[np.isfinite(finite)]
        if finite.size:
            ax.set_ylim(finite.min() * 0.9, min(finite.max(), 2.5))
        ax.set(xlabel="log2 learning rate", ylabel="training loss", title=f"{p}: loss vs lr")
        ax.legend()
    ax = axes[2]
    for name, rms in coords.items():
        ax.plot(result["widths"][: len(rms)], rms, marker="o", label=name)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="width",
        ylabel="RMS of the logits' change after 5 Adam steps",
        title="coordinate check",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _jsonable(result: Mapping[str, Any]) -> dict[str, Any]:
    out = {"widths": result["widths"], "log2_lrs": result["log2_lrs"]}
    for p in PARAMETRIZATIONS:
        out[p] = {
            str(w): {
                "best_log2_lr": v["best_log2_lr"],
                "loss_mean": [float(m) if np.isfinite(m) else None for m in v["loss"].mean(1)],
            }
            for w, v in result[p].items()
        }
        out[f"{p}_drift_octaves"] = drift(result, p)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    p.add_argument(
        "--quick",
        action="store_true",
        help="the default test's reduced sweep: widths 64 and 256, 1-octave grid, 2 seeds, "
        "150 steps of batch 128",
    )
    p.add_argument("--out", type=Path, default=Path("runs/mutransfer"))
    args = p.parse_args(argv)
    if args.steps < 5 or args.seeds < 1:
        p.error("--steps must be >= 5 and --seeds >= 1")
    if any(w < 1 for w in args.widths) or len(args.widths) < 2:
        p.error("--widths: at least two positive widths")
    grid, task_args = log2_lr_grid(), {}
    if args.quick:
        grid, args.seeds, args.steps = QUICK["grid"], QUICK["seeds"], QUICK["steps"]
        task_args = {"batch_size": QUICK["batch_size"]}
        if args.widths == list(WIDTHS):
            args.widths = list(QUICK["widths"])
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = run_sweeps(args.widths, grid, seeds=args.seeds, steps=args.steps, **task_args)
    coords = {}
    for param in PARAMETRIZATIONS:
        coords[f"mlp {param}"] = coord_check_mlp(args.widths, param)
        coords[f"transformer {param}"] = coord_check_transformer(args.widths, param)
    for name, rms in coords.items():
        growth = coord_growth(rms)
        print(f"coord check {name:22s}: RMS logit change {np.round(rms, 4)} (x{growth:.2f})")
    write_csv(result, args.out / "sweep.csv")
    md = table(result)
    (args.out / "best_lr.md").write_text(md + "\n")
    info = {
        **_jsonable(result),
        "steps": args.steps,
        "seeds": args.seeds,
        "coord_check": {k: v.tolist() for k, v in coords.items()},
        "seconds": time.perf_counter() - t0,
    }
    (args.out / "results.json").write_text(json.dumps(info, indent=2))
    plot(result, coords, args.out / "mutransfer.png")
    print(md)
    return claim_status(check_claim, result, coords, args.out)


if __name__ == "__main__":
    sys.exit(main())
