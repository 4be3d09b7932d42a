"""The progress line ends cleanly (issue 28, friction 8): a run's last line is its own, not the
bar's last render cut to the width (``lm-random: segment 8/8   testing the final members,
writing the run directory 0…``) printed after it."""

import io
import re

import pytest
from rich.console import Console

from jaxhpo.config import Config
from jaxhpo.run.progress import progress_line

PHASE = "testing the final members, writing the run directory"


def _run(terminal: bool, fail: bool = False, buf: io.StringIO | None = None) -> str:
    cfg = Config()
    cfg.train.steps, cfg.train.segment_steps = 40, 10
    buf = io.StringIO() if buf is None else buf
    console = Console(file=buf, force_terminal=terminal, width=80)
    with progress_line(cfg, console, quiet=False) as show:
        for segment in range(1, 5):
            show.show(segment, "900 member-steps/s | 80 member-steps | best val loss 3.5792")
            if fail and segment == 2:
                raise KeyboardInterrupt
        show.phase(PHASE)
    console.print("run directory: somewhere")
    return buf.getvalue()


def test_progress_line_ends_cleanly_in_a_log():
    """Off a terminal: the plain lines, the phase, then the run's own last line; no bar render
    and no blank line after them."""
    out = _run(terminal=False)
    lines = out.splitlines()
    assert lines[-2:] == [PHASE, "run directory: somewhere"]
    assert "…" not in out and "━" not in out
    assert "" not in lines


def test_progress_line_ends_with_a_whole_line_on_a_terminal():
    """On an 80-column terminal the bar is erased at the end and one whole line (never cut with
    an ellipsis) says where the run stands; the run's own line comes last."""
    out = _run(terminal=True)
    # what stays on the screen: the text after the bar was erased (cursor up, clear line)
    tail = out.rsplit("\x1b[1A\x1b[2K", 1)[1]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", tail)
    assert plain.splitlines() == [
        plain.splitlines()[0],
        "run directory: somewhere",
    ]
    final = plain.splitlines()[0]
    assert final.startswith("run: segment 4/4, step 40/40 in ")
    assert final.endswith(PHASE) and "…" not in final


def test_progress_bar_stays_where_a_run_stopped():
    """Ctrl-C on a terminal leaves the bar's last state on the screen (not erased)."""
    buf = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        _run(terminal=True, fail=True, buf=buf)
    out = buf.getvalue()
    assert "\x1b[1A\x1b[2K" not in out  # not erased
    shown = [
        line for line in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out).split("\r") if line.strip()
    ]
    assert "best val loss 3.5792" in shown[-1]  # the bar at the segment it reached
