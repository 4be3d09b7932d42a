"""Time to target: jaxhpo's population strategies against Optuna TPE + MedianPruner, trial after
trial, on the byte-level LM task (the issue's "figure that matters").

One process, one machine, the same model, data, search space and member-steps cap for both:

1. **Target.** Random search with ``--calibration-trials`` (64) trials of ``--steps`` steps
   (jaxhpo, one population): the target is the ``--target-rank``-th best final validation loss
   (default 4th of 64: a loss random search with 64 trials reaches), with seed ``--seed + 1``
   (the methods use ``--seed``). ``--target`` skips this.
2. **jaxhpo** (``--strategy``, default ``halving``: successive halving, ``--size`` members, rungs
   every ``--segment`` steps, eta 3), run through :func:`jaxhpo.experiment.run` with
   ``train.budget`` = the cap.
3. **Optuna**: ``TPESampler(seed)`` + ``MedianPruner(n_warmup_steps=segment)``; each trial trains
   one member with jaxhpo's own one-member :class:`~jaxhpo.population.Population` (so the model,
   optimizer, data order and evaluation are identical), reports the validation loss after every
   ``--segment`` steps and is pruned when the pruner says so, until the cap is spent.

Time to target is the wall-clock time from the method's start (task data, compilation included)
to the first validation evaluation with loss <= target; a method that never reaches it within
the cap reports ``null`` and the ratio is then a bound. Writes ``scripts/results/
bench_vs_optuna_<backend>.json``:

    python scripts/bench_vs_optuna.py                     # default size: minutes on 2 CPU cores
    python scripts/bench_vs_optuna.py --quick             # a smoke run
    python scripts/bench_vs_optuna.py --strategy bo --size 16 --target 2.6
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from jaxhpo.cli import load_config
from jaxhpo.experiment import prepare, run
from jaxhpo.space import Choice, Float, Int

#: The model and data of the benchmark (small enough for minutes on 2 CPU cores).
MODEL = ["model.num_layers=1", "model.num_heads=2", "model.d_model=32", "model.d_ff=64"]
TASK = ["task.seq_len=32", "task.batch_size=8", "task.eval_batches=4", "task.max_bytes=400000"]


def overrides(args, extra=()) -> list[str]:
    return [
        *MODEL,
        *TASK,
        f"train.steps={args.steps}",
        f"train.segment_steps={args.segment}",
        "train.checkpoint_every=0",
        "population.devices=1",
        f"seed={args.seed}",
        f"out_dir={tempfile.mkdtemp(prefix='bench_vs_optuna_')}",
        *extra,
        *args.set,
    ]


def time_to_target(table: pd.DataFrame, target: float, offset: float) -> dict:
    """First evaluation at or below ``target`` in a run's metrics table (``wall_time`` counts
    from the run loop's start, before the population's first compile; ``offset`` adds the set-up
    before it: reading the task data, building the strategy)."""
    t = table[table["step"] > 0].sort_values(["wall_time", "member"], kind="stable")
    hit = t[t["val_loss"] <= target]
    if hit.empty:
        return {"time_to_target_s": None, "reached": False}
    row = hit.iloc[0]
    return {
        "time_to_target_s": round(float(row["wall_time"]) + offset, 3),
        "reached": True,
        "member": int(row["member"]),
        "step": int(row["step"]),
    }


def run_jaxhpo(preset: str, args, extra, target: float | None = None) -> dict:
    cfg = load_config(preset, overrides(args, extra))
    start = time.perf_counter()
    prep = prepare(cfg)  # task data and strategy: timed, as the Optuna arm's are
    setup = time.perf_counter() - start
    res = run(cfg, prepared=prep, quiet=True)
    wall = time.perf_counter() - start
    info = json.loads((res.run_dir / "run.json").read_text())
    table = pd.read_parquet(res.run_dir / "metrics.parquet")
    out = {
        "wall_s": round(wall, 3),
        "train_s": round(info["timings"]["train_s"], 3),
        "member_steps": info["member_steps"],
        "best_val_loss": float(table["val_loss"].min()),
        "final_val_losses": sorted(res.members["val_loss"].dropna().tolist()),
        "run_dir": str(res.run_dir),
    }
    if target is not None:
        out.update(time_to_target(table, target, setup))
    return out


def run_optuna(args, target: float, cap: int) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    cfg = load_config("lm-random", overrides(args, ["population.size=1"]))
    prep = prepare(cfg)  # task, space and a one-member population: the same model as jaxhpo's
    population, space, task = prep.population, prep.space, prep.task
    train_data = population.replicate(task.train_data)
    val_data = population.replicate(task.splits.val)
    root = jax.random.key(args.seed)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=optuna.pruners.MedianPruner(n_warmup_steps=args.segment),
    )
    used, reached_at, best, n_trials, n_pruned = 0, None, math.inf, 0, 0
    curve = []
    while used < cap:
        trial = study.ask()
        hp = {}
        for name in space.searched:
            dim = space[name]
            if isinstance(dim, Float):
                hp[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
            elif isinstance(dim, Int):
                hp[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
            elif isinstance(dim, Choice):
                hp[name] = trial.suggest_categorical(name, list(dim.values))
        full = {**{k: np.asarray(v)[0] for k, v in prep.hparams.items()}, **hp}
        pop = population.init(root, np.asarray([trial.number]), population.full_hparams(full, 1))
        loss, step = math.inf, 0
        while step < args.steps and used < cap:
            k = min(args.segment, args.steps - step, cap - used)
            pop, _ = population.train_segment(pop, train_data, args.segment, valid_steps=k)
            step, used = step + k, used + k
            loss = float(np.asarray(population.evaluate(pop, val_data)["loss"])[0])
            now = time.perf_counter() - start
            best = min(best, loss) if np.isfinite(loss) else best
            curve.append((round(now, 3), used, best))
            if reached_at is None and loss <= target:
                reached_at = (now, trial.number, step, used)
            if not np.isfinite(loss):
                break
            trial.report(loss, step)
            if trial.should_prune():
                break
        n_trials += 1
        if np.isfinite(loss) and step == args.steps:
            study.tell(trial, loss)
        elif np.isfinite(loss):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            n_pruned += 1
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if reached_at is not None and args.stop_at_target:
            break
    out = {
        "wall_s": round(time.perf_counter() - start, 3),
        "member_steps": used,
        "trials": n_trials,
        "pruned": n_pruned,
        "best_val_loss": best,
        "time_to_target_s": None if reached_at is None else round(reached_at[0], 3),
        "reached": reached_at is not None,
        "anytime": curve,
    }
    if reached_at is not None:
        out.update(trial=reached_at[1], step=reached_at[2], member_steps_at_target=reached_at[3])
    return out


def strategy_overrides(args) -> tuple[str, list[str]]:
    if args.strategy == "halving":
        return "lm-random", [
            "strategy.name=halving",
            f"strategy.min_steps={args.segment}",
            "strategy.eta=3",
            f"population.size={args.size}",
        ]
    if args.strategy == "hyperband":
        return "lm-random", [
            "strategy.name=hyperband",
            f"strategy.min_steps={args.segment}",
            "strategy.eta=3",
            "population.size=null",
        ]
    if args.strategy == "pbt":
        return "lm-pbt", [f"population.size={args.size}", f"strategy.ready_steps={args.segment}"]
    if args.strategy in ("bo", "rl", "evo", "optuna"):
        return f"lm-{args.strategy}", [
            f"population.size={args.size}",
            f"strategy.generation_steps={args.steps}",
            f"train.steps={args.steps * args.generations}",
        ]
    return "lm-random", [f"strategy.name={args.strategy}", f"population.size={args.size}"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60, help="training steps of a full trial")
    p.add_argument("--segment", type=int, default=20, help="steps between evaluations/rungs")
    p.add_argument("--calibration-trials", type=int, default=64)
    p.add_argument("--target-rank", type=int, default=4, help="k-th best random loss = target")
    p.add_argument("--target", type=float, default=None, help="skip the calibration")
    p.add_argument("--strategy", default="halving", help="jaxhpo strategy (halving, hyperband, "
                   "pbt, bo, rl, evo, optuna, random, ...)")  # fmt: skip
    p.add_argument("--size", type=int, default=27, help="jaxhpo population size")
    p.add_argument("--generations", type=int, default=4, help="bo/rl/evo/optuna generations")
    p.add_argument("--cap", type=int, default=None, help="member-steps cap (default: the "
                   "calibration's, trials x steps)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop-at-target", action="store_true", help="stop Optuna once it hits")
    p.add_argument("--set", action="append", default=[], help="extra config override")
    p.add_argument("--quick", action="store_true", help="a smoke run (tiny sizes)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.segment, args.calibration_trials, args.size = 20, 10, 8, 9
        args.target_rank = 2
    cap = args.cap or args.calibration_trials * args.steps
    result = {
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "cpu": platform.machine(),
        "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "cap_member_steps": cap, "model": MODEL, "task": TASK},
    }  # fmt: skip
    if args.target is None:
        # Another seed than the methods': the same seed would hand the jaxhpo population the
        # calibration's own first members (space.sample draws the same rows).
        calib = run_jaxhpo(
            "lm-random",
            args,
            [f"population.size={args.calibration_trials}", f"seed={args.seed + 1}"],
            target=None,
        )
        losses = calib["final_val_losses"]
        target = float(losses[min(args.target_rank, len(losses)) - 1])
        result["calibration"] = {k: v for k, v in calib.items() if k != "final_val_losses"}
        result["calibration"]["quantiles"] = {
            q: float(np.quantile(losses, q)) for q in (0.0, 0.05, 0.25, 0.5)
        }
        print(f"target: {target:.4f} ({args.target_rank}-th best of {len(losses)} random trials)")
    else:
        target = args.target
    result["target"] = target
    preset, extra = strategy_overrides(args)
    ours = run_jaxhpo(preset, args, [*extra, f"train.budget={cap}"], target=target)
    ours.pop("final_val_losses")
    ours["strategy"] = args.strategy
    print(f"jaxhpo {args.strategy}: {ours.get('time_to_target_s')} s to target")
    theirs = run_optuna(args, target, cap)
    print(f"optuna tpe+median: {theirs.get('time_to_target_s')} s to target")
    result["jaxhpo"], result["optuna"] = ours, theirs
    a, b = ours["time_to_target_s"], theirs["time_to_target_s"]
    if a is not None and b is not None:
        result["speedup"] = round(b / a, 3)
    elif a is not None:  # Optuna never reached it: its whole run is a lower bound
        result["speedup_at_least"] = round(theirs["wall_s"] / a, 3)
    ratio = result.get("speedup", result.get("speedup_at_least"))
    print(f"speedup (optuna time / jaxhpo time): {ratio}")
    out = args.out or Path(f"scripts/results/bench_vs_optuna_{jax.default_backend()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
