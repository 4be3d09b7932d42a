"""``jaxhpo report RUN_DIR``: plots and a markdown summary from a run directory.

Plots (``RUN_DIR/plots/``):

* ``curves_<hparam>.png`` — validation loss against step, one line per member, coloured by that
  hyperparameter (log colour scale for log-scaled dimensions);
* ``final_vs_hparams.png`` — final validation loss against each searched hyperparameter;
* ``train_curves.png`` — training loss against step;
* ``lineage.png`` (runs with ``exploit`` events) — one row per member (x = step, y = member id),
  its evaluations coloured by the objective, an arrow from parent to child at every exploit, and
  the best member's ancestry (the members whose weights it continues) highlighted in red;
* ``hparam_trajectories.png`` (runs where a searched hyperparameter changes during a member's
  life) — one panel per such hyperparameter: its value against step for every member (thin step
  plots; log axis for log-scaled dimensions) and the best member's reconstructed schedule (bold).

Each curve plot draws the best member bold red, leaves a dwarfing first evaluation out of its
y-range and plots generation-based runs per generation (see :mod:`jaxhpo.reporting.plots`).

``summary.md`` names the best member (best final objective among members that did not diverge) with
its hyperparameters and its test metrics, the steps each member trained; a *Budget* line (member-
steps used, members stopped per step) when ``run.json`` has ``member_steps`` or members were
stopped; a *Lineage* section (number of exploits, the best member's schedule, merged where
hyperparameters stay equal) when members exploited others.

``RUN_DIR/best_schedule.csv`` (written when members exploited others or hyperparameters changed
during a member's life; one row per segment, see :func:`jaxhpo.lineage.lineage_schedule`) is the
best member's schedule, to re-run as a fixed schedule (:func:`jaxhpo.lineage.read_schedule`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from jaxhpo.lineage import exploit_events, lineage_schedule, write_schedule
from jaxhpo.reporting import choices as report_choices
from jaxhpo.reporting.front import Front, front_section, plot_front, plot_hypervolume
from jaxhpo.reporting.markdown import (
    space_section,
    strategy_section,
    summary_markdown,
)
from jaxhpo.reporting.plots import (
    member_starts,
    plot_curves,
    plot_final,
    plot_hparam_trajectories,
    plot_lineage,
    plot_train,
)
from jaxhpo.results import best_member, final_members, hparam_columns, read_events, read_metrics
from jaxhpo.space import Space


def _searched(run_dir: Path, table: pd.DataFrame, hparam_names: list[str] | None) -> list[str]:
    """Hyperparameters that vary across members (in config order when known)."""
    names = list(space_section(run_dir)) or list(hparam_names or [])
    return [n for n in names if n in table and table[n].nunique() > 1]


def _changing(run_dir: Path, table: pd.DataFrame, hparam_names: list[str] | None) -> list[str]:
    """Searched hyperparameters whose value changes during some member's life (PBT)."""
    names = list(space_section(run_dir)) or list(hparam_names or [])
    by_member = table.groupby("member")
    return [n for n in names if n in table and int(by_member[n].nunique().max()) > 1]


def _log_dims(run_dir: Path) -> set[str]:
    """Names of log-scaled dimensions of the run's search space."""
    try:
        space = Space.from_config(space_section(run_dir))
    except ValueError:
        return set()
    return {n for n in space.names if getattr(space[n], "log", False)}


def _read(run_dir: Path, name: str, fn):
    """``fn()``, reading ``run_dir/name``; what fails is a one-line ``ValueError`` naming it."""
    try:
        return fn()
    except (ValueError, OSError, KeyError) as e:  # UnicodeDecodeError, ParserError, JSON
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ValueError(
            f"RUN_DIR: {run_dir / name} cannot be read ({type(e).__name__}: {first})"
        ) from None


def _read_run(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The metrics table, the final members (an interrupted run has no members.csv: the last
    row of each member stands in) and run.json; a file that cannot be read, or a table with no
    row yet, is a one-line ``ValueError`` naming the file."""

    def read(name: str, fn):
        return _read(run_dir, name, fn)

    name = "metrics.parquet" if (run_dir / "metrics.parquet").exists() else "metrics.csv"
    table = read(name, lambda: read_metrics(run_dir))
    if table.empty:
        raise ValueError(
            f"RUN_DIR: {run_dir / name} has no rows yet (the run stopped before its first "
            "segment ended); nothing to report"
        )
    missing = [c for c in ("member", "step", "diverged") if c not in table.columns]
    if missing:
        raise ValueError(f"RUN_DIR: {run_dir / name} has no column {missing[0]!r}")
    if not all(pd.api.types.is_numeric_dtype(table[c]) for c in ("member", "step")):
        raise ValueError(f"RUN_DIR: {run_dir / name} has a member or step that is not a number")
    members_file = "members.csv" if (run_dir / "members.csv").exists() else name
    members = read(members_file, lambda: final_members(run_dir, table))
    info = read("run.json", lambda: run_info(run_dir))
    if not isinstance(info, dict):
        raise ValueError(f"RUN_DIR: {run_dir / 'run.json'} is not a JSON object")
    return table, members, info


def run_info(run_dir: Path) -> dict:
    path = Path(run_dir) / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_report(run_dir: str | Path) -> Path:
    """Writes ``plots/*.png`` and ``summary.md``; returns the summary path."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.csv").exists() and not (run_dir / "metrics.parquet").exists():
        raise ValueError(f"RUN_DIR: no metrics table in {run_dir} (is it a jaxhpo run directory?)")
    table, members, info = _read_run(run_dir)
    hparams = _searched(run_dir, table, info.get("hparam_names"))
    objective = info.get("objective", "val_loss")
    maximize = bool(info.get("maximize", False))
    events = _read(run_dir, "events.jsonl", lambda: read_events(run_dir))
    exploits = exploit_events(events)
    changing = _changing(run_dir, table, info.get("hparam_names") or hparam_columns(table))
    best = best_member(members, objective, maximize)
    best_id = None if best is None else int(best["member"])
    starts = member_starts(table, events)
    starts = starts if any(starts.values()) else None  # generation-based: per generation
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    _hparam_plots(run_dir, table, members, hparams, plots, objective, best_id, starts)
    plot_train(table, plots / "train_curves.png", best=best_id, starts=starts)

    schedule, note = None, None
    if exploits or changing:
        if best_id is None:
            note = "every member diverged."
        else:
            try:
                schedule = lineage_schedule(table, events, best_id)
            except ValueError as e:
                note = str(e)
            else:
                write_schedule(schedule, run_dir / "best_schedule.csv")
    if exploits:
        plot_lineage(table, events, plots / "lineage.png", objective, schedule, best_id)
    if changing:
        plot_hparam_trajectories(
            table,
            changing,
            plots / "hparam_trajectories.png",
            _log_dims(run_dir),
            schedule,
            best_id,
        )
    front_lines = _front(run_dir, table, members, hparams, plots)
    summary = run_dir / "summary.md"
    summary.write_text(
        summary_markdown(
            run_dir,
            table,
            members,
            hparams,
            objective,
            maximize,
            events=events,
            info=info,
            schedule=schedule,
            schedule_note=note,
            front=front_lines,
        )
    )
    return summary


def _hparam_plots(run_dir, table, members, hparams, plots: Path, objective, best_id, starts):
    """Curves coloured by each searched hyperparameter, final values against them (and by
    each searched choice of optimizer or schedule)."""
    log_dims = _log_dims(run_dir)
    for name in hparams:
        plot_curves(
            table,
            name,
            plots / f"curves_{name}.png",
            objective,
            log=name in log_dims,
            best=best_id,
            starts=starts,
        )
    if hparams:
        plot_final(
            members,
            hparams,
            plots / "final_vs_hparams.png",
            objective,
            log_dims=log_dims,
            best=best_id,
        )
    labels = report_choices.labels_of(space_section(run_dir))
    for choice in [c for c in labels if c in hparams]:
        path = plots / f"final_vs_hparams_by_{choice}.png"
        report_choices.plot_final_by_choice(
            members, hparams, labels, choice, path, objective, log_dims
        )


def _front(run_dir: Path, table, members, hparams, plots: Path) -> list[str]:
    """Several objectives: the front's section of summary.md, its plot and the hypervolume
    curve (``plots/hypervolume.csv`` too); nothing for one objective."""
    front = Front.of(strategy_section(run_dir))
    if front is None or any(c not in members for c in front.columns()):
        return []
    plot_front(front, members, plots / "pareto_front.png")
    curve = plot_hypervolume(front, table, plots / "hypervolume.png")
    curve.to_csv(plots / "hypervolume.csv", index=False)
    return front_section(front, members, hparams)
