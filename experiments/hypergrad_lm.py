"""Online unrolled hypergradients tune the learning-rate schedule of a Transformer LM population.

The ``lm-hypergrad`` setting (byte-level LM on the Python stdlib sources, AdamW with linear
warmup and cosine decay): a population of members starts from random ``lr``, ``warmup_steps`` and
``min_lr_ratio`` (the schedule) and trains for ``--steps`` steps. Two runs from the *same*
initial hyperparameters and weights (same seed, same first population):

* ``hypergrad``: the ``hypergrad`` strategy; every segment of ``--window`` steps is a truncation
  window whose validation loss is differentiated with respect to log lr, softplus warmup and
  logit min_lr_ratio, and one Adam step (lr ``--outer-lr``) moves them;
* ``fixed``: the same population with its hyperparameters fixed (``random`` strategy).

Both take the same number of optimizer steps per member (equal training steps); the wall time of
each is reported too, since a differentiable window costs more than a plain one. The discovered
schedules (lr against step) are plotted from the lineage events.

Claim checked: the hypergradient population's mean final validation loss is lower than the fixed
population's, and its best member is at least as good.

Usage: ``jaxhpo run experiments/hypergrad_lm.py [--steps 300] [--size 4] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from jaxhpo.cli import load_config
from jaxhpo.experiment import run
from jaxhpo.optim import schedule_value
from jaxhpo.results import claim_status, read_events, read_metrics

SPACE = {
    "lr": "loguniform(1e-4, 1e-2)",
    "warmup_steps": "uniform(0.0, 100.0)",
    "min_lr_ratio": "uniform(0.01, 0.99)",
}


def overrides(args, strategy: str, out: Path) -> list[str]:
    o = [
        f"strategy.name={strategy}",
        f"population.size={args.size}",
        f"train.steps={args.steps}",
        f"train.segment_steps={args.window}",
        "train.checkpoint_every=0",
        f"out_dir={out}",
        f"name=hypergrad_lm-{strategy}",
        "space={}",
    ]
    if strategy == "hypergrad":  # the fixed arm (random search) has no outer learning rate
        o.append(f"strategy.outer_lr={args.outer_lr}")
    o += [f"space.{k}={v}" for k, v in SPACE.items()]
    return o + list(args.extra)


def one(args, name: str) -> dict:
    strategy = {"hypergrad": "hypergrad", "fixed": "random"}[name]
    cfg = load_config("lm-hypergrad", overrides(args, strategy, args.out))
    t = time.perf_counter()
    res = run(cfg, quiet=True)
    wall = time.perf_counter() - t
    members = res.members
    return {
        "run_dir": str(res.run_dir),
        "wall_s": wall,
        "val_loss": members["val_loss"].tolist(),
        "test_loss": members["test_loss"].tolist(),
        "mean_val_loss": float(members["val_loss"].mean()),
        "best_val_loss": float(members["val_loss"].min()),
        "final_hparams": members[list(SPACE)].to_dict("records"),
    }


def check_claim(results) -> None:
    h, f = results["hypergrad"], results["fixed"]
    assert h["mean_val_loss"] < f["mean_val_loss"], (
        f"hypergrad mean val loss {h['mean_val_loss']:.4f} >= fixed {f['mean_val_loss']:.4f}"
    )
    assert h["best_val_loss"] <= f["best_val_loss"] + 1e-3, (
        f"hypergrad best {h['best_val_loss']:.4f} worse than fixed best {f['best_val_loss']:.4f}"
    )


def plot(results, steps: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, style in (("hypergrad", "-"), ("fixed", "--")):
        run_dir = Path(results[name]["run_dir"])
        table = read_metrics(run_dir)
        for m, rows in table.groupby("member"):
            rows = rows.sort_values("step")
            b.plot(rows["step"], rows["val_loss"], style, label=f"{name} {m}")
            # lr actually used in each segment: the schedule at the hyperparameters logged
            xs, ys = [], []
            for (_, r0), (_, r1) in zip(rows.iloc[:-1].iterrows(), rows.iloc[1:].iterrows()):
                s = np.arange(r0["step"], r1["step"])
                hp = {k: r0[k] for k in ("lr", "warmup_steps", "min_lr_ratio")}
                hp["decay_steps"] = steps
                xs.append(s)
                ys.append(np.asarray(schedule_value("warmup_cosine", s, hp)))
            if xs:
                a.semilogy(np.concatenate(xs), np.concatenate(ys), style, label=f"{name} {m}")
        del run_dir
    a.set(xlabel="step", ylabel="learning rate", title="schedules (solid: hypergradient)")
    b.set(xlabel="step", ylabel="validation loss")
    b.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--size", type=int, default=4)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--outer-lr", type=float, default=0.1)
    p.add_argument("--out", type=Path, default=Path("runs/hypergrad_lm"))
    p.add_argument("extra", nargs="*", help="more key=value overrides (e.g. model.d_model=32)")
    args = p.parse_args(argv)
    if args.steps < args.window or args.window < 1:
        p.error("--steps must be >= --window >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {name: one(args, name) for name in ("hypergrad", "fixed")}
    results["hypergrad"]["lineage_events"] = sum(
        e["kind"] == "explore" for e in read_events(results["hypergrad"]["run_dir"])
    )
    for name, r in results.items():
        print(
            f"{name:9s} mean val {r['mean_val_loss']:.4f} best {r['best_val_loss']:.4f} "
            f"({r['wall_s']:.0f}s)",
            flush=True,
        )
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, args.steps, args.out / "hypergrad_lm.png")
    return claim_status(check_claim, results, args.out)


if __name__ == "__main__":
    sys.exit(main())
