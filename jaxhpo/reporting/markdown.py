"""The markdown of ``summary.md``: the best member, every member's final values, the budget,
cross-validation, the ensemble, the best per searched choice and the lineage (see
:mod:`jaxhpo.reporting.report`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from jaxhpo.lineage import compress_schedule, exploit_events
from jaxhpo.reporting import choices as report_choices
from jaxhpo.results import best_member


def space_section(run_dir: Path) -> dict:
    """The ``space`` section of the run's ``config.yaml`` (empty when unreadable)."""
    return _section(run_dir, "space")


def strategy_section(run_dir: Path) -> dict:
    """The ``strategy`` section of the run's ``config.yaml`` (empty when unreadable)."""
    return _section(run_dir, "strategy")


def _section(run_dir: Path, name: str) -> dict:
    path = run_dir / "config.yaml"
    cfg = yaml.safe_load(path.read_text()) if path.exists() else {}
    return dict((cfg or {}).get(name) or {})


def summary_markdown(
    run_dir: Path,
    table: pd.DataFrame,
    members: pd.DataFrame,
    hparams: list[str],
    objective: str = "val_loss",
    maximize: bool = False,
    *,
    events: Sequence[Mapping[str, Any]] = (),
    info: Mapping[str, Any] | None = None,
    schedule: pd.DataFrame | None = None,
    schedule_note: str | None = None,
    front: Sequence[str] = (),
) -> str:
    """The markdown of ``summary.md``.

    ``events`` and ``info`` (``run.json``) add the *Budget* line and the *Lineage* section;
    ``schedule`` is the best member's :func:`~jaxhpo.lineage.lineage_schedule` (``schedule_note``
    says why there is none).
    """
    best = best_member(members, objective, maximize)
    labels = report_choices.labels_of(space_section(run_dir))  # optimizer/schedule names
    lines = [f"# Run `{run_dir.name}`", ""]
    n_div = int(members["diverged"].astype(bool).sum())
    lines.append(
        f"{len(members)} members, {trained_steps_text(members, table)}, "
        f"{n_div} diverged, {len(table)} metric rows."
    )
    lines.append("")
    budget = budget_line(table, events, info or {})
    if budget:
        lines.append(budget)
        lines.append("")
    lines.extend(best_section(best, members, hparams, labels, objective, maximize))
    lines.extend(front)  # several objectives: the Pareto front (jaxhpo.reporting.front)
    lines.extend(members_section(members, hparams, labels, objective, maximize))
    metrics = [c for c in members.columns if c.startswith(("val_", "test_"))]
    tests = [c for c in metrics if c.startswith("test_")]
    if tests and members[tests].isna().all(axis=1).any():
        lines.append(
            "Test metrics are computed for the members of the final population; members that "
            "left it earlier (earlier generations, compacted away) show `nan`."
        )
        lines.append("")
    lines.extend(ensemble_section((info or {}).get("ensemble")))
    lines.extend(cv_section(members, hparams, objective, maximize))
    lines.extend(
        report_choices.best_per_choice_section(members, labels, hparams, objective, maximize)
    )
    lines.extend(lineage_section(events, hparams, best, schedule, schedule_note))
    lines.append(
        "Plots: "
        + ", ".join(f"`plots/{p.name}`" for p in sorted((run_dir / "plots").glob("*.png")))
    )
    return "\n".join(lines) + "\n"


def best_section(
    best: pd.Series | None,
    members: pd.DataFrame,
    hparams: Sequence[str],
    labels: Any,
    objective: str,
    maximize: bool,
) -> list[str]:
    """*Best member*: its hyperparameters and metrics (or that every member diverged)."""
    if best is None:
        return ["Every member diverged: no best member.", ""]
    lines = [f"## Best member: {int(best['member'])}", ""]
    lines += [f"(by {'highest' if maximize else 'lowest'} final `{objective}`)", ""]
    lines += ["| field | value |", "| --- | --- |"]
    for name in hparams:
        lines.append(f"| {name} | {report_choices.cell(labels, name, best[name], '.6g')} |")
    for col in [c for c in members.columns if c.startswith(("val_", "test_"))]:
        lines.append(f"| {col} | {best[col]:.4f} |")
    return [*lines, ""]


def members_section(
    members: pd.DataFrame, hparams: Sequence[str], labels: Any, objective: str, maximize: bool
) -> list[str]:
    """*All members (final)*: one row each, best first."""
    metrics = [c for c in members.columns if c.startswith(("val_", "test_"))]
    steps = ["steps"] if "steps" in members.columns else []
    cols = ["member", *hparams, *metrics, *steps, "diverged"]
    show = members[cols].sort_values(objective, ascending=not maximize, na_position="last")
    lines = ["## All members (final)", "", "| " + " | ".join(cols) + " |"]
    lines.append("|" + " --- |" * len(cols))
    for _, r in show.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if c in hparams:
                cells.append(report_choices.cell(labels, c, v))
            else:
                cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def trained_steps_text(members: pd.DataFrame, table: pd.DataFrame) -> str:
    """The steps the members actually trained (``members.csv``'s ``steps``): "40 steps each", or
    the range and median when they differ (stopping rules, generations, epochs)."""
    if "steps" not in members.columns or members["steps"].isna().all():
        return f"up to {int(table['step'].max())} steps (the run's last step)"
    steps = members["steps"].dropna().astype(int)
    if steps.min() == steps.max():
        return f"{int(steps.iloc[0])} steps each"
    return (
        f"{int(steps.min())}–{int(steps.max())} steps trained per member "
        f"(median {float(steps.median()):g})"
    )


def cv_section(members: pd.DataFrame, hparams: Sequence[str], objective: str, maximize: bool):
    """``## Cross-validation``: under ``task.folds`` one row per trial (the members that share
    its hyperparameters, one per fold) with the mean and spread of its folds' metrics."""
    if "fold" not in members.columns or members["fold"].nunique() < 2:
        return []
    keys = [h for h in hparams if h != "fold"]
    metrics = [c for c in members.columns if c.startswith(("val_", "test_"))]
    g = members.groupby(keys, dropna=False)
    table = g[metrics].mean()
    table[f"{objective}_std"] = g[objective].std(ddof=0)
    table["folds"] = g["fold"].count()
    table = table.sort_values(objective, ascending=not maximize).reset_index()
    k = int(members["fold"].nunique())
    lines = [f"## Cross-validation ({k} folds)", ""]
    lines.append("One row per trial: metrics averaged over its folds (the study's fitness).")
    lines.append("")
    cols = [*keys, *metrics, f"{objective}_std", "folds"]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + " --- |" * len(cols))
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    lines.append("")
    return lines


def ensemble_section(ens: Mapping[str, Any] | None) -> list[str]:
    """``## Ensemble of the top k``: the averaged predictions of the best k members on the test
    split, beside the best member alone (``run.json``'s ``ensemble``, ``train.ensemble_top_k``)."""
    if not ens or not ens.get("k"):
        return []
    metrics = list(ens["test"])
    lines = [f"## Ensemble of the top {ens['k']}", ""]
    lines.append(
        f"Members {', '.join(map(str, ens['members']))}: their predicted probabilities averaged."
    )
    lines.append("")
    lines.append("| | " + " | ".join(f"test_{m}" for m in metrics) + " |")
    lines.append("|" + " --- |" * (len(metrics) + 1))
    best = ens["best_test"]
    lines.append(
        f"| best member ({ens['best_member']}) alone | "
        + " | ".join(f"{best[m]:.4f}" for m in metrics)
        + " |"
    )
    lines.append(
        f"| ensemble of {ens['k']} | " + " | ".join(f"{ens['test'][m]:.4f}" for m in metrics) + " |"
    )
    lines.append("")
    return lines


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return f"{float(v):.6g}"
    return str(v)


def budget_line(
    table: pd.DataFrame, events: Sequence[Mapping[str, Any]], info: Mapping[str, Any]
) -> str | None:
    """``**Budget:** ...`` when ``info`` has ``member_steps`` or members were stopped, else None.

    Without ``member_steps`` the member-steps are counted from the table (segments in which a
    member was active and had not diverged), an estimate.
    """
    stops = [ev for ev in events if ev.get("kind") == "stop"]
    used = info.get("member_steps")
    if used is None and not stops:
        return None
    steps = int(table["step"].max()) if len(table) else 0
    size = info.get("population_size")
    if size is None:
        size = int(table.loc[table["step"] == table["step"].min(), "member"].nunique())
    if used is None:
        grid = np.array(sorted({int(x) for x in table["step"]}), dtype=np.int64)
        rows = table[table["step"] > 0]
        mask = rows["active"].astype(bool) & ~rows["diverged"].astype(bool)
        ends = rows.loc[mask, "step"].to_numpy(np.int64)
        starts = grid[np.searchsorted(grid, ends) - 1]
        used = float(np.sum(ends - starts))
        text = f"**Budget:** about {int(used):,} member-steps used (counted from the table)"
    else:
        used = float(used)
        shown = f"{int(used):,}" if used.is_integer() else f"{used:,.1f}"
        text = f"**Budget:** {shown} member-steps used"
    full = int(size) * steps
    if full > 0:
        text += f", {100 * used / full:.0f}% of {full:,} ({int(size)} members × {steps} steps)"
    if stops:
        by_step: dict[int, set] = {}
        for ev in stops:
            by_step.setdefault(int(ev.get("step", -1)), set()).add(ev.get("member"))
        n = sum(len(v) for v in by_step.values())
        per = ", ".join(f"{len(by_step[s])} at step {s}" for s in sorted(by_step))
        text += f"; {n} member{'s' if n != 1 else ''} stopped ({per})"
    return text + "."


def lineage_section(
    events: Sequence[Mapping[str, Any]],
    hparams: list[str],
    best: pd.Series | None,
    schedule: pd.DataFrame | None,
    note: str | None = None,
) -> list[str]:
    """The *Lineage* section of ``summary.md`` (no lines when nothing was exploited and there is
    no schedule to show)."""
    exploits = exploit_events(events)
    if not exploits and schedule is None and note is None:
        return []
    lines = ["## Lineage", ""]
    if exploits:
        children = Counter(int(ev["child"]) for ev in exploits)
        steps = sorted({int(ev["step"]) for ev in exploits})
        shown = ", ".join(str(s) for s in steps[:12]) + (", ..." if len(steps) > 12 else "")
        lines.append(
            f"{len(exploits)} exploit{'s' if len(exploits) != 1 else ''}: "
            f"{len(children)} member{'s' if len(children) != 1 else ''} took over another "
            f"member's weights, at steps {shown}."
        )
    else:
        lines.append("No exploits: every member kept its own weights.")
    lines.append("")
    if note:
        lines.append(f"The best member's schedule could not be reconstructed: {note}")
        lines.append("")
    if schedule is not None and best is not None and not schedule.empty:
        comp = compress_schedule(schedule, by_source=True)
        hp = [c for c in schedule.columns if c not in ("start_step", "end_step", "source_member")]
        varying = [c for c in hp if c not in hparams and schedule[c].nunique() > 1]
        shown_hp = [c for c in hparams if c in schedule] + varying
        cols = ["start_step", "end_step", "source_member", *shown_hp]
        lines.append(
            f"Schedule that produced the best member's ({int(best['member'])}) weights, "
            "following exploits backwards: `source_member` trained in steps "
            "(start_step, end_step] with these values (segments with equal values merged; "
            "one row per segment in `best_schedule.csv`)."
        )
        lines.append("")
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + " --- |" * len(cols))
        for rec in comp[cols].to_dict("records"):
            lines.append("| " + " | ".join(_fmt(rec[c]) for c in cols) + " |")
        lines.append("")
    return lines
