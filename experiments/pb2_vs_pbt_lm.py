"""PB2 vs PBT on the Transformer LM task with a small population, at equal member-steps.

Claim (Parker-Holder, Nguyen & Roberts 2020, "Provably Efficient Online Hyperparameter
Optimization with Population-Based Bandits", NeurIPS 2020, arXiv:2002.02518): with a small
population (4 to 8 members) PB2, whose explore step is a batch GP bandit, finds a better model
than PBT, whose explore step is a random perturbation, at the same compute. Checked here, for
each population size: PB2's best final validation loss is lower than PBT's on the majority of
seeds and in the median over seeds; the median gap (PBT minus PB2, nats/byte) is reported.

Setup (per seed and population size): the ``lm-pbt`` preset (byte-level decoder Transformer on
the Python stdlib sources, 2 layers, d_model 64; AdamW with a constant schedule; 400 steps;
PBT over learning rate, weight decay and dropout, truncation exploit of the bottom quarter /
multiply-by-0.8-or-1.2 explore with resample probability 0.1, every 50 steps) with
``population.size`` set, and the very same configuration with ``strategy.name=pb2`` and PBT's
settings carried over (naming another strategy starts its settings afresh, so the script passes
each of them again). Same space, optimizer, schedule, population size, steps and ready interval,
hence the same member-steps (checked from each run's ``run.json``). Both draw their first
population with ``space.sample(seed, size)``, initialise member ``i`` from ``(seed, i)`` and
exploit with the same ranking and random numbers, so the two studies start from identical
members and the only difference is PB2's explore: once the GP has ``2 x (3 + 1) = 8``
observations (each member adds one per 50-step interval from the second on: from step 150 with
4 members, step 100 with 8), each member that copied a better one trains next with the
upper-confidence-bound maximiser of a time-varying GP on the improvement per step instead of
its parent's hyperparameters perturbed (before that, PB2 explores as PBT does).

Measured with the defaults (5 seeds, populations 4 and 8: 1,600 and 3,200 member-steps per
study, equal for PB2 and PBT on every seed, none diverged; 2 CPU cores shared with other
benchmarks; ``scripts/results/pb2_vs_pbt_lm.json``), best final validation loss (nats/byte),
seeds 0 / 1 / 2 / 3 / 4:

* population 4: PB2 2.5259 / 2.3442 / 2.5426 / 2.4106 / 2.4316, PBT 2.5354 / 2.3682 /
  2.5548 / 2.4078 / 2.4358. PB2 is lower on 4 of 5 seeds (seed 3 lost by 0.003: its best
  member is one no explore touched), median 2.4316 vs 2.4358, median gap +0.010.
* population 8: PB2 2.5011 / 2.3847 / 2.4107 / 2.3744 / 2.4103, PBT 2.5365 / 2.3682 /
  2.4633 / 2.4035 / 2.4282. PB2 is lower on 4 of 5 seeds (seed 1 lost by 0.017), median
  2.4103 vs 2.4282, median gap +0.029.

The claim holds at both sizes; the margins are small (0.004 to 0.053 nats/byte) and 5 seeds
few. PB2's best final member came from a GP pick on 4 of 5 seeds with 4 members (steps 250 to
350) and on every seed with 8. Each study took 28 to 54 s (PB2) and 28 to 42 s (PBT) with 4
members, 52 to 72 s and 54 to 56 s with 8; 15 min in all.

With the paper's targets (``strategy.normalise=all``: every improvement standardised together)
PB2 was lower on 0 of 5 seeds with 4 members (PB2 2.5482 / 2.3753 / 2.5548 / 2.4106 / 2.4377,
median 2.4377 vs 2.4358) and on 3 of 5 with 8 (2.5365 / 2.4123 / 2.4058 / 2.3744 / 2.3896,
median 2.4058 vs 2.4282). Diagnosis, from each run's explore decisions (``explore_summary``)
and a replay of its observations through the GP: a loss falls fastest early, so the GP's zero
prior mean (the mean improvement of the whole run) sat above every recent member's
improvement, and points far from the data scored higher than the members' own even with
``kappa = 0``. The picks jumped far from the member copied (median |log10(new lr / copied lr)|
0.74 against PBT's 0.10) and 31% of the new learning rates with 4 members lay within 5% of an
end of the range (1e-4 or 3e-2); the best final member had not taken a GP pick on 4 of 5 seeds.
The improvements less each step's mean (``normalise="step"``, now the default) take the
trend off: median move 0.22 with 4 members, 0.41 with 8, at a range end 20% and 11% of the
new learning rates (the counts include the explores before the GP, the same in both). Also
tried, and dropped, candidates only in a box around the copied point (``jaxhpo.strategies.pb2``'s
docstring has the figures).

Output: ``OUT/results.json`` (per size and seed: best final validation loss of each method,
the best member's test loss and hyperparameters, member-steps, wall time, best-so-far curves,
and every explore decision: step, member, the hyperparameters it had, those of the member it
copied and the new ones), ``OUT/summary.json`` (the same without curves, each explore as one
line of text), ``OUT/pb2_vs_pbt_lm.png`` ((a) best-so-far validation loss vs step, (b) the
learning rates each method's explore steps chose) and the run directories under ``OUT/runs/``.

Usage::

    jaxhpo run experiments/pb2_vs_pbt_lm.py [--seeds 5] [--steps 400] [--sizes 4 8] \\
        [--out runs/pb2_vs_pbt_lm] [--set model.d_model=32 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

PRESET = "lm-pbt"
OBJECTIVE = "val_loss"
METHODS = ("pb2", "pbt")
HPARAMS = ("lr", "weight_decay", "dropout")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from jaxhpo.results import add_override_args

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (first-seed, +1, ...)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=400, help="training steps per member")
    p.add_argument(
        "--sizes", type=int, nargs="+", default=[4, 8], help="population sizes (both methods)"
    )
    p.add_argument("--out", type=Path, default=Path("runs/pb2_vs_pbt_lm"))
    add_override_args(p, "applied to both runs")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds: must be >= 1, got {args.seeds}")
    if args.first_seed < 0:
        p.error(f"--first-seed: must be >= 0, got {args.first_seed}")
    if args.steps < 1:
        p.error(f"--steps: must be >= 1, got {args.steps}")
    for size in args.sizes:
        if size < 2:
            p.error(f"--sizes: PBT and PB2 need a population of >= 2, got {size}")
    if len(set(args.sizes)) != len(args.sizes):
        p.error(f"--sizes: each size once, got {args.sizes}")
    return args


def make_configs(seed: int, size: int, args: argparse.Namespace):
    """``(pb2, pbt)`` configs for one seed and size; identical except the strategy's name, PB2's
    own settings (their defaults) and the run's name."""
    from jaxhpo.cli import load_config

    common = [
        f"seed={seed}",
        f"train.steps={args.steps}",
        f"population.size={size}",
        f"out_dir={args.out / 'runs'}",
    ]
    pbt = load_config(PRESET, [*common, *args.overrides, f"name=pbt-p{size}-s{seed}"])
    # Naming another strategy drops the preset's strategy settings: pass PBT's, as resolved
    # (preset and overrides), again after the name, then the overrides once more.
    carried = [f"strategy.{k}={json.dumps(v)}" for k, v in pbt.strategy.options.items()]
    pb2 = load_config(
        PRESET,
        [
            *common,
            "strategy.name=pb2",
            f"strategy.metric={pbt.strategy.metric}",
            *carried,
            *args.overrides,
            f"name=pb2-p{size}-s{seed}",
        ],
    )
    pbt_opts, pb2_opts = pbt.strategy.options, pb2.strategy.options
    differ = [k for k in pbt_opts if pb2_opts.get(k) != pbt_opts[k]]
    if differ or pb2.strategy.name != "pb2":
        raise ValueError(f"strategy: PB2's settings differ from PBT's in {differ}")
    return pb2, pbt


def explores(run_dir: Path, space) -> list[dict]:
    """Every explore decision of a run: step, member, the hyperparameters it trained with
    before (``before``), those of the member it copied (``copied``; None when it did not copy),
    the ones it trains with next (``after``) and their unit coordinates in the space
    (``after_unit``: 0 and 1 are the ends of each range)."""
    from jaxhpo.results import read_events, read_metrics

    table = read_metrics(run_dir).set_index(["member", "step"])  # hparams trained up to step
    out = []
    for e in read_events(run_dir):
        if e.get("kind") not in ("exploit", "explore"):
            continue
        copied = e["kind"] == "exploit"
        step = int(e["step"])
        after = {k: float(e["after"][k]) for k in HPARAMS if k in e["after"]}
        unit = np.asarray(space.to_unit({k: [v] for k, v in e["after"].items()}))[0]
        out.append(
            {
                "step": step,
                "member": int(e["child"] if copied else e["member"]),
                "parent": int(e["parent"]) if copied else None,
                "before": {k: float(e["before"][k]) for k in HPARAMS if k in e["before"]},
                "copied": (
                    {k: float(table.loc[(int(e["parent"]), step), k]) for k in after}
                    if copied
                    else None
                ),
                "after": after,
                "after_unit": {
                    k: float(u) for k, u in zip(space.searched, unit, strict=True) if k in after
                },
            }
        )
    return out


def run_study(cfg) -> dict:
    """Runs one study; its best final member, budget, wall time, curve and explore steps."""
    from jaxhpo.experiment import run
    from jaxhpo.results import best_so_far, read_metrics
    from jaxhpo.space import Space

    t0 = time.perf_counter()
    res = run(cfg, quiet=True)
    wall = time.perf_counter() - t0
    info = json.loads((res.run_dir / "run.json").read_text())
    members = res.members
    ok = members[~members["diverged"].astype(bool) & np.isfinite(members[OBJECTIVE])]
    best = ok.loc[ok[OBJECTIVE].idxmin()] if not ok.empty else None
    steps, curve = best_so_far(read_metrics(res.run_dir), OBJECTIVE)
    hp = [c for c in HPARAMS if c in members]
    return {
        "run_dir": str(res.run_dir),
        "best_val_loss": float(best[OBJECTIVE]) if best is not None else float("nan"),
        "best_test_loss": float(best["test_loss"]) if best is not None else float("nan"),
        "best_member": int(best["member"]) if best is not None else None,
        "best_hparams": {k: float(best[k]) for k in hp} if best is not None else {},
        "final_lr": [float(v) for v in members["lr"]] if "lr" in members else [],
        "diverged_members": int(members["diverged"].astype(bool).sum()),
        "member_steps": int(info["member_steps"]),
        "planned_member_steps": int(cfg.population.size) * int(cfg.train.steps),
        "wall_s": round(wall, 2),
        "train_s": round(float(info["timings"]["train_s"]), 2),
        "curve_steps": steps,
        "curve_best_val_loss": curve,
        "explores": explores(res.run_dir, Space.from_config(cfg.space)),
    }


def run_seed(seed: int, size: int, args: argparse.Namespace) -> dict:
    configs = dict(zip(METHODS, make_configs(seed, size, args), strict=True))
    out: dict = {"seed": seed, "size": size}
    for name in METHODS:
        r = run_study(configs[name])
        out[name] = r
        print(
            f"size {size} seed {seed} {name}: best val loss {r['best_val_loss']:.4f} (test "
            f"{r['best_test_loss']:.4f}, lr {r['best_hparams'].get('lr', float('nan')):.2e}), "
            f"{r['member_steps']:,} member-steps, {r['diverged_members']} diverged, "
            f"{r['wall_s']:.1f}s",
            flush=True,
        )
    if out["pb2"]["member_steps"] != out["pbt"]["member_steps"]:
        print(
            f"size {size} seed {seed}: member-steps differ: PB2 {out['pb2']['member_steps']}, "
            f"PBT {out['pbt']['member_steps']}",
            flush=True,
        )
    out["gap"] = out["pbt"]["best_val_loss"] - out["pb2"]["best_val_loss"]
    return out


def explore_summary(per_seed: list[dict], method: str, edge: float = 0.05) -> dict:
    """What a method's explore steps chose: how far they moved the learning rate from the
    member copied (median ``|log10(new / copied)|``; PBT's factors 0.8 and 1.2 give 0.08 to
    0.1), the median new learning rate, the share of new values within ``edge`` (unit
    coordinates) of either end of each range, and the median learning rate of the best
    final members."""
    moves, new = [], []
    at_edge: dict[str, list[bool]] = {k: [] for k in HPARAMS}
    for s in per_seed:
        for e in s[method]["explores"]:
            if "lr" in e["after"]:
                new.append(e["after"]["lr"])
                if e["copied"] is not None and e["copied"].get("lr", 0) > 0:
                    moves.append(abs(np.log10(e["after"]["lr"] / e["copied"]["lr"])))
            for k, u in e["after_unit"].items():
                at_edge[k].append(bool(u <= edge or u >= 1 - edge))
    return {
        "explores": sum(len(s[method]["explores"]) for s in per_seed),
        "median_abs_log10_lr_vs_copied": float(np.median(moves)) if moves else float("nan"),
        "median_new_lr": float(np.median(new)) if new else float("nan"),
        "share_at_range_edge": {k: float(np.mean(v)) for k, v in at_edge.items() if v},
        "median_best_lr": float(
            np.median([s[method]["best_hparams"].get("lr", np.nan) for s in per_seed])
        ),
    }


def summarize_size(per_seed: list[dict]) -> dict:
    pb2 = [s["pb2"]["best_val_loss"] for s in per_seed]
    pbt = [s["pbt"]["best_val_loss"] for s in per_seed]
    gaps = [s["gap"] for s in per_seed]
    return {
        "seeds": [s["seed"] for s in per_seed],
        "pb2_best_val_loss": pb2,
        "pbt_best_val_loss": pbt,
        "pb2_median_best_val_loss": float(np.median(pb2)),
        "pbt_median_best_val_loss": float(np.median(pbt)),
        "gaps_pbt_minus_pb2": gaps,
        "median_gap": float(np.median(gaps)),
        "pb2_wins": int(sum(g > 0 for g in gaps)),
        "member_steps": {m: [s[m]["member_steps"] for s in per_seed] for m in METHODS},
        "equal_member_steps": all(
            s["pb2"]["member_steps"] == s["pbt"]["member_steps"] for s in per_seed
        ),
        "wall_s": {m: [s[m]["wall_s"] for s in per_seed] for m in METHODS},
        "explore_summary": {m: explore_summary(per_seed, m) for m in METHODS},
        "per_seed": per_seed,
    }


def summarize(by_size: dict[int, list[dict]], args: argparse.Namespace) -> dict:
    return {
        "claim": (
            "with a small population, at equal member-steps, PB2's best final validation loss "
            "is lower than PBT's on the majority of seeds and in the median over seeds"
        ),
        "settings": {
            "preset": PRESET,
            "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
            "steps": args.steps,
            "sizes": list(args.sizes),
            "overrides": list(args.overrides),
        },
        "sizes": {str(size): summarize_size(runs) for size, runs in by_size.items()},
    }


def check_size(size: str, r: dict) -> None:
    """Raises ``AssertionError`` with the measured numbers if the claim fails at this size."""
    n = len(r["pb2_best_val_loss"])
    numbers = (
        f"population {size}: best val loss per seed: PB2 "
        f"{[round(v, 4) for v in r['pb2_best_val_loss']]}, PBT "
        f"{[round(v, 4) for v in r['pbt_best_val_loss']]}; PB2 lower on {r['pb2_wins']}/{n} "
        f"seeds; median gap (PBT - PB2) {r['median_gap']:+.4f}; member-steps PB2 "
        f"{r['member_steps']['pb2']}, PBT {r['member_steps']['pbt']}"
    )
    assert r["equal_member_steps"], f"the two methods trained different budgets: {numbers}"
    assert r["pb2_wins"] * 2 > n, f"PB2 is not lower on the majority of seeds: {numbers}"
    assert r["median_gap"] > 0, f"PB2 is not lower in the median: {numbers}"
    assert r["pb2_median_best_val_loss"] < r["pbt_median_best_val_loss"], (
        f"PB2's median best is not below PBT's: {numbers}"
    )


def check_claim(results: dict) -> None:
    """Raises ``AssertionError`` naming every size where the claim does not hold."""
    failures = []
    for size, r in results["sizes"].items():
        try:
            check_size(size, r)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "; ".join(failures)


def _explore_text(e: dict) -> str:
    """``"STEP mMEMBER<-mPARENT lr COPIED->NEW"`` (``<-mPARENT`` and ``COPIED`` only where it
    copied a member)."""
    lr = e["after"].get("lr", float("nan"))
    if e["copied"] is None:
        return f"{e['step']} m{e['member']} lr {e['before'].get('lr', float('nan')):.2e}->{lr:.2e}"
    return f"{e['step']} m{e['member']}<-m{e['parent']} lr {e['copied'].get('lr'):.2e}->{lr:.2e}"


def compact(results: dict) -> dict:
    """The figures without curves and run directories, each explore as a line of text
    (:func:`_explore_text`); ``scripts/results/pb2_vs_pbt_lm.json`` is this."""
    keep = ("best_val_loss", "best_test_loss", "best_member", "best_hparams", "member_steps")
    out = {k: v for k, v in results.items() if k != "sizes"}
    out["sizes"] = {}
    for size, r in results["sizes"].items():
        per_seed = []
        for s in r["per_seed"]:
            row = {"seed": s["seed"], "gap": s["gap"]}
            for m in METHODS:
                row[m] = {k: s[m][k] for k in keep}
                row[m]["wall_s"] = s[m]["wall_s"]
                row[m]["explores"] = [_explore_text(e) for e in s[m]["explores"]]
            per_seed.append(row)
        out["sizes"][size] = {**{k: v for k, v in r.items() if k != "per_seed"}}
        out["sizes"][size]["per_seed"] = per_seed
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(results["sizes"])
    fig, axes = plt.subplots(len(sizes), 2, figsize=(12, 4.5 * len(sizes)), squeeze=False)
    for (ax, axl), size in zip(axes, sizes, strict=True):
        lows, highs = [], []
        per_seed = results["sizes"][size]["per_seed"]
        for i, s in enumerate(per_seed):
            c = f"C{i % 10}"
            for name, ls in (("pb2", "-"), ("pbt", "--")):
                r = s[name]
                x, y = np.asarray(r["curve_steps"]), np.asarray(r["curve_best_val_loss"])
                ax.plot(x, y, ls, color=c, marker=".", label=f"seed {s['seed']} {name}")
                late = y[x >= x.max() / 4] if x.size else y
                if np.isfinite(late).any():
                    lows.append(np.nanmin(late))
                    highs.append(np.nanmax(late))
            for name, marker in (("pb2", "o"), ("pbt", "x")):
                pts = [
                    (e["step"], e["after"]["lr"]) for e in s[name]["explores"] if "lr" in e["after"]
                ]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    dx = 2 if name == "pb2" else -2
                    axl.scatter(
                        np.asarray(xs) + dx, ys, color=c, marker=marker, s=25,
                        label=f"seed {s['seed']} {name}",
                    )  # fmt: skip
        if lows:
            lo, hi = min(lows), max(highs)
            ax.set_ylim(lo - 0.05 * (hi - lo) - 1e-3, hi + 0.05 * (hi - lo) + 1e-3)
        ax.set(
            xlabel="step (every member)",
            ylabel="best validation loss so far (nats/byte)",
            title=f"(a) population {size}: PB2 (solid) vs PBT (dashed), equal member-steps",
        )
        ax.legend(fontsize=7, ncol=2)
        axl.set(
            yscale="log",
            xlabel="step",
            ylabel="learning rate after explore",
            title=f"(b) population {size}: learning rates explored, PB2 (o) vs PBT (x)",
        )
        axl.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    try:
        for size in args.sizes:
            for seed in seeds:
                make_configs(seed, size, args)  # every config error before anything trains
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    by_size = {size: [run_seed(seed, size, args) for seed in seeds] for size in args.sizes}
    results = summarize(by_size, args)
    results["total_wall_s"] = round(time.perf_counter() - t0, 1)
    try:
        check_claim(results)
        results["verdict"], results["verdict_detail"] = "holds", ""
    except AssertionError as e:
        results["verdict"], results["verdict_detail"] = "fails", str(e)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "summary.json").write_text(json.dumps(compact(results), indent=1) + "\n")
    if not args.no_plot:
        plot(results, args.out / "pb2_vs_pbt_lm.png")
    for size, r in results["sizes"].items():
        print(
            f"population {size}, median best val loss over {args.seeds} seeds: PB2 "
            f"{r['pb2_median_best_val_loss']:.4f}, PBT {r['pbt_median_best_val_loss']:.4f}; "
            f"PB2 lower on {r['pb2_wins']}/{args.seeds} seeds; median gap (PBT - PB2) "
            f"{r['median_gap']:+.4f}"
        )
    print(f"{results['total_wall_s']:.0f}s; wrote {args.out}")
    if results["verdict"] != "holds":
        print(f"CLAIM FAILS: {results['verdict_detail']}")
        return 1
    print("claim holds")
    return 0


if __name__ == "__main__":
    from jaxhpo.cli import use_cpu_cores

    use_cpu_cores()  # as `jaxhpo run experiments/pb2_vs_pbt_lm.py` does
    sys.exit(main())
