"""The run directory: everything a run produced, readable back with pandas.

Layout::

    RUN_DIR/
      config.yaml        the resolved configuration (re-runnable: jaxhpo run RUN_DIR/config.yaml)
      run.json           task, population size, devices, jax version; timings at the end
      metrics.csv        tidy table, one row per member per evaluation (appended as the run goes)
      metrics.parquet    the same table, written at the end
      members.csv        one row per member: hyperparameters, final validation and test metrics
      events.jsonl       lineage and strategy events (one JSON object per line)
      summary.md         best member, its hyperparameters, figures
      plots/*.png        written by ``jaxhpo report``

``metrics.csv`` is flushed after every evaluation, so a killed run keeps every row it reported.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

#: Columns every metrics row has, before the hyperparameter and metric columns.
BASE_COLUMNS = ("run", "member", "step", "segment", "wall_time", "diverged", "active")


def new_run_dir(out_dir: str | Path, name: str) -> Path:
    """``out_dir/name-YYYYmmdd-HHMMSS`` (with a numeric suffix if it exists)."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(out_dir) / f"{name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    path.mkdir(parents=True)
    return path


def _clean(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


class RunWriter:
    """Appends metrics rows and events to a run directory as the run goes."""

    def __init__(
        self, path: Path, run_name: str, hparam_names: Sequence[str], metric_names: Sequence[str]
    ):
        self.path = Path(path)
        self.run_name = run_name
        self.hparam_names = tuple(hparam_names)
        self.metric_names = tuple(metric_names)
        self.columns = (
            list(BASE_COLUMNS)
            + list(self.hparam_names)
            + ["train_loss"]
            + [f"val_{m}" for m in self.metric_names]
        )
        self._csv = open(self.path / "metrics.csv", "w", newline="")  # noqa: SIM115
        self._writer = csv.DictWriter(self._csv, fieldnames=self.columns)
        self._writer.writeheader()
        self._events = open(self.path / "events.jsonl", "w")  # noqa: SIM115

    def write_config(self, config: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        (self.path / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))
        (self.path / "run.json").write_text(json.dumps(dict(info), indent=2, default=str))

    def update_info(self, extra: Mapping[str, Any]) -> None:
        """Adds fields to ``run.json`` (timings, counts)."""
        path = self.path / "run.json"
        info = json.loads(path.read_text()) if path.exists() else {}
        info.update(extra)
        path.write_text(json.dumps(info, indent=2, default=str))

    def log(
        self,
        *,
        step: int,
        segment: int,
        wall_time: float,
        member_id: np.ndarray,
        hparams: Mapping[str, np.ndarray],
        train_loss: np.ndarray,
        metrics: Mapping[str, np.ndarray],
        diverged: np.ndarray,
        active: np.ndarray,
    ) -> None:
        """One row per member for one evaluation."""
        for i in range(len(member_id)):
            row = {
                "run": self.run_name,
                "member": int(member_id[i]),
                "step": int(step),
                "segment": int(segment),
                "wall_time": round(float(wall_time), 4),
                "diverged": bool(diverged[i]),
                "active": bool(active[i]),
                "train_loss": float(train_loss[i]),
            }
            row.update({k: float(hparams[k][i]) for k in self.hparam_names})
            row.update({f"val_{k}": float(metrics[k][i]) for k in self.metric_names})
            self._writer.writerow(row)
        self._csv.flush()

    def event(self, record: Mapping[str, Any]) -> None:
        self._events.write(json.dumps({k: _clean(v) for k, v in record.items()}, default=str))
        self._events.write("\n")
        self._events.flush()

    def close(self) -> None:
        self._csv.close()
        self._events.close()
        table = read_metrics(self.path)
        table.to_parquet(self.path / "metrics.parquet", index=False)


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """The tidy metrics table of a run (parquet if present, else the CSV written live)."""
    run_dir = Path(run_dir)
    pq = run_dir / "metrics.parquet"
    if pq.exists():
        return pd.read_parquet(pq)
    return pd.read_csv(run_dir / "metrics.csv")


def read_members(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / "members.csv")


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
