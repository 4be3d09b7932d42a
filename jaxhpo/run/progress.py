"""What a run shows while it trains: the progress bar, plain-text progress lines when stderr is
not a terminal, and notices that ``--quiet`` does not hide."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from jaxhpo.config import Config


@dataclasses.dataclass
class ProgressLine:
    """The progress bar and plain-text progress lines of a run."""

    progress: Progress
    bar: Any
    console: Console
    quiet: bool
    name: str
    n_segments: int
    segment_steps: int
    total: int

    def show(self, segment: int, info: str) -> None:
        done = min(self.total, segment * self.segment_steps)
        desc = f"{self.name}: segment {segment}/{self.n_segments}"
        self.progress.update(self.bar, completed=done, info=info, description=desc)
        if not self.console.is_terminal and not self.quiet:
            self.console.print(f"segment {segment}/{self.n_segments} step {done}: {info}")

    def at_step(self, step: int) -> None:
        self.progress.update(self.bar, completed=step)


@contextlib.contextmanager
def progress_line(cfg: Config, console: Console, quiet: bool) -> Iterator[ProgressLine]:
    """The progress bar of a run of ``cfg``, shown while the block runs."""
    total, seg = cfg.train.steps, cfg.train.segment_steps
    n_segments = -(-total // seg)
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, disable=quiet) as progress:
        bar = progress.add_task(
            f"{cfg.name}: segment 0/{n_segments}", total=total, info="compiling"
        )
        yield ProgressLine(progress, bar, console, quiet, cfg.name, n_segments, seg, total)


def notice(message: str) -> None:
    """A line on stderr that ``--quiet`` does not hide (resume and checkpoint warnings)."""
    print(f"jaxhpo: {message}", file=sys.stderr, flush=True)
