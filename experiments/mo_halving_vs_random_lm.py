"""Multi-objective successive halving vs multi-objective random search on the LM task:
validation loss against parameter count (issue 27's real study).

Claim (the multi-objective form of successive halving's argument, Schmucker et al. 2021,
"Multi-objective asynchronous successive halving", arXiv:2106.12639): promoting members by
non-dominated rank reaches the Pareto front of a random search of the same member-steps with
fewer member-steps, because it spends most of them on the configurations that look best early.

Setup (per seed): the ``lm-random`` preset's byte-level Transformer LM, with depth (1-3 layers)
and width (``d_model`` 32 or 64) searched in shape buckets (``population.structure=buckets``)
beside the learning rate and the preset's warmup and weight decay; ``strategy.objectives =
{loss: min, params: min}`` (``params``: the member's parameters, measured by the framework,
exact); ``train.steps = R`` (120), evaluations every ``--segment-steps`` (10).

* Successive halving: ``--size`` (27) members, ``eta`` 3, first rung at ``--min-steps`` (10),
  promotion by non-dominated rank and crowding; its budget ``B`` is the member-steps it trained.
* Random search: ``floor(B / R)`` members trained for all R steps (at most ``B`` member-steps).

Score: the hypervolume of every feasible evaluation so far (loss, params; one reference point for
both runs of a seed: the worst finite value over both plus a tenth of the range), against
member-steps. Reported per seed: random search's final hypervolume, halving's, and the
member-steps halving needed to reach random search's final hypervolume (``null``: never).

Measured with the defaults (5 seeds, ``--seeds 5``, 2 CPU cores shared with other work;
``scripts/results/mo_halving_vs_random_lm.json``): halving trained 27 configurations for 660
member-steps per seed, random search 5 for 600. Halving reached random search's final
hypervolume at 510, 660, 450, 360 and 540 member-steps: 0.85, 1.10, 0.75, 0.60 and 0.90 of
random search's (median 0.85; fewer on 4 seeds of 5), and ended at or above it on all 5. On
seed 1 both fronts are the same members at the end (random search's 5 configurations are
halving's first 5, from the same weights).

Output: ``OUT/results.json`` and the run directories under ``OUT/runs/``.

Usage::

    python experiments/mo_halving_vs_random_lm.py [--seeds 3] [--steps 120] [--size 27] \\
        [--out runs/mo_halving_vs_random_lm] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

OBJECTIVES = "strategy.objectives={loss: min, params: min}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from jaxhpo.results import add_override_args

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=120, help="R: steps of a full run")
    p.add_argument("--segment-steps", type=int, default=10)
    p.add_argument("--min-steps", type=int, default=10, help="halving's first rung")
    p.add_argument("--size", type=int, default=27, help="halving's members")
    p.add_argument("--eta", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("runs/mo_halving_vs_random_lm"))
    p.add_argument(
        "--rescore", action="store_true", help="score OUT/results.json's runs again, run the rest"
    )
    add_override_args(p, "applied to both runs")
    args = p.parse_args(argv)
    for name in ("seeds", "steps", "segment_steps", "min_steps", "size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if args.eta < 2:
        p.error(f"--eta: must be >= 2, got {args.eta}")
    return args


def _config(name: str, seed: int, args: argparse.Namespace, extra: list[str]):
    from jaxhpo.cli import load_config

    return load_config(
        "lm-random",
        [
            f"name={name}-s{seed}",
            f"seed={seed}",
            f"train.steps={args.steps}",
            f"train.segment_steps={args.segment_steps}",
            "train.checkpoint_every=0",
            "model.num_layers=3",
            "population.structure=buckets",
            "space.depth=int(1, 3)",
            "space.d_model=[32, 64]",
            "space.lr=loguniform(1e-3, 3e-2)",
            "space.warmup_steps=int(0, 20)",
            "space.dropout=0.0",
            OBJECTIVES,
            f"out_dir={args.out / 'runs'}",
            *extra,
            *args.overrides,
        ],
    )


def _study(cfg) -> tuple[Path, dict]:
    from jaxhpo.experiment import run

    t0 = time.perf_counter()
    res = run(cfg, quiet=True)
    info = json.loads((res.run_dir / "run.json").read_text())
    return res.run_dir, {
        "member_steps": int(info["member_steps"]),
        "wall_s": time.perf_counter() - t0,
    }


def curves(run_dirs: list[Path]) -> list:
    """Each run's hypervolume curve against member-steps, with one reference point for all."""
    from jaxhpo.objectives import Front, parse_objectives
    from jaxhpo.reporting.front import hypervolume_curve
    from jaxhpo.results import read_metrics

    front = Front(parse_objectives({"loss": "min", "params": "min"}), ())
    tables = [read_metrics(d) for d in run_dirs]
    F = np.concatenate([front.matrix(t)[0] for t in tables])
    v = np.zeros(len(F))
    ref = front.reference(F, v)
    return [hypervolume_curve(front, t, ref) for t in tables], ref


def one_seed(seed: int, args: argparse.Namespace) -> dict:
    halving_extra = [
        "strategy.name=halving",
        f"strategy.eta={args.eta}",
        f"strategy.min_steps={args.min_steps}",
        f"population.size={args.size}",
    ]
    h_dir, h = _study(_config("mo-halving", seed, args, halving_extra))
    size = max(1, h["member_steps"] // args.steps)
    r_dir, r = _study(
        _config("mo-random", seed, args, ["strategy.name=random", f"population.size={size}"])
    )
    return score(seed, h_dir, h, r_dir, r, args.size, size)


def score(seed: int, h_dir: Path, h: dict, r_dir: Path, r: dict, h_size: int, size: int) -> dict:
    """One seed's figures from its two run directories."""
    (hc, rc), ref = curves([h_dir, r_dir])
    target = float(rc["hypervolume"].iloc[-1])
    ours = float(hc["hypervolume"].iloc[-1])
    budget = float(rc["member_steps"].iloc[-1])
    reached = hc[hc["hypervolume"] >= target]
    at = float(reached["member_steps"].iloc[0]) if len(reached) else None
    return {
        "seed": seed,
        "reference": ref.tolist(),
        "halving": {**h, "members": h_size, "final_hypervolume": ours, "run_dir": str(h_dir)},
        "random": {**r, "members": size, "final_hypervolume": target, "run_dir": str(r_dir)},
        "halving_member_steps_to_random_front": at,
        # member-steps as the hypervolume curves count them (the same accounting for both)
        "fraction_of_random_member_steps": None if at is None else at / budget,
        "curves": {"halving": hc.to_dict("list"), "random": rc.to_dict("list")},
    }  # fmt: skip


def rescore(out: Path) -> list[dict]:
    """Every seed of ``out/results.json`` scored again from its run directories."""
    keep = ("member_steps", "wall_s")
    rows = []
    for x in json.loads((out / "results.json").read_text())["seeds"]:
        h, r = x["halving"], x["random"]
        rows.append(
            score(x["seed"], Path(h["run_dir"]), {k: h[k] for k in keep}, Path(r["run_dir"]),
                  {k: r[k] for k in keep}, h["members"], r["members"])
        )  # fmt: skip
    return rows


def summarise(rows: list[dict]) -> dict:
    fractions = [x["fraction_of_random_member_steps"] for x in rows]
    return {
        "seeds": len(rows),
        "reached_in": sum(f is not None for f in fractions),
        "median_fraction": float(np.median([np.inf if f is None else f for f in fractions])),
        "halving_ahead_at_the_end": sum(
            x["halving"]["final_hypervolume"] >= x["random"]["final_hypervolume"] for x in rows
        ),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = rescore(args.out) if args.rescore else []

    def write() -> dict:
        summary = summarise(rows)
        doc = {"summary": summary, "seeds": rows}
        (args.out / "results.json").write_text(json.dumps(doc, indent=1))
        return summary

    summary = write()
    while len(rows) < args.seeds:  # results.json after every seed
        rows.append(one_seed(len(rows), args))
        summary = write()
    for r in rows:
        print(
            f"seed {r['seed']}: random {r['random']['members']} members, "
            f"{r['random']['member_steps']} member-steps, hypervolume "
            f"{r['random']['final_hypervolume']:.4g}; halving {r['halving']['member_steps']} "
            f"member-steps, {r['halving']['final_hypervolume']:.4g}; reached random's front at "
            f"{r['halving_member_steps_to_random_front']}",
            flush=True,
        )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
