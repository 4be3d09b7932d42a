"""What a run shows while it trains: the progress bar, plain-text progress lines when stderr is
not a terminal, and notices that ``--quiet`` does not hide."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from jaxhpo.config import Config
from jaxhpo.notices import notice  # noqa: F401  (re-exported for the run's modules)


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

    started: float = dataclasses.field(default_factory=time.perf_counter)
    first: tuple[int, float] | None = None  # (segment, time) after the first trained segment
    last_phase: str = ""  # what the run does now, for the line that ends the bar
    segment: int = 0

    def eta(self, segment: int) -> str:
        """Time left, from the segments after the first one (which includes compiling)."""
        now = time.perf_counter()
        if self.first is None:
            self.first = (segment, now)
            return f"first segment in {now - self.started:.1f}s"
        done, since = segment - self.first[0], now - self.first[1]
        if done <= 0:
            return "ETA after the next segment"
        left = max(self.n_segments - segment, 0) * since / done
        return f"ETA {int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}"

    def show(self, segment: int, info: str) -> None:
        done = min(self.total, segment * self.segment_steps)
        desc = f"{self.name}: segment {segment}/{self.n_segments}"
        eta = self.eta(segment)
        self.segment = segment
        self.progress.update(self.bar, completed=done, info=f"{info} | {eta}", description=desc)
        if not self.console.is_terminal and not self.quiet:
            # one line per segment, readable in a log file and an 80-column terminal: the
            # step, the best value and the ETA first, then what else fits
            line = f"segment {segment}/{self.n_segments} step {done}/{self.total}"
            parts = [p.strip() for p in info.split("|")]
            ranked = [p for p in parts if p.startswith("best")]
            ranked += [p for p in parts if p not in ranked]
            line = f"{line} | {ranked[0]} | {eta}" if ranked else f"{line} | {eta}"
            for part in ranked[1:]:
                if len(line) + len(part) + 3 <= 80:
                    line += f" | {part}"
            self.console.print(line, soft_wrap=True)

    def phase(self, text: str) -> None:
        """What the run does now (compiling, checkpointing, testing), in the bar's info."""
        self.last_phase = text
        self.progress.update(self.bar, info=text)
        if not self.console.is_terminal and not self.quiet:
            self.console.print(text, soft_wrap=True)

    def at_step(self, step: int) -> None:
        self.progress.update(self.bar, completed=step)

    def final_line(self) -> str:
        """The line that replaces the bar on a terminal when the training ends: whole, never cut
        to the terminal's width (the bar's last render was, ending in a stray fragment)."""
        elapsed = time.perf_counter() - self.started
        done = self.progress.tasks[0].completed if self.progress.tasks else 0
        line = (
            f"{self.name}: segment {self.segment}/{self.n_segments}, "
            f"step {int(done)}/{self.total} in {elapsed:.1f}s"
        )
        return f"{line}; {self.last_phase}" if self.last_phase else line


@contextlib.contextmanager
def progress_line(
    cfg: Config, console: Console, quiet: bool, started: float | None = None
) -> Iterator[ProgressLine]:
    """The progress bar of a run of ``cfg``, shown while the block runs; ``started`` (a
    ``time.perf_counter()``) is when the run began, for the time to the first segment."""
    total, seg = cfg.train.steps, cfg.train.segment_steps
    n_segments = -(-total // seg)
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    ]
    # No bar off a terminal (the plain lines say it all; a bar stopping there printed its last
    # render after the run's last line, cut to 80 columns, and a blank line). On a terminal the
    # bar is transient: one whole line replaces it, and it stays where a run stopped on an error
    # or Ctrl-C.
    bar_off = quiet or not console.is_terminal
    with Progress(*columns, console=console, disable=bar_off, transient=True) as progress:
        bar = progress.add_task(
            f"{cfg.name}: segment 0/{n_segments}", total=total, info="compiling the segment"
        )
        line = ProgressLine(progress, bar, console, quiet, cfg.name, n_segments, seg, total)
        line.started = time.perf_counter() if started is None else started
        try:
            yield line
        except BaseException:
            progress.live.transient = False
            raise
    if console.is_terminal and not quiet:
        console.print(line.final_line(), soft_wrap=True, highlight=False)
