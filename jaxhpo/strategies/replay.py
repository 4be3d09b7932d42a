"""Replay a fixed hyperparameter schedule: PBT's discovered schedule, re-run from scratch.

PBT's result is a member whose weights were trained under a *schedule* of hyperparameters,
stitched together from its ancestors by exploit (Jaderberg et al. 2017, Section 4: the
discovered schedules). :func:`jaxhpo.lineage.lineage_schedule` reconstructs that schedule from
a run directory; this strategy trains every member of a new population under it, as a fixed
schedule (members differ only in their initialisation seeds). With the same seed and a
deterministic task, replaying the best member's schedule reproduces its weights.

``strategy.schedule`` names a run directory (its best member's schedule) or a CSV file written
by :func:`jaxhpo.lineage.write_schedule` (``RUN_DIR/best_schedule.csv``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jaxhpo.lineage import lineage_schedule_from_dir, read_schedule
from jaxhpo.space import Space
from jaxhpo.strategies.base import EmptyState, Observation, PopulationUpdate, Strategy

SCHEDULE_META = ("start_step", "end_step", "source_member")


def load_schedule(source: str | Path) -> pd.DataFrame:
    """A schedule from a run directory (its best member) or a schedule CSV file."""
    path = Path(source).expanduser()
    if path.is_dir():
        return lineage_schedule_from_dir(path)
    if path.is_file():
        return read_schedule(path)
    raise ValueError(f"strategy.schedule: no run directory or schedule file at {source}")


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """``strategy:`` settings of replay."""

    #: a run directory (its best member's schedule) or a schedule CSV
    schedule: str | None = None


class Replay(Strategy):
    """Trains every member under one fixed schedule (a DataFrame with ``start_step``,
    ``end_step`` and one column per hyperparameter; see the module docstring): ``table``, or
    the one ``strategy.schedule`` names."""

    name = "replay"
    Config = ReplayConfig
    State = EmptyState  # the schedule is a setting: nothing changes between updates

    def __init__(
        self, config: ReplayConfig | None = None, /, *, table: pd.DataFrame | None = None, **fields
    ):
        super().__init__(config, **fields)
        if table is None:
            if not self.config.schedule:
                raise ValueError(
                    "strategy.schedule: replay needs a run directory or a schedule CSV "
                    "(e.g. strategy.schedule=runs/lm-pbt-.../best_schedule.csv)"
                )
            table = load_schedule(self.config.schedule)
        if len(table) == 0:
            raise ValueError("strategy.schedule: the schedule is empty")
        self.schedule = table.reset_index(drop=True)
        self.names = [c for c in self.schedule.columns if c not in SCHEDULE_META]

    def check(self, train_steps: int, segment_steps: int) -> None:
        starts = self.schedule["start_step"].to_numpy()
        off = starts[starts % segment_steps != 0]
        if off.size:
            raise ValueError(
                f"strategy.schedule: the schedule changes at step {int(off[0])}, not a multiple "
                f"of train.segment_steps={segment_steps}"
            )

    def _row(self, step: int) -> pd.Series:
        """The schedule row in force for the segment starting at ``step`` (the last row
        stays in force after the schedule ends)."""
        rows = self.schedule[self.schedule["start_step"] <= step]
        return rows.iloc[-1] if len(rows) else self.schedule.iloc[0]

    def init(self, seed: int, space: Space, size: int | None):
        if size is None or size < 1:
            raise ValueError(f"population.size: replay needs a size >= 1, got {size}")
        row = self._row(0)
        return EmptyState(), {k: np.full(size, float(row[k])) for k in self.names}

    def update(self, state: Any, obs: Observation) -> tuple[Any, PopulationUpdate]:
        new, old = self._row(obs.step), self._row(max(obs.step - 1, 0))
        changed = {
            k: np.full(len(obs.member_id), float(new[k]))
            for k in self.names
            if float(new[k]) != float(old[k]) and np.isfinite(float(new[k]))
        }
        return state, PopulationUpdate(hparams=changed or None)
