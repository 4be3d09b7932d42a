"""The host loop: segments -> evaluate -> strategy -> log.

::

    prepare (jaxhpo.run.prepare) ──> population.init, or continue from a checkpoint
    repeat until train.steps:
        train_segment   one jitted call, K steps, all members
        evaluate        one jitted call, validation metrics [P]
        log rows        metrics.csv (flushed), progress bar
        strategy.update ──> PopulationUpdate, checked and applied by apply_update (update.py)
        checkpoint      every train.checkpoint_every segments (resume.py)
    evaluate on test; members.csv, metrics.parquet, summary.md, plots (finish.py)

With ``train.compiled`` the whole repeat is one program (compiled.py).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from rich.console import Console

from jaxhpo import compile_cache, parallel
from jaxhpo.checkpoint import Checkpointer, unpack_tree
from jaxhpo.config import Config
from jaxhpo.reporting.callbacks import CallbackList
from jaxhpo.reporting.optuna_export import OptunaExport
from jaxhpo.reporting.tensorboard import TensorBoard
from jaxhpo.results import RunWriter, new_run_dir, run_dir_lock
from jaxhpo.run.book import Book, Loop, config_file, nanmean_rows, table_hparams
from jaxhpo.run.compiled import run_compiled
from jaxhpo.run.feed import feed_segment
from jaxhpo.run.finish import RunResult, finish
from jaxhpo.run.oom import explain_oom
from jaxhpo.run.prepare import Prepared, prepare
from jaxhpo.run.progress import progress_line
from jaxhpo.run.resume import continue_from, restore, save_checkpoint
from jaxhpo.run.update import apply_update


def run(
    cfg: Config,
    *,
    prepared: Prepared | None = None,
    run_dir: Path | None = None,
    console: Console | None = None,
    quiet: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
) -> RunResult:
    """Runs one study and writes its run directory. Returns the directory and final members.

    With ``resume``, ``run_dir`` is an existing run directory: the run continues from its latest
    checkpoint that restores (see :mod:`jaxhpo.checkpoint`) and ends as the uninterrupted run
    would have (use :func:`~jaxhpo.run.resume_dir.resume_run`). ``callbacks`` (see
    :mod:`jaxhpo.reporting.callbacks`) get every evaluation's rows and events, after TensorBoard's
    and the
    Optuna export's (``report`` settings)."""
    prep = prepared or prepare(cfg)
    cfg = prep.cfg  # checked: the strategy's settings complete (config.yaml)
    # Several processes (multi-host): every process computes, process 0 alone writes the run
    # directory and shows progress; the others write into a scratch folder removed at the end.
    writes = parallel.is_writer()
    console = console or Console(stderr=True, quiet=quiet or not writes)
    if writes:
        run_dir = Path(run_dir) if run_dir else new_run_dir(cfg.out_dir, cfg.name)
        run_dir.mkdir(parents=True, exist_ok=True)
    run_dir = _agree_path(run_dir)
    # One process writes a run directory (a second `jaxhpo resume` on it is refused).
    with run_dir_lock(run_dir) if writes else contextlib.nullcontext():
        return _run_in(cfg, prep, run_dir, writes, console, quiet, resume, callbacks)


def _run_in(
    cfg: Config,
    prep: Prepared,
    run_dir: Path,
    writes: bool,
    console: Console,
    quiet: bool,
    resume: bool,
    callbacks: Sequence[Any],
) -> RunResult:
    """:func:`run` in its run directory (held by this process when it ``writes``)."""
    out_dir = run_dir if writes else Path(tempfile.mkdtemp(prefix="jaxhpo-process-"))
    checkpointer = None
    if cfg.train.checkpoint_every and not cfg.train.compiled:
        checkpointer = Checkpointer(run_dir / "checkpoints", cfg.train.keep_checkpoints)
    cache = compile_cache.enable(cfg.train.compile_cache)  # before the first compile
    root_key = jax.random.key(cfg.seed)
    restored = restore(checkpointer, prep, root_key) if resume else None
    hooks = _callbacks(cfg, callbacks) if writes else None
    writer = _open_writer(cfg, prep, run_dir, out_dir, restored, resume, writes, hooks)
    writer.update_info({"compile_cache": cache})
    if writes:  # e.g. the Optuna strategy's study named in run.json, linked to the run
        state = prep.strategy_state
        if restored:  # the checkpoint's state, typed again (static fields from the fresh one)
            state = prep.strategy.restore_state(unpack_tree(restored[2]["strategy"]), state)
        writer.update_info(prep.strategy.attach(state, run_dir))
    loop = _start(cfg, prep, writer, root_key, restored, run_dir.name)
    if checkpointer and not restored:  # segment 0: a kill from here on resumes from it
        save_checkpoint(checkpointer, loop)
    with progress_line(cfg, console, quiet, prep.started) as show:
        if cfg.train.compiled:
            run_compiled(loop, show)
        show.at_step(loop.step)
        if not cfg.train.compiled:
            _train_segments(loop, checkpointer, console, show.n_segments, show.show)
        show.phase("testing the final members, writing the run directory")
    return finish(loop, run_dir, out_dir, writes, console)


def _agree_path(path: Path | None) -> Path:
    """Process 0's ``path`` on every process (one run directory for a multi-process run)."""
    if jax.process_count() == 1:
        return path
    from jax.experimental import multihost_utils

    raw = np.zeros(4096, np.uint8)
    if parallel.is_writer():
        b = str(Path(path).absolute()).encode()
        raw[: len(b)] = np.frombuffer(b, np.uint8)
    raw = np.asarray(multihost_utils.broadcast_one_to_all(raw))
    return Path(bytes(raw[raw > 0]).decode())


def _open_writer(
    cfg: Config,
    prep: Prepared,
    run_dir: Path,
    out_dir: Path,
    restored: tuple | None,
    resume: bool,
    writes: bool,
    hooks: CallbackList | None = None,
) -> RunWriter:
    """The run directory's tables: new ones with the config and run information, or, when
    resuming, the existing ones cut back to the checkpoint's rows and events."""
    population, task = prep.population, prep.task
    names = table_hparams(prep)  # what the user searched or fixed (book.py)
    # Killed before the first checkpoint: new tables (a kill may have left them without their
    # header), the run starts again from step 0.
    counts = (restored[2]["metrics_rows"], restored[2]["events"]) if restored else None
    writer = RunWriter(
        out_dir,
        run_dir.name,
        names,
        task.metric_names,
        resume=counts if writes else None,
        callbacks=hooks,
    )
    if resume:
        info = json.loads((run_dir / "run.json").read_text())
        writer.update_info({"resumed": int(info.get("resumed", 0)) + 1})
        if hooks is not None:  # side outputs brought to the checkpoint (callbacks.py)
            hooks.resume(run_dir, info, int(restored[2]["step"]) if restored else -1)
        return writer
    metric = cfg.strategy.metric
    writer.write_config(
        config_file(cfg),
        {
            "task": task.describe(),
            "population_size": prep.size,
            "member_mode": population.mode,
            "member_mode_reason": getattr(population, "mode_reason", population.mode),
            "member_devices": population.devices,
            "data_devices": population.data_devices,
            "devices": [str(d) for d in jax.devices()],
            "jax": jax.__version__,
            "hparam_names": list(names),
            "searched": list(prep.space.searched),
            "objective": f"val_{metric}",
            "maximize": metric in task.maximized,
            "strategy": prep.strategy.name,
            "compiled": cfg.train.compiled,
            "finished": False,  # True once the run's end completed (finish.py)
        },
    )
    if hooks is not None:
        hooks.on_start(run_dir, json.loads((run_dir / "run.json").read_text()))
    return writer


def _callbacks(cfg: Config, extra: Sequence[Any]) -> CallbackList:
    """TensorBoard (``report.tensorboard``), the live Optuna export
    (``report.optuna_storage``), then the user's callbacks."""
    hooks: list[Any] = []
    if cfg.report.tensorboard:
        hooks.append(TensorBoard())
    if cfg.report.optuna_storage:
        hooks.append(OptunaExport(cfg.report.optuna_storage, cfg.report.optuna_study))
    return CallbackList([*hooks, *extra])


def _start(
    cfg: Config,
    prep: Prepared,
    writer: RunWriter,
    root_key: jax.Array,
    restored: tuple | None,
    run_name: str,
) -> Loop:
    """The loop at its start: the first population, initialised and observed at step 0, or
    the state of a restored checkpoint."""
    population = prep.population
    loop = Loop(
        cfg=cfg,
        prep=prep,
        writer=writer,
        root_key=root_key,
        population=population,
        data=(),
        book=Book(prep.task.metric_names),
        state=prep.strategy_state,
        next_id=cfg.population.first_member + prep.size,
    )
    with explain_oom(population, prep.size, prep.task.train_data, cfg.train.segment_steps):
        ids = cfg.population.first_member + np.arange(prep.size)
        loop.pop = population.init(root_key, ids, prep.hparams)
    loop.data = population.run_data()
    if restored:
        continue_from(loop, restored, run_name)
    else:
        loop.obs = loop.observe(0, np.full(prep.size, np.nan))
    return loop


def _train_segments(loop: Loop, checkpointer, console: Console, n_segments: int, show) -> None:
    """The segments after ``loop.segment``, each trained, observed and decided on, until the
    run's end, the budget, or the strategy ends the study."""
    cfg = loop.cfg
    total, seg = cfg.train.steps, cfg.train.segment_steps
    for segment in range(loop.segment + 1, n_segments + 1):
        k = min(seg, total - loop.step)
        n_training = int(np.sum(loop.obs.active & ~loop.obs.diverged))
        if _over_budget(loop):  # before the first segment (after it: _decide)
            break
        dt = _train_segment(loop, segment, k)
        show(segment, loop.status(k, dt, n_training, int(loop.obs.diverged.sum())))
        if not _decide(loop, n_segments):
            break
        if checkpointer and segment % cfg.train.checkpoint_every == 0:
            save_checkpoint(checkpointer, loop)  # the state the next segment starts from
    if _over_budget(loop):
        console.print(f"budget of {cfg.train.budget:,} member-steps reached")


def _train_segment(loop: Loop, segment: int, k: int) -> float:
    """Trains segment ``segment`` (``k`` steps) and observes the population after it; returns
    the seconds training took."""
    seg = loop.cfg.train.segment_steps
    feed_segment(loop, seg, k)  # host-fed data (task.data): this segment's batches
    population, train_data = loop.population, loop.data[0]
    steps_before = int(np.sum(parallel.to_host(loop.pop.step)))
    ts = time.perf_counter()
    # Always a K=segment_steps program; a shorter last segment masks the extra steps.
    with explain_oom(population, loop.pop.size, train_data, seg):
        loop.state, loop.pop, losses = loop.prep.strategy.train_segment(
            loop.state, population, loop.pop, loop.data[:2], seg, k
        )
    losses = parallel.to_host(losses)[:, :k]
    dt = time.perf_counter() - ts
    loop.timings["train_s"] += dt
    if loop.timings["first_segment_s"] is None:
        loop.timings["first_segment_s"] = dt
        # from prepare() to the first trained segment: building, compiling (or loading from
        # the compilation cache) and training it
        loop.timings["first_trained_segment_s"] = time.perf_counter() - loop.prep.started
    loop.step += k
    loop.segment = segment
    loop.obs = loop.observe(segment, nanmean_rows(losses))
    loop.book.member_steps += int(np.sum(parallel.to_host(loop.pop.step))) - steps_before
    return dt


def _over_budget(loop: Loop) -> bool:
    """Whether the next segment would pass ``train.budget`` (member-steps), counting the
    members the last observation left training."""
    budget = loop.cfg.train.budget
    k = min(loop.cfg.train.segment_steps, loop.cfg.train.steps - loop.step)
    n_training = int(np.sum(loop.obs.active & ~loop.obs.diverged))
    return bool(budget) and loop.book.member_steps + k * n_training > budget


def _decide(loop: Loop, n_segments: int) -> bool:
    """Tells the strategy the last observation and applies its update; False when the study
    ends here (the strategy is done, this was the last segment, or the budget allows no
    other)."""
    # The strategy is told every result, the last one included; an update is applied only
    # while training goes on, so the final table describes the members evaluated (a re-pack
    # or a new generation after the last segment would leave members no one evaluated).
    loop.state, upd = loop.prep.strategy.update(loop.state, loop.obs)
    if upd.done or loop.segment == n_segments or _over_budget(loop):
        # A study the strategy ends keeps the record of why (e.g. the last stops); a decision
        # after the last segment is not applied and not recorded.
        for ev in upd.events if upd.done else ():
            loop.writer.event({"step": loop.step, "applied": False, **ev})
        return False
    for ev in upd.events:
        loop.writer.event({"step": loop.step, **ev})
    loop.population, loop.pop, loop.next_id = apply_update(
        loop.population, loop.pop, upd, loop.root_key, loop.next_id
    )
    return True
