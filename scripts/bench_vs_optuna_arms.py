"""The arms of ``scripts/bench_vs_optuna.py``: a jaxhpo study, an Optuna study, each strategy's
settings, and the reading of a run's time to target and best loss by a wall-clock time."""

from __future__ import annotations

import json
import math
import tempfile
import time

import jax
import numpy as np
import pandas as pd

from jaxhpo.cli import load_config
from jaxhpo.experiment import prepare, run
from jaxhpo.space import Choice, Float, Int

#: The model and data of the benchmark (small enough for minutes on 2 CPU cores).
MODEL = ["model.num_layers=1", "model.num_heads=2", "model.d_model=32", "model.d_ff=64"]
TASK = ["task.seq_len=32", "task.batch_size=8", "task.eval_batches=4", "task.max_bytes=400000"]


def overrides(args, seed: int, extra=()) -> list[str]:
    return [
        *MODEL,
        *TASK,
        f"train.steps={args.steps}",
        f"train.segment_steps={args.segment}",
        "train.checkpoint_every=0",
        "population.devices=1",
        f"seed={seed}",
        f"out_dir={tempfile.mkdtemp(prefix='run_', dir=args.work_dir)}",
        *extra,
        *args.set,
    ]


def method_overrides(strategy: str, args, cap: int) -> tuple[str, list[str]]:
    """``(preset, overrides)`` of a jaxhpo strategy: every model trains at most ``--steps``
    steps (a trial's full budget) under the same schedule, as the calibration's and Optuna's."""
    seg, eta = args.segment, args.eta
    if strategy in ("halving", "hyperband"):
        size = args.size if strategy == "halving" else "null"
        return "lm-random", [f"strategy.name={strategy}", f"strategy.min_steps={seg}",
                             f"strategy.eta={eta}", f"population.size={size}"]  # fmt: skip
    if strategy == "bohb":
        # Hyperband iterations of R = --steps until the cap; no member trains past R. The
        # schedule's horizon is set to R: bohb leaves it at train.steps (the whole run).
        iterations = -(-cap // args.steps)
        return "lm-random", [
            "strategy.name=bohb",
            f"strategy.min_steps={args.bohb_min_steps or seg}",
            f"strategy.eta={eta}",
            f"strategy.iteration_steps={args.steps}",
            "population.size=null",
            f"train.steps={args.steps * iterations}",
        ]
    if strategy in ("pb2", "pbt"):
        return "lm-random", [f"strategy.name={strategy}", f"population.size={args.pbt_size}",
                             f"strategy.ready_steps={seg}"]  # fmt: skip
    if strategy in ("bo", "rl", "evo", "optuna"):
        return f"lm-{strategy}", [
            f"population.size={args.size}",
            f"strategy.generation_steps={args.steps}",
            f"train.steps={args.steps * args.generations}",
        ]
    return "lm-random", [f"strategy.name={strategy}", f"population.size={args.size}"]


def anytime(times, losses) -> list[tuple[float, float]]:
    """``(time, best so far)`` at each improvement of the best finite loss."""
    out, best = [], math.inf
    for t, v in sorted(zip(times, losses, strict=True)):
        if np.isfinite(v) and v < best:
            best = float(v)
            out.append((round(float(t), 3), best))
    return out


def best_by(curve, seconds: float) -> float | None:
    """The best loss of an :func:`anytime` curve reached within ``seconds`` (None: none yet)."""
    done = [v for t, v in curve if t <= seconds]
    return min(done) if done else None


def first_at(curve, target: float) -> float | None:
    """When an :func:`anytime` curve first reached ``target`` or lower (None: never)."""
    return next((t for t, v in curve if v <= target), None)


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


def run_jaxhpo(preset: str, args, seed: int, extra, target: float | None = None) -> dict:
    """One jaxhpo study; timed from before its task data is read."""
    cfg = load_config(preset, overrides(args, seed, extra))
    start = time.perf_counter()
    prep = prepare(cfg)  # task data and strategy: timed, as the Optuna arm's are
    setup = time.perf_counter() - start
    res = run(cfg, prepared=prep, quiet=True)
    wall = time.perf_counter() - start
    info = json.loads((res.run_dir / "run.json").read_text())
    table = pd.read_parquet(res.run_dir / "metrics.parquet")
    evals = table[table["step"] > 0]
    out = {
        "wall_s": round(wall, 3),
        "train_s": round(info["timings"]["train_s"], 3),
        "member_steps": info["member_steps"],
        "population": int(prep.size),
        "best_val_loss": float(evals["val_loss"].min()),
        "first_eval_s": round(float(evals["wall_time"].min()) + setup, 3),
        "final_val_losses": sorted(res.members["val_loss"].dropna().tolist()),
        "anytime": anytime(evals["wall_time"] + setup, evals["val_loss"]),
        "anytime_member_steps": anytime(member_steps_by_row(evals), evals["val_loss"]),
        "run_dir": str(res.run_dir),
    }
    out["events"] = _events(res.run_dir)
    if target is not None:
        out.update(time_to_target(table, target, setup))
    return out


def member_steps_by_row(evals: pd.DataFrame) -> np.ndarray:
    """The member-steps a run had trained when each evaluation row was written (the rows of one
    segment share its wall time; a member that trained in it has a training loss)."""
    steps = np.sort(evals["step"].unique())
    length = dict(zip(steps, np.diff(steps, prepend=0), strict=True))
    trained = evals["train_loss"].notna().to_numpy() * evals["step"].map(length).to_numpy()
    per_time = pd.Series(trained, index=evals["wall_time"].to_numpy()).groupby(level=0).sum()
    return per_time.cumsum().reindex(evals["wall_time"].to_numpy()).to_numpy()


def _events(run_dir) -> dict:
    """How often each kind of strategy decision happened (e.g. bohb's model proposals)."""
    path = run_dir / "events.jsonl"
    if not path.exists():
        return {}
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        e = json.loads(line)
        key = f"{e.get('kind')}:{e.get('proposal', '')}".rstrip(":")
        counts[key] = counts.get(key, 0) + 1
    return counts


def _suggest(trial, space) -> dict:
    hp = {}
    for name in space.searched:
        dim = space[name]
        if isinstance(dim, Float):
            hp[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
        elif isinstance(dim, Int):
            hp[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
        elif isinstance(dim, Choice):
            hp[name] = trial.suggest_categorical(name, list(dim.values))
    return hp


def run_optuna(args, seed: int, target: float, cap: int) -> dict:
    """Optuna TPE + MedianPruner, one trial after another until ``cap`` member-steps; each
    trial is jaxhpo's one-member population (same model, optimizer, data and evaluation)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    prep = prepare(load_config("lm-random", overrides(args, seed, ["population.size=1"])))
    population, space = prep.population, prep.space
    train_data = population.replicate(prep.task.train_data)
    val_data = population.replicate(prep.task.splits.val)
    root = jax.random.key(seed)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_warmup_steps=args.segment),
    )
    used, reached, n_trials, n_pruned, times, losses, useds = 0, None, 0, 0, [], [], []
    while used < cap:
        trial = study.ask()
        full = {**{k: np.asarray(v)[0] for k, v in prep.hparams.items()}, **_suggest(trial, space)}
        pop = population.init(root, np.asarray([trial.number]), population.full_hparams(full, 1))
        loss, step = math.inf, 0
        while step < args.steps and used < cap:
            k = min(args.segment, args.steps - step, cap - used)
            pop, _ = population.train_segment(pop, train_data, args.segment, valid_steps=k)
            step, used = step + k, used + k
            loss = float(np.asarray(population.evaluate(pop, val_data)["loss"])[0])
            times.append(time.perf_counter() - start)
            losses.append(loss)
            useds.append(used)
            if reached is None and loss <= target:
                reached = {"time_to_target_s": round(times[-1], 3), "trial": trial.number,
                           "step": step, "member_steps_at_target": used}  # fmt: skip
            if not np.isfinite(loss):
                break
            trial.report(loss, step)
            if trial.should_prune():
                break
        n_trials += 1
        if np.isfinite(loss) and step == args.steps:
            study.tell(trial, loss)
        else:
            failed = not np.isfinite(loss)
            n_pruned += not failed
            study.tell(trial, state=optuna.trial.TrialState.FAIL if failed else
                       optuna.trial.TrialState.PRUNED)  # fmt: skip
    finite = [v for v in losses if np.isfinite(v)]
    return {
        "wall_s": round(time.perf_counter() - start, 3),
        "member_steps": used,
        "trials": n_trials,
        "pruned": n_pruned,
        "best_val_loss": min(finite) if finite else None,
        "first_eval_s": round(times[0], 3),
        "anytime": anytime(times, losses),
        "anytime_member_steps": anytime(useds, losses),
        **(reached or {"time_to_target_s": None, "reached": False}),
        "reached": reached is not None,
    }
