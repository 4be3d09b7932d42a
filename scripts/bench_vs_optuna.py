"""Time to target: jaxhpo's population strategies against Optuna TPE + MedianPruner, trial after
trial, on the byte-level LM task (the issue's "figure that matters"), over several seeds.

One process, one machine, the same model, data, search space, schedule and member-steps cap for
every method; no model trains more than ``--steps`` steps (a trial's full budget). Per seed ``s``
(``--seed`` .. ``--seed + --seeds - 1``):

1. **Target.** Random search with ``--calibration-trials`` (64) trials of ``--steps`` steps
   (jaxhpo, one population, seed ``s + 1000``: the methods' seed ``s`` would hand a population
   the calibration's own first members): the target is the ``--target-rank``-th best final
   validation loss (default 4th of 64, about the 6% quantile; ``--target-rank 1``: the best,
   the 1.6% quantile). ``--target`` skips this. One calibration per seed, shared by every method
   of that seed; its sorted final losses are kept, so another rank's target can be taken later.
2. **jaxhpo**, each of ``--strategies`` (``label=strategy`` names a variant; ``--strategy-set
   label:key=value`` adds its config overrides), run through :func:`jaxhpo.experiment.run` with
   ``train.budget`` = the cap (see :func:`bench_vs_optuna_arms.method_overrides`: ``halving``
   ``--size`` members, rungs every ``--segment`` steps; ``bohb`` Hyperband iterations of
   ``R = --steps``, smallest budget ``--bohb-min-steps`` (one segment), the schedule decaying
   over ``R``; ``pb2``/``pbt`` ``--pbt-size`` members trained ``--steps`` steps, exploit/explore
   every ``--segment``: one population of ``--pbt-size x --steps`` member-steps, less than the
   cap, since PBT neither starts new members nor, here, trains a model past a trial's length).
3. **Optuna**, once per seed: ``TPESampler(seed=s)`` + ``MedianPruner(n_warmup_steps=segment)``;
   each trial trains jaxhpo's own one-member population (identical model, optimizer, data order
   and evaluation), reports the validation loss every ``--segment`` steps and is pruned when the
   pruner says so, until the cap is spent.

Every method is timed from its own start (reading the task data and compiling included). All
arms use jaxhpo's persistent compilation cache, and an untimed warm-up seed (seed ``--seed +
10000``, half the cap; ``--no-warmup`` skips it) first compiles every arm's programs, so no arm
of a timed seed compiles from scratch: the times compare training and the strategies' decisions,
not compilers. Per seed and method:

* **time to target**: to the first validation evaluation with loss <= target (``null``: not
  within the cap; counted as +inf in medians, and a median of +inf is written ``null``);
* **ratio**: time to target / Optuna's (+inf when only Optuna reached it; when only the method
  did, its time over Optuna's whole wall time, a bound);
* **best at equal wall clock**: the lowest validation loss the method had evaluated by
  ``B`` seconds after its start, ``B`` = the wall time Optuna took to spend the cap on that seed
  (``--budget-s`` fixes ``B`` instead); Optuna's is its best at ``B``;
* **final best**: the lowest validation loss of the whole run;
* **member-steps to target**: the member-steps the method had trained by then (the decisions
  are deterministic given the seed, the times are not: this is the noise-free half);
* **time to the harder target**: the same as time to target for the calibration's best loss
  (the best of its random configurations), read from each arm's curve of its best loss so far.

Measured (10 seeds, defaults: 60-step trials, segments of 20, cap 3,840 member-steps; 2 shared CPU
cores). In one process (``scripts/results/bench_vs_optuna_rank1_cpu.json``, ``--target-rank 1``):
Optuna reaches the best of 64 random configurations in a median 5.1 s (2,070 member-steps, on 8/10
seeds), ``bohb`` in 5.5 s (1,540, on 7/10): median ratio 1.87, earlier on 3/10, fewer member-steps
on 3/10; halving on 4/10. The same run retargeted to the 4th best: Optuna 2.4 s (550), ``bohb`` 3.2
s (660), ratio 1.43, earlier on 2/10; halving 3.6 s (900), 0/10. ``bohb``'s best loss at Optuna's
wall time is lower on 6/10 seeds (median 2.768 vs 2.773). Added with ``--reuse`` for the strict
target: ``strategy.min_points=6`` 4.4 s (1,210, on 7/10), ratio 1.25, earlier on 3/10; eta 2 with
``min_steps`` 30 5.8 s (2,520, on 7/10), ratio 1.30, earlier on 4/10; min_points 6 with
``random_fraction`` 0.15 8.5 s (6/10), ratio 3.01, and with eta 2 and ``min_steps`` 30 5.3 s (7/10),
ratio 2.06; ``bohb`` again as a control: the same member-steps on every seed, 4.5 s instead of 5.5
s. ``scripts/results/bench_vs_optuna_cpu.json`` (4th best) holds variants added with ``--reuse`` to
an earlier process's calibration and Optuna arm: their targets and member-steps are those a fresh
run gives (the calibrations and decisions are deterministic), but their seconds compare across
processes, which differ by a second or more under load (``bohb``'s identical decisions took a median
4.8 s to the target at 15:07 and 3.1 s at 17:33). Held out (seeds 10-29, one fresh process,
``--target-rank 1``; ``scripts/results/bench_vs_optuna_heldout_cpu.json``): Optuna 4.5 s (1,560
member-steps, on 14/20), ``bohb`` on 9/20, ``min_points`` 5 (D + 1) 5.5 s (1,650, on 13/20),
``min_points`` 6 7.0 s (2,420, on 11/20).

The summary gives per method the medians over seeds, the seeds reached, and the wins over
Optuna (strictly earlier to target; strictly lower best at equal wall clock). Writes
``scripts/results/bench_vs_optuna_<backend>.json`` and a markdown table beside it (``.md``).
``--reuse FILE`` takes the targets and Optuna arms (and methods already run) of FILE's seeds and
runs only ``--strategies``, so a strategy can be added to a finished benchmark. With another
``--target-rank`` than FILE's it retargets: the target becomes that rank's calibration loss
(files from before the losses were kept: rank 1 only) and every reused arm's time and
member-steps to it are read from the arm's stored curves, exact since no arm's decisions depend
on the target (``--strategies ""`` runs nothing else)::

    python scripts/bench_vs_optuna.py --seeds 5 --strategies bohb,halving
    python scripts/bench_vs_optuna.py --seeds 5 --strategies pb2 --reuse \\
        scripts/results/bench_vs_optuna_cpu.json
    python scripts/bench_vs_optuna.py --seeds 5 --strategies "" --target-rank 1 --reuse \\
        scripts/results/bench_vs_optuna_cpu.json --out /tmp/rank1.json
    python scripts/bench_vs_optuna.py --quick --seeds 2 --strategies bohb,halving  # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_vs_optuna_arms as arms  # noqa: E402

from jaxhpo import compile_cache  # noqa: E402

CALIBRATION_SEED_OFFSET = 1000
WARMUP_SEED_OFFSET = 10_000
COMPARED = ("steps", "segment", "calibration_trials", "cap_member_steps", "set")
#: an arm's fields about the first evaluation at the target: not recomputed by a retarget
AT_TARGET = ("trial", "step", "member", "member_steps_at_target")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60, help="training steps of a full trial")
    p.add_argument("--segment", type=int, default=20, help="steps between evaluations/rungs")
    p.add_argument("--calibration-trials", type=int, default=64)
    p.add_argument("--target-rank", type=int, default=None, help="k-th best random loss = "
                   "target (default 4; --quick: 2)")  # fmt: skip
    p.add_argument("--target", type=float, default=None, help="skip the calibration")
    p.add_argument("--strategies", default="bohb,halving", help="jaxhpo strategies, comma-"
                   "separated; label=strategy for a variant")  # fmt: skip
    p.add_argument("--strategy-set", action="append", default=[], metavar="LABEL:KEY=VALUE",
                   help="a config override of one method")  # fmt: skip
    p.add_argument("--size", type=int, default=27, help="halving/random population size")
    p.add_argument("--pbt-size", type=int, default=16, help="pb2/pbt population size")
    p.add_argument("--eta", type=int, default=3, help="halving/hyperband/bohb eta")
    p.add_argument("--bohb-min-steps", type=int, default=0, help="bohb's smallest budget "
                   "(0: one segment)")  # fmt: skip
    p.add_argument("--generations", type=int, default=4, help="bo/rl/evo/optuna generations")
    p.add_argument("--cap", type=int, default=None, help="member-steps cap (default: the "
                   "calibration's, trials x steps)")  # fmt: skip
    p.add_argument("--budget-s", type=float, default=None, help="equal wall clock (default: "
                   "Optuna's wall time of each seed)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--set", action="append", default=[], help="extra config override (all)")
    p.add_argument("--reuse", type=Path, default=None, help="targets and Optuna arms from here")
    p.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the "
                   "untimed warm-up seed that fills the compilation cache")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="a smoke run (tiny sizes, no warm-up)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.segment, args.calibration_trials, args.size = 18, 6, 8, 9
        args.pbt_size, args.warmup = 4, False
    args.target_rank = args.target_rank or (2 if args.quick else 4)
    args.cap = args.cap_member_steps = args.cap or args.calibration_trials * args.steps
    args.methods = dict(
        (m.split("=", 1) if "=" in m else (m, m)) for m in args.strategies.split(",") if m
    )
    return args


def method_settings(label: str, strategy: str, args) -> tuple[str, list[str]]:
    preset, extra = arms.method_overrides(strategy, args, args.cap)
    mine = [s.split(":", 1)[1] for s in args.strategy_set if s.split(":", 1)[0] == label]
    return preset, [*extra, *mine, f"train.budget={args.cap}"]


def calibrate(args, seed: int) -> tuple[float, dict]:
    if args.target is not None:
        return args.target, {}
    calib = arms.run_jaxhpo(
        "lm-random",
        args,
        seed + CALIBRATION_SEED_OFFSET,
        [f"population.size={args.calibration_trials}", f"train.budget={args.cap}"],
    )
    losses = calib.pop("final_val_losses")
    target = float(losses[min(args.target_rank, len(losses)) - 1])
    calib = {k: v for k, v in calib.items() if k not in ("anytime", "events", "run_dir")}
    calib["quantiles"] = {q: float(np.quantile(losses, q)) for q in (0.0, 0.05, 0.25, 0.5)}
    calib["final_val_losses"] = [float(v) for v in losses]  # sorted: any rank's target
    return target, calib


def calibration_loss(calibration: dict, rank: int) -> float:
    """The ``rank``-th best final loss of a seed's calibration (from its sorted losses; files
    written before they were kept have only the best, as the 0 quantile)."""
    losses = calibration.get("final_val_losses")
    if losses is None and rank == 1:
        q = calibration.get("quantiles", {})
        losses = [q[k] for k in (0.0, "0.0") if k in q][:1]
    if not losses:
        raise SystemExit(f"--reuse: no calibration losses to take a target of rank {rank} from")
    return float(losses[min(rank, len(losses)) - 1])


def retarget(seed: dict, rank: int) -> dict:
    """A reused seed with the target of ``rank`` (:func:`run_seed` then reads every arm's time
    and member-steps to it from the arm's stored curves; the decisions of every arm are the
    same for any target, which no arm reads)."""
    arms_ = [seed["optuna"], *seed["methods"].values()]
    arms_ = [{k: v for k, v in a.items() if k not in AT_TARGET} for a in arms_]
    methods = dict(zip(seed["methods"], arms_[1:], strict=True))
    target = calibration_loss(seed["calibration"], rank)
    return {**seed, "target": target, "optuna": arms_[0], "methods": methods}


def run_seed(args, seed: int, done: dict | None) -> dict:
    """One seed: the target (calibrated, or ``done``'s), Optuna (run, or ``done``'s) and every
    method of ``--strategies``; ``done``'s other methods are kept."""
    if done:
        target, out = done["target"], {**done, "methods": dict(done["methods"])}
    else:
        target, calib = calibrate(args, seed)
        out = {"seed": seed, "target": target, "calibration": calib, "methods": {}}
        print(f"seed {seed}: target {target:.4f}", flush=True)
        out["optuna"] = arms.run_optuna(args, seed, target, args.cap)
        print(f"  optuna: {out['optuna']['time_to_target_s']} s to target", flush=True)
    for label, strategy in args.methods.items():
        preset, extra = method_settings(label, strategy, args)
        res = arms.run_jaxhpo(preset, args, seed, extra, target)
        res.pop("final_val_losses")
        res.pop("run_dir")
        out["methods"][label] = {"strategy": strategy, "code": code_version(strategy),
                                 "overrides": extra, **res}  # fmt: skip
        print(f"  {label}: {res['time_to_target_s']} s to target", flush=True)
    budget = args.budget_s or out["optuna"]["wall_s"]
    quantiles = out["calibration"].get("quantiles", {})
    best = quantiles.get(0.0, quantiles.get("0.0"))
    out["budget_s"], out["random_best"] = budget, best
    for arm in [out["optuna"], *out["methods"].values()]:
        arm["best_at_budget"] = arms.best_by(arm["anytime"], budget)
        for name, target in (("target", out["target"]), ("random_best", best)):
            for unit, curve in (
                ("time_to", "anytime"),
                ("member_steps_to", "anytime_member_steps"),
            ):
                hit = None if target is None else arms.first_at(arm[curve], target)
                arm[f"{unit}_{name}" + ("_s" if unit == "time_to" else "")] = hit
        arm["reached"] = arm["time_to_target_s"] is not None
    return out


def _median(xs: list[float]) -> float | None:
    m = float(np.median(xs)) if xs else math.nan
    return None if not math.isfinite(m) else round(m, 4)


def _time(arm: dict, key: str = "time_to_target_s") -> float:
    t = arm.get(key)
    return math.inf if t is None else t


def ratio(arm: dict, optuna: dict, key: str = "time_to_target_s") -> float | None:
    """Time to target over Optuna's (see the module docstring); None when neither reached it.
    ``key``: the arms' field (a time, or member-steps: bounded by Optuna's whole run in kind)."""
    a, b = _time(arm, key), _time(optuna, key)
    if math.isinf(a) and math.isinf(b):
        return None
    if math.isinf(b):
        return a / optuna["wall_s" if key.endswith("_s") else "member_steps"]
    return a / b


def _to_target(rows: list[tuple[dict, dict]], key: str) -> dict:
    """Times (or member-steps) to a target over seeds (``key``: the arm's field and the key of
    the list), their median, the ratios to Optuna's and the wins (strictly sooner)."""
    times = [_time(a, key) for a, _ in rows]
    ratios = [ratio(a, s["optuna"], key) for a, s in rows]
    return {
        key: [None if math.isinf(t) else t for t in times],
        f"median_{key}": _median(times),
        "reached": sum(not math.isinf(t) for t in times),
        "ratio_vs_optuna": [None if r is None or math.isinf(r) else round(r, 4) for r in ratios],
        "median_ratio_vs_optuna": _median([math.inf if r is None else r for r in ratios]),
        "wins": sum(t < _time(s["optuna"], key) for t, (_, s) in zip(times, rows)),
    }


def summary(seeds: list[dict]) -> dict:
    """Per method (Optuna first): the medians over seeds and the wins over Optuna; under
    ``random_best`` the same for the harder target, the calibration's best loss."""
    labels = ["optuna", *dict.fromkeys(m for s in seeds for m in s["methods"])]
    out = {}
    for label in labels:
        rows = [(s["optuna"] if label == "optuna" else s["methods"].get(label), s) for s in seeds]
        rows = [(arm, s) for arm, s in rows if arm is not None]
        at = [a["best_at_budget"] for a, _ in rows]
        at_o = [s["optuna"]["best_at_budget"] for _, s in rows]
        out[label] = {
            "seeds": [s["seed"] for _, s in rows],
            **_to_target(rows, "time_to_target_s"),  # "wins": strictly earlier
            "best_at_budget": at,
            "median_best_at_budget": _median([math.inf if v is None else v for v in at]),
            "wins_at_budget": sum(
                a is not None and (b is None or a < b) for a, b in zip(at, at_o, strict=True)
            ),
            "median_final_best": _median([a["best_val_loss"] for a, _ in rows]),
            "member_steps": _to_target(rows, "member_steps_to_target"),
            "random_best": _to_target(rows, "time_to_random_best_s"),
            "random_best_member_steps": _to_target(rows, "member_steps_to_random_best"),
        }
    return out


def _fmt(v, digits=3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def markdown(result: dict) -> str:
    """The per-seed times to target and the medians as markdown tables (for the README)."""
    seeds, summ, st = result["seeds"], result["summary"], result["settings"]
    labels, n = list(summ), len(seeds)
    hard = f"the best of {st['calibration_trials']} random configurations"
    if all(s.get("random_best") is None for s in seeds):
        hard = "none (no calibration run)"
    rank = st["target_rank"]
    harder = rank != 1  # rank 1: the harder target is the target
    ordinal = "best" if rank == 1 else f"{rank}-th best"
    lines = [
        f"Byte-level LM, {st['steps']}-step trials, {st['cap_member_steps']:,} member-steps "
        f"per method, {n} seeds, {result['backend']} ({result['cores']} cores); target: the "
        f"{ordinal} of {st['calibration_trials']} random configurations. "
        "Seconds from each method's start to its first evaluation at or below the target (in "
        "brackets: member-steps trained by then; — : not within the cap).",
        "",
        "| seed | target | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 2) + "|",
    ]
    for s in seeds:
        arms_ = [s["optuna"], *(s["methods"].get(m) for m in labels[1:])]
        cells = [_fmt(a and a["time_to_target_s"], 1) for a in arms_]
        cells = [c if c == "—" else f"{c} ({a['member_steps_to_target']:.0f})"
                 for c, a in zip(cells, arms_, strict=True)]  # fmt: skip
        lines.append(f"| {s['seed']} | {s['target']:.3f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Medians over the seeds (seeds reached); ratio: the method's over Optuna's on the same "
        "seed; wins: seeds where the method was strictly earlier, used fewer member-steps, or "
        "had the lower loss. Equal wall clock: the time Optuna took to spend the cap on that "
        "seed." + (f" Harder target: {hard}." if harder else ""),
        "",
        "| method | time to target (s) | ratio | earlier | member-steps to target | fewer | best "
        "at equal wall clock | lower | final best |"
        + (" time to harder target (s) | ratio | earlier |" if harder else ""),
        "|---" * (12 if harder else 9) + "|",
    ]
    for label, m in summ.items():
        base = label == "optuna"
        cells = [
            *_target_cells(m, "time_to_target_s", n, base),
            *_target_cells(m["member_steps"], "member_steps_to_target", n, base)[::2],
            _fmt(m["median_best_at_budget"]),
            "—" if base else f"{m['wins_at_budget']}/{n}",
            _fmt(m["median_final_best"]),
            *(_target_cells(m["random_best"], "time_to_random_best_s", n, base) if harder else []),
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    history = result.get("history", [])
    if len(history) > 1:  # methods timed in different processes: their seconds are less alike
        runs = "; ".join(
            f"{h['date']}: {', '.join(h['methods']) or 'none'}"
            + ("" if h.get("target_rank") in (None, rank) else f" (rank {h['target_rank']})")
            for h in history
        )
        lines += ["", f"Invocations (the first ran the calibrations and Optuna): {runs}."]
    return "\n".join(lines) + "\n"


def _target_cells(m: dict, key: str, n: int, baseline: bool) -> list[str]:
    """Median (seeds reached), median ratio, wins."""
    digits = 1 if key.endswith("_s") else 0
    median = f"{_fmt(m[f'median_{key}'], digits)} ({m['reached']}/{n})"
    if baseline:
        return [median, "1", "—"]
    return [median, _fmt(m["median_ratio_vs_optuna"], 2), f"{m['wins']}/{n}"]


def load_reused(args) -> tuple[dict[int, dict], list[dict]]:
    """``--reuse``'s seeds by number and its invocations (``history``); retargeted when
    ``--target-rank`` differs from the file's."""
    if args.reuse is None:
        return {}, []
    old = json.loads(args.reuse.read_text())
    for key in COMPARED:
        if old["settings"].get(key) != getattr(args, key):
            raise SystemExit(f"--reuse: {args.reuse} ran with {key}={old['settings'].get(key)}")
    seeds = {s["seed"]: s for s in old["seeds"]}
    if old["settings"].get("target_rank") != args.target_rank:
        seeds = {n: retarget(s, args.target_rank) for n, s in seeds.items()}
    history = old.get("history", [])
    rank = old["settings"].get("target_rank")
    return seeds, [{**h, "target_rank": h.get("target_rank", rank)} for h in history]


def main(argv=None) -> int:
    args = parse(argv)
    compile_cache.enable()  # the same persistent compilation cache for every arm
    reused, history = load_reused(args)
    args.work_dir = tempfile.mkdtemp(prefix="bench_vs_optuna_")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings.update(model=arms.MODEL, task=arms.TASK)
    result = {"backend": jax.default_backend(), "device": str(jax.devices()[0]),
              "cpu": platform.machine(), "cores": os.cpu_count(), "settings": settings,
              "seeds": []}  # fmt: skip
    start = time.perf_counter()
    try:
        seeds = range(args.seed, args.seed + args.seeds)
        todo = args.methods or any(s not in reused for s in seeds)
        if args.warmup and todo:  # compiles every arm's programs (the same shapes), half the cap
            half = argparse.Namespace(**{**vars(args), "cap": args.cap // 2})
            run_seed(half, args.seed + WARMUP_SEED_OFFSET, None)
            result["warmup_s"] = round(time.perf_counter() - start, 1)
        for seed in seeds:
            result["seeds"].append(run_seed(args, seed, reused.get(seed)))
    finally:
        shutil.rmtree(args.work_dir, ignore_errors=True)
    result["total_s"] = round(time.perf_counter() - start, 1)
    result["history"] = [*history, {"date": time.strftime("%Y-%m-%d %H:%M"), "seeds": args.seeds,
                         "methods": args.methods, "strategy_set": args.strategy_set,
                         "target_rank": args.target_rank,
                         "total_s": result["total_s"]}]  # fmt: skip
    result["summary"] = summary(result["seeds"])
    out = args.out or Path(f"scripts/results/bench_vs_optuna_{jax.default_backend()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


def code_version(strategy: str) -> str | None:
    """The last commit of the strategy's module (``+`` and a hash of the file when the working
    tree changed it)."""
    path = Path(__file__).parent.parent / "jaxhpo" / "strategies" / f"{strategy}.py"
    if not path.exists():
        return None
    git = ["git", "-C", str(path.parent)]
    try:
        log = [*git, "log", "-1", "--format=%h", "--", path.name]
        commit = subprocess.run(log, capture_output=True, text=True, check=True).stdout.strip()
        status = [*git, "status", "--porcelain", "--", path.name]
        dirty = subprocess.run(status, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    if dirty:  # the working tree's version: its content's hash
        commit += "+" + hashlib.sha1(path.read_bytes()).hexdigest()[:8]
    return commit


if __name__ == "__main__":
    raise SystemExit(main())
