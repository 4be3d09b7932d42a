"""``jaxhpo report RUN_DIR``: plots and a markdown summary from a run directory.

Plots (``RUN_DIR/plots/``):

* ``curves_<hparam>.png`` — validation loss against step, one line per member, coloured by that
  hyperparameter (log colour scale for log-scaled dimensions);
* ``final_vs_hparams.png`` — final validation loss against each searched hyperparameter;
* ``train_curves.png`` — training loss against step.

``summary.md`` names the best member (lowest final validation metric among members that did not
diverge) with its hyperparameters and its test metrics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from jaxhpo.results import read_members, read_metrics  # noqa: E402
from jaxhpo.space import Space  # noqa: E402


def _space_section(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    cfg = yaml.safe_load(path.read_text()) if path.exists() else {}
    return dict((cfg or {}).get("space") or {})


def _searched(run_dir: Path, table: pd.DataFrame, hparam_names: list[str] | None) -> list[str]:
    """Hyperparameters that vary across members (in config order when known)."""
    names = list(_space_section(run_dir)) or list(hparam_names or [])
    return [n for n in names if n in table and table[n].nunique() > 1]


def _log_dims(run_dir: Path) -> set[str]:
    """Names of log-scaled dimensions of the run's search space."""
    try:
        space = Space.from_config(_space_section(run_dir))
    except ValueError:
        return set()
    return {n for n in space.names if getattr(space[n], "log", False)}


def run_info(run_dir: Path) -> dict:
    path = Path(run_dir) / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def best_member(
    members: pd.DataFrame, metric: str = "val_loss", maximize: bool = False
) -> pd.Series | None:
    """The member with the best final ``metric`` among those that did not diverge."""
    ok = members[~members["diverged"].astype(bool) & np.isfinite(members[metric])]
    if ok.empty:
        return None
    return ok.loc[ok[metric].idxmax() if maximize else ok[metric].idxmin()]


def plot_curves(
    table: pd.DataFrame, hparam: str, path: Path, metric: str = "val_loss", log: bool = False
) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    finals = table.groupby("member")[hparam].last()
    vals = finals.to_numpy(float)
    lo, hi = np.nanmin(vals), np.nanmax(vals)
    if log:
        norm = matplotlib.colors.LogNorm(vmin=lo, vmax=hi)
    else:
        norm = matplotlib.colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
    cmap = plt.get_cmap("viridis")
    for member, rows in table.groupby("member"):
        rows = rows.sort_values("step")
        ax.plot(rows["step"], rows[metric], color=cmap(norm(finals[member])), lw=1.3, alpha=0.9)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label=hparam)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per member, coloured by {hparam}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_final(
    members: pd.DataFrame,
    hparams: list[str],
    path: Path,
    metric: str = "val_loss",
    log_dims: set[str] = frozenset(),
) -> None:
    n = max(1, len(hparams))
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    ok = members[~members["diverged"].astype(bool)]
    bad = members[members["diverged"].astype(bool)]
    for ax, name in zip(axes.ravel(), hparams, strict=False):
        ax.scatter(ok[name], ok[metric], s=22, label="trained")
        if not bad.empty:
            top = np.nanmax(ok[metric]) if not ok.empty else 1.0
            ax.scatter(bad[name], np.full(len(bad), top), marker="x", c="red", label="diverged")
            ax.legend(fontsize=7)
        if name in log_dims:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(f"final {metric}")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(hparams) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_train(table: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for member, rows in table.groupby("member"):
        rows = rows.sort_values("step")
        ax.plot(rows["step"], rows["train_loss"], lw=1, label=str(member))
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (segment mean)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_markdown(
    run_dir: Path,
    table: pd.DataFrame,
    members: pd.DataFrame,
    hparams: list[str],
    objective: str = "val_loss",
    maximize: bool = False,
) -> str:
    best = best_member(members, objective, maximize)
    lines = [f"# Run `{run_dir.name}`", ""]
    n_div = int(members["diverged"].astype(bool).sum())
    lines.append(
        f"{len(members)} members, {int(table['step'].max())} steps each, "
        f"{n_div} diverged, {len(table)} metric rows."
    )
    lines.append("")
    if best is None:
        lines.append("Every member diverged: no best member.")
    else:
        lines.append(f"## Best member: {int(best['member'])}")
        lines.append("")
        lines.append(f"(by {'highest' if maximize else 'lowest'} final `{objective}`)")
        lines.append("")
        lines.append("| field | value |")
        lines.append("| --- | --- |")
        for name in hparams:
            lines.append(f"| {name} | {best[name]:.6g} |")
        for col in [c for c in members.columns if c.startswith(("val_", "test_"))]:
            lines.append(f"| {col} | {best[col]:.4f} |")
    lines.append("")
    lines.append("## All members (final)")
    lines.append("")
    metrics = [c for c in members.columns if c.startswith(("val_", "test_"))]
    cols = ["member", *hparams, *metrics, "diverged"]
    show = members[cols].sort_values(objective, ascending=not maximize, na_position="last")
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + " --- |" * len(cols))
    for _, r in show.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Plots: "
        + ", ".join(f"`plots/{p.name}`" for p in sorted((run_dir / "plots").glob("*.png")))
    )
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path) -> Path:
    """Writes ``plots/*.png`` and ``summary.md``; returns the summary path."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.csv").exists() and not (run_dir / "metrics.parquet").exists():
        raise ValueError(f"RUN_DIR: no metrics table in {run_dir} (is it a jaxhpo run directory?)")
    table = read_metrics(run_dir)
    if (run_dir / "members.csv").exists():
        members = read_members(run_dir)
    else:  # an interrupted run: the last row of each member stands in
        members = table.sort_values("step").groupby("member").last().reset_index()
    info = run_info(run_dir)
    hparams = _searched(run_dir, table, info.get("hparam_names"))
    log_dims = _log_dims(run_dir)
    objective = info.get("objective", "val_loss")
    maximize = bool(info.get("maximize", False))
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    for name in hparams:
        plot_curves(table, name, plots / f"curves_{name}.png", objective, log=name in log_dims)
    if hparams:
        plot_final(members, hparams, plots / "final_vs_hparams.png", objective, log_dims=log_dims)
    plot_train(table, plots / "train_curves.png")
    summary = run_dir / "summary.md"
    summary.write_text(summary_markdown(run_dir, table, members, hparams, objective, maximize))
    return summary
