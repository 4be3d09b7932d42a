"""One-line notices on stderr, for every layer (a task reading its corpus, a resume)."""

from __future__ import annotations

import sys


def notice(message: str) -> None:
    """A line on stderr that ``--quiet`` does not hide (resume and checkpoint warnings)."""
    print(f"jaxhpo: {message}", file=sys.stderr, flush=True)
