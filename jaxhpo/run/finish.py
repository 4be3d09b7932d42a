"""The end of a run: the final members evaluated on the test split, the optional ensemble of
the best ones, ``members.csv``, the best member's weights, timings, the callbacks' end, and the
report; last, ``"finished": true`` in ``run.json``. A run killed anywhere before that mark is
not finished: ``jaxhpo resume`` continues it from its last checkpoint and does the whole end
again (every file it writes is replaced whole), so it ends as the uninterrupted run."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from jaxhpo import parallel
from jaxhpo.population import PopulationState
from jaxhpo.pretrained import save_best
from jaxhpo.reporting.report import write_report
from jaxhpo.results import atomic_write
from jaxhpo.run.book import Loop, members_table
from jaxhpo.strategies.base import Observation


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    members: pd.DataFrame  # one row per member: hyperparameters, val_*, test_*, diverged
    state: PopulationState


def finish(loop: Loop, run_dir: Path, out_dir: Path, writes: bool, console: Console) -> RunResult:
    """Evaluates the final members on the test split and writes what the run produced."""
    cfg, task, population, pop, obs = loop.cfg, loop.prep.task, loop.population, loop.pop, loop.obs
    writer = loop.writer
    _, val_data, test_data = loop.data
    # No update follows the last observation, so it describes the final members.
    test = parallel.to_host(population.evaluate(pop, test_data))
    if cfg.train.ensemble_top_k:
        k = cfg.train.ensemble_top_k
        ensemble = ensemble_of(population, pop, obs, test, k, (val_data, test_data))
        writer.update_info({"ensemble": ensemble})
    members = members_table(loop.book, obs, test, task.metric_names, writer.hparam_names)
    if cfg.train.save_best:  # the best member's weights, for fine-tuning (jaxhpo.pretrained)
        save_best(run_dir, task, pop, members, loop.metric, loop.maximize, write=writes)
    loop.timings["total_s"] = time.perf_counter() - loop.t0
    writer.update_info(
        {
            "timings": loop.timings,
            "steps": loop.step,
            "member_steps": loop.book.member_steps,
            "trace_counts": population.trace_counts,
        }
    )
    writer.close()
    atomic_write(out_dir / "members.csv", members.to_csv(index=False))
    if writer.callbacks is not None:  # the last events, then the end, to every callback
        writer.callbacks.on_evaluation([], writer.flush_events(), run_dir)
        writer.callbacks.on_end(run_dir, members)
    if not writes:
        shutil.rmtree(out_dir, ignore_errors=True)
        return RunResult(run_dir, members, pop)

    write_report(run_dir)
    writer.update_info({"finished": True})  # last: a run killed before it is resumed
    console.print(f"run directory: {run_dir}")
    return RunResult(run_dir, members, pop)


def ensemble_of(population, pop, obs: Observation, test, k: int, data) -> dict[str, Any]:
    """The top-``k`` members by the study's objective (finite ones, in the final population),
    their averaged predictions on the validation and test splits, beside the best one alone."""
    fitness = obs.fitness()
    order = [int(i) for i in np.argsort(fitness, kind="stable") if np.isfinite(fitness[i])]
    slots = order[:k]
    if not slots:
        return {"k": 0, "note": "no member with a finite objective"}
    val_data, test_data = data
    out = {
        "k": len(slots),
        "members": [int(obs.member_id[i]) for i in slots],
        "test": population.ensemble_evaluate(pop, slots, test_data),
    }
    if population.folds == 1:  # under k-fold each member has its own validation fold
        out["val"] = population.ensemble_evaluate(pop, slots, val_data)
    out["best_member"] = int(obs.member_id[slots[0]])
    out["best_test"] = {m: float(test[m][slots[0]]) for m in test}
    return out
