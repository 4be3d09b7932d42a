"""``jaxhpo resume RUN_DIR``: an interrupted run directory continued from its latest good
checkpoint, refused in one line before anything is built when it cannot be.

The checkpoints themselves (save, restore, what a resumed loop starts from) are
:mod:`jaxhpo.run.resume`'s, which the loop imports; this entry point imports the loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from jaxhpo import __version__, parallel, refs
from jaxhpo.config import Config, build, load_file
from jaxhpo.results import run_dir_lock
from jaxhpo.run.loop import run
from jaxhpo.run.resume import _check_tables, _committed, finished
from jaxhpo.run.validate import strategy_class, upgrade_strategy_section


def resume_run(
    run_dir: str | Path,
    *,
    console: Console | None = None,
    quiet: bool = False,
    callbacks: Sequence[Any] = (),
):
    """Continues an interrupted run directory from its latest good checkpoint (a run killed
    during its end as well: the end is done again). ``callbacks`` as for
    :func:`jaxhpo.run.loop.run` (their ``on_start`` says where the run resumed).

    A task (or optimizer) file that ``config.yaml`` names but that moved is looked for by its
    name in ``RUN_DIR`` and its parent (:func:`jaxhpo.refs.looking_in`); ``config.yaml`` and the
    checkpoints keep the path they were written with.

    Raises:
      ValueError: ``RUN_DIR`` is not a run directory, or already finished; a task file found
        nowhere (one line naming the paths tried).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise ValueError(f"RUN_DIR: {run_dir} has no config.yaml (is it a jaxhpo run directory?)")
    with refs.looking_in(run_dir, run_dir.parent):
        return _resume_in(run_dir, console, quiet, callbacks)


def _resume_in(run_dir: Path, console: Console | None, quiet: bool, callbacks: Sequence[Any]):
    """:func:`resume_run` of a run directory with a ``config.yaml``."""
    # Held from before the checks to the end of the run: a run directory another process is
    # writing is refused before anything is built (the OS drops a killed process's lock).
    with run_dir_lock(run_dir) if parallel.is_writer() else contextlib.nullcontext():
        if finished(run_dir):
            raise ValueError(f"RUN_DIR: {run_dir} finished already (members.csv is written)")
        _check_tables(run_dir)
        data = load_file(run_dir / "config.yaml")
        section = data.get("strategy")
        if isinstance(section, dict) and upgrade_strategy_section(section) is not section:
            raise ValueError(
                f"RUN_DIR: {run_dir} was written by jaxhpo 0.1 (one flat strategy section); "
                f"jaxhpo {__version__} reads it for reports and warm starts but cannot resume it"
            )
        cfg = build(Config(), data)
        if cfg.train.compiled:
            raise ValueError("RUN_DIR: a train.compiled run has no checkpoints to resume from")
        if parallel.is_writer() and not _committed(run_dir):
            # what a killed start left outside the run directory (an Optuna database study)
            strategy_class(cfg.strategy.name).restart_from_scratch(cfg, run_dir)
        return run(
            cfg, run_dir=run_dir, console=console, quiet=quiet, resume=True, callbacks=callbacks
        )
