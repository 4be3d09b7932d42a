"""Reproduction: PBT's toy problem (Jaderberg et al. 2017, arXiv:1711.09846, Fig. 2).

Maximise ``Q(theta) = 1.2 - (theta_0^2 + theta_1^2)`` using only the surrogate
``Qhat(theta | h) = 1.2 - (h_0 theta_0^2 + h_1 theta_1^2)``. Two members start at
``theta = (0.9, 0.9)`` with ``h = (1, 0)`` and ``h = (0, 1)``; SGD (gradient ascent on ``Qhat``)
with lr 0.05; ready every 4 steps; 100 steps; explore adds Gaussian noise of std 0.1 to ``h``
(clipped to ``h >= 0``) for every member at every ready step; ties are broken
deterministically. Four variants:

* ``pbt``: exploit (truncation: the worse member copies the better) + explore;
* ``explore``: explore only (every member perturbs its ``h``, nothing is copied);
* ``exploit``: exploit only;
* ``grid``: neither (fixed ``h``).

Claim (from an independent numpy run): grid and exploit-only both end at exactly
``1.2 - 0.81 = 0.39``; PBT's final Q is >= 1.15 on every seed and >= 1.19 on >= 90% of seeds;
explore-only lies in between.

This runs the package's own code — the ``pbt_toy`` task, the population trainer and the
:class:`~jaxhpo.strategies.PBT` strategy — in the compiled loop (``train.compiled``), with the
seeds as one more ``vmap`` axis: each variant is one program for all seeds. ``jaxhpo run
pbt-toy`` runs one seed of the same setup through the ordinary run loop.

Usage: ``python experiments/pbt_toy.py [--seeds 20] [--out DIR]`` (or ``jaxhpo run
experiments/pbt_toy.py ...``).
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

from jaxhpo.population import Population
from jaxhpo.results import claim_status
from jaxhpo.run.compiled import compiled_program
from jaxhpo.space import Space
from jaxhpo.strategies import PBT
from jaxhpo.tasks import ToyQuadraticTask

STEPS, READY, LR, SIGMA_H, H_MAX = 100, 4, 0.05, 0.1, 10.0
VARIANTS = {
    "pbt": {"exploit": "truncation", "explore": "perturb"},
    "explore": {"exploit": "none", "explore": "perturb"},
    "exploit": {"exploit": "truncation", "explore": "none"},
    "grid": {"exploit": "none", "explore": "none"},
}


def run_variant(variant: str, seeds: int, explore_all: bool = True) -> dict[str, np.ndarray]:
    """Q of both members after every ready interval, for every seed: float [seeds, S, 2]; and
    the h trajectory [seeds, S, 2, 2]. ``explore_all=False``: only the member that copied
    explores (PBT's Algorithm 1), reported beside the claim."""
    space = Space.from_config({"h0": "uniform(0.0, 10.0)", "h1": "uniform(0.0, 10.0)"})
    strategy = PBT(
        ready_steps=READY,
        fraction=0.5,
        perturb="gaussian",
        sigma=SIGMA_H / H_MAX,  # unit coordinates of [0, H_MAX]
        points=[{"h0": 1.0, "h1": 0.0}, {"h0": 0.0, "h1": 1.0}],
        explore_all=explore_all,
        **VARIANTS[variant],
    )
    task = ToyQuadraticTask()
    population = Population(task, "sgd", "constant", mode="vmap", devices=1, searched=("h0", "h1"))
    state0, cols = strategy.init(0, space, 2)
    hp = population.full_hparams({**cols, "lr": LR}, 2)
    program = compiled_program(
        population,
        strategy.device_update,
        num_segments=STEPS // READY,
        segment_steps=READY,
        total_steps=STEPS,
        objective="q",
        maximize=True,
        searched=("h0", "h1"),
    )

    def one_seed(seed):
        key = jax.random.key(seed)
        pop = population._init(key, jnp.arange(2, dtype=jnp.int32), hp)
        state = state0.replace(key=jax.random.key_data(key))  # a PBTState per seed
        _, _, outs = program(pop, task.train_data, task.splits.val, state)
        h = jnp.stack([outs["hparams"]["h0"], outs["hparams"]["h1"]], axis=-1)
        return outs["metrics"]["q"], h

    q, h = jax.jit(jax.vmap(one_seed))(jnp.arange(seeds, dtype=jnp.uint32))
    return {"q": np.asarray(q), "h": np.asarray(h)}


def summarise(runs: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    out = {}
    for name, r in runs.items():
        final = r["q"][:, -1, :].max(axis=1)  # the better member's final Q, per seed
        out[name] = {
            "min": float(final.min()),
            "median": float(np.median(final)),
            "max": float(final.max()),
            "frac_ge_1.19": float(np.mean(final >= 1.19)),
            "frac_ge_1.15": float(np.mean(final >= 1.15)),
        }
    return out


def check_claim(summary: dict[str, dict[str, float]]) -> None:
    """Raises AssertionError, with the numbers, when the paper's toy claim does not hold."""
    fixed = 1.2 - 0.81
    for name in ("grid", "exploit"):
        assert (
            abs(summary[name]["max"] - fixed) < 1e-4 and abs(summary[name]["min"] - fixed) < 1e-4
        ), f"{name} should end at 0.39 on every seed: {summary[name]}"
    pbt = summary["pbt"]
    assert pbt["min"] >= 1.15, f"PBT's worst seed is below 1.15: {pbt}"
    assert pbt["frac_ge_1.19"] >= 0.9, f"PBT reaches 1.19 on fewer than 90% of seeds: {pbt}"
    exp = summary["explore"]["median"]
    assert fixed < exp < pbt["median"], (
        f"explore-only's median {exp:.4f} should lie between 0.39 and PBT's {pbt['median']:.4f}"
    )


def plot(runs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axh) = plt.subplots(1, 2, figsize=(11, 4))
    steps = np.arange(1, STEPS // READY + 1) * READY
    for name, r in runs.items():
        best = r["q"].max(axis=2)  # [seeds, S]
        med = np.median(best, axis=0)
        ax.plot(steps, med, label=name)
        ax.fill_between(steps, best.min(0), best.max(0), alpha=0.15)
    ax.set(xlabel="step", ylabel="Q (better member)", title="PBT toy: median and range over seeds")
    ax.axhline(1.2, color="k", lw=0.5, ls="--")
    ax.legend()
    h = runs["pbt"]["h"][0]  # seed 0: [S, member, 2]
    for m in range(2):
        axh.plot(h[:, m, 0], h[:, m, 1], marker=".", label=f"member {m}")
    axh.set(xlabel="h0", ylabel="h1", title="PBT seed 0: hyperparameter trajectories")
    axh.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("runs/pbt_toy"))
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds: must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name in VARIANTS:
        t = time.perf_counter()
        runs[name] = run_variant(name, args.seeds)
        final = runs[name]["q"][:, -1].max(axis=1)
        print(
            f"{name:8s} {args.seeds} seeds in {time.perf_counter() - t:.1f}s: final Q median "
            f"{np.median(final):.4f}, min {final.min():.4f}",
            flush=True,
        )
    runs_copied = run_variant("pbt", args.seeds, explore_all=False)
    summary = summarise(runs)
    summary["pbt_explore_copied_only"] = summarise({"x": runs_copied})["x"]
    print(f"pbt, only the copied member explores: {summary['pbt_explore_copied_only']}")
    (args.out / "results.json").write_text(json.dumps({"seeds": args.seeds, **summary}, indent=2))
    plot(runs, args.out / "pbt_toy.png")
    return claim_status(check_claim, summary, args.out)


if __name__ == "__main__":
    sys.exit(main())
