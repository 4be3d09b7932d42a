"""Checkpoints of a run and resuming from them.

A checkpoint holds the population's state (orbax, :mod:`jaxhpo.checkpoint`) and, as JSON
metadata, everything else the host loop carries: the step, the next member id, the population's
layout, the strategy's state, the book and how far the tables got. A resumed run ends as the
uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from jaxhpo import parallel
from jaxhpo.checkpoint import Checkpointer, CheckpointRefusedError, pack_tree, unpack_tree
from jaxhpo.config import Config
from jaxhpo.run.progress import notice

if TYPE_CHECKING:
    from jaxhpo.run.book import Loop
    from jaxhpo.run.prepare import Prepared


def config_fingerprint(cfg: Config) -> str:
    """A hash of everything that shapes the run (the config minus where it is written)."""
    data = {k: v for k, v in cfg.to_dict().items() if k != "out_dir"}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(checkpointer: Checkpointer, loop: Loop) -> None:
    """Saves the state the segment after ``loop.segment`` starts from."""
    meta = {
        "segment": loop.segment,
        "step": loop.step,
        "next_id": loop.next_id,
        "size": loop.pop.size,
        "layout": loop.population.layout(loop.pop),
        "strategy": pack_tree(loop.state),
        "book": loop.book.dump(),
        "metrics_rows": loop.writer.rows,
        "events": loop.writer.events,
        "elapsed_s": time.perf_counter() - loop.t0,
        "config": config_fingerprint(loop.cfg),
    }
    checkpointer.save(loop.segment, {"pop": loop.pop}, meta)


def continue_from(loop: Loop, restored: tuple, run_name: str) -> None:
    """Sets ``loop`` to a restored checkpoint ``(segment, tree, meta)``: the population, the
    strategy's state, the step, the book and the clock, and the last observation (rebuilt from
    the book) that the strategy decides on next."""
    done_segment, tree, meta = restored
    loop.population = loop.population.from_layout(meta.get("layout", meta))
    loop.pop = loop.population.place(tree["pop"])
    loop.state = loop.prep.strategy.restore_state(unpack_tree(meta["strategy"]), loop.state)
    loop.step, loop.next_id, loop.segment = int(meta["step"]), int(meta["next_id"]), done_segment
    loop.book.load(meta["book"])
    loop.t0 -= float(meta["elapsed_s"])
    population, pop = loop.population, loop.pop
    hparams = population.get_hparams(pop)
    ids = parallel.to_host(pop.member_id)
    obs = loop.observation(
        loop.step,
        ids,
        parallel.to_host(dict(hparams)),
        loop.book.last_metrics(ids),
        parallel.to_host(pop.diverged),
        parallel.to_host(pop.active),
    )
    loop.obs = dataclasses.replace(obs, groups=population.groups(pop), frozen=population.frozen)
    notice(f"resuming {run_name} after segment {done_segment} (step {loop.step})")


def restore(checkpointer: Checkpointer | None, prep: Prepared, root_key) -> tuple | None:
    """The latest checkpoint of a run that restores, ``(segment, tree, meta)`` (``None`` if
    none; corrupted ones are reported and skipped)."""
    if checkpointer is None:
        return None

    fingerprint = config_fingerprint(prep.cfg)

    def abstract(meta):
        if meta.get("config") != fingerprint:
            raise CheckpointRefusedError(
                f"RUN_DIR: the checkpoints in {checkpointer.directory} were written by a "
                "different config than this run directory's config.yaml; nothing was changed"
            )
        layout = meta.get("layout", meta)
        population = prep.population.from_layout(layout)
        return {"pop": population.abstract(layout, root_key)}

    found = checkpointer.restore_latest(abstract, report=lambda m: notice(f"warning: {m}"))
    if found is None:
        notice("no checkpoint to resume from: the run starts again from step 0")
    return found


def finished(run_dir: Path) -> bool:
    """Whether the run's end completed: ``members.csv`` written and ``run.json`` not saying
    ``"finished": false`` (runs from before the mark have none)."""
    if not (run_dir / "members.csv").exists():
        return False
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return True
    return info.get("finished", True) is not False


def _committed(run_dir: Path) -> bool:
    """Whether ``RUN_DIR/checkpoints`` holds a committed checkpoint."""
    ckpts = run_dir / "checkpoints"
    return ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())


def _check_tables(run_dir: Path) -> None:
    """A run with checkpoints needs the tables they count rows of: refused before anything is
    built when one is missing (or not a file)."""
    ckpts = run_dir / "checkpoints"
    if ckpts.exists() and not ckpts.is_dir():
        raise ValueError(f"RUN_DIR: {ckpts} is not a folder of checkpoints")
    if not (run_dir / "config.yaml").read_text().strip():
        raise ValueError(f"RUN_DIR: {run_dir / 'config.yaml'} is empty")
    if not ckpts.is_dir() or not any(p.name.isdigit() for p in ckpts.iterdir()):
        return  # no checkpoint: the run starts again from step 0 and writes new tables
    for name in ("metrics.csv", "events.jsonl"):
        if not (run_dir / name).is_file():
            raise ValueError(
                f"RUN_DIR: {name} is missing from {run_dir} (its checkpoints count its rows); "
                "the run cannot be resumed"
            )
