"""The plots of ``jaxhpo report`` (``RUN_DIR/plots/``), one function per figure.

Every curve plot highlights the best member (bold red, in the legend), keeps its y-range on the
curves after each member's first evaluation when that first loss dwarfs the rest (the clipped
range is named in the title), and plots generation-based runs (evo, BO, Optuna, REINFORCE: every
generation starts new members) per generation: each member's curve starts at its own step 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from jaxhpo.lineage import exploit_events  # noqa: E402

#: Members drawn with a legend entry each in ``train_curves.png``; above it, the best member and
#: one entry for the rest.
LEGEND_MEMBERS = 12


def member_starts(table: pd.DataFrame, events: Sequence[Mapping[str, Any]] = ()) -> dict[int, int]:
    """The step each member started training at: 0, or for members a generation started (a
    ``generation`` event at step s before the member's first row), s."""
    gens = np.array(sorted({int(ev["step"]) for ev in events if ev.get("kind") == "generation"}))
    out = {}
    for member, first in table.groupby("member")["step"].min().items():
        before = gens[gens < int(first)] if gens.size else gens
        out[int(member)] = int(before[-1]) if before.size else 0
    return out


def _x(rows: pd.DataFrame, starts: Mapping[int, int] | None) -> np.ndarray:
    steps = rows["step"].to_numpy(float)
    return steps if not starts else steps - starts.get(int(rows["member"].iloc[0]), 0)


def robust_ylim(table: pd.DataFrame, metric: str) -> tuple[float, float] | None:
    """A y-range for ``metric`` curves that leaves out each member's first evaluation when those
    dwarf the rest (their maximum lies above the later values' range by more than that range);
    ``None`` when every value fits."""
    t = table.sort_values("step", kind="stable")
    later = t[t.duplicated("member", keep="first")][metric].to_numpy(float)
    every = t[metric].to_numpy(float)
    later, every = later[np.isfinite(later)], every[np.isfinite(every)]
    if later.size == 0 or every.size == 0:
        return None
    lo, hi = float(later.min()), float(later.max())
    span = max(hi - lo, 1e-12 * max(abs(hi), 1.0))
    if float(every.max()) <= hi + span:
        return None
    return lo - 0.05 * span, hi + 0.05 * span


def _finish_axes(ax, table, metric, starts) -> None:
    lim = robust_ylim(table, metric)
    if lim is not None:
        ax.set_ylim(*lim)
        ax.set_title(ax.get_title() + "\n(first evaluations above the range left out)", fontsize=9)
    ax.set_xlabel("steps since the member started" if starts else "step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)


def _best_line(ax, table, best, metric, starts, **kw) -> None:
    if best is None or best not in set(table["member"].astype(int)):
        return
    rows = table[table["member"] == best].sort_values("step")
    ax.plot(_x(rows, starts), rows[metric], color="tab:red", lw=2.6, zorder=5, **kw)


def plot_curves(
    table: pd.DataFrame,
    hparam: str,
    path: Path,
    metric: str = "val_loss",
    log: bool = False,
    *,
    best: int | None = None,
    starts: Mapping[int, int] | None = None,
) -> None:
    """``metric`` against step per member, coloured by ``hparam``; the best member bold red;
    ``starts`` (:func:`member_starts`) plots each member from its own step 0."""
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
        color = cmap(norm(finals[member]))
        ax.plot(_x(rows, starts), rows[metric], color=color, lw=1.3, alpha=0.9)
    _best_line(ax, table, best, metric, starts, label=f"best member {best}")
    if best is not None:
        ax.legend(fontsize=7, loc="upper right")
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label=hparam)
    ax.set_title(f"{metric} per member, coloured by {hparam}")
    _finish_axes(ax, table, metric, starts)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_final(
    members: pd.DataFrame,
    hparams: list[str],
    path: Path,
    metric: str = "val_loss",
    log_dims: set[str] = frozenset(),
    *,
    best: int | None = None,
) -> None:
    """Final ``metric`` against each searched hyperparameter; diverged members as red crosses at
    the top, the best member as a red star."""
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
        star = members[members["member"] == best] if best is not None else members.iloc[:0]
        if not star.empty:
            ax.scatter(
                star[name],
                star[metric],
                marker="*",
                s=140,
                c="tab:red",
                zorder=5,
                label=f"best member {best}",
            )
        if not bad.empty or not star.empty:
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


def plot_train(
    table: pd.DataFrame,
    path: Path,
    *,
    best: int | None = None,
    starts: Mapping[int, int] | None = None,
) -> None:
    """Training loss (segment means) per member with a legend: one entry per member up to
    :data:`LEGEND_MEMBERS`, else the best member and one entry for the rest."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups = list(table[table["step"] > 0].groupby("member"))
    few = len(groups) <= LEGEND_MEMBERS
    cmap = plt.get_cmap("tab20")
    for i, (member, rows) in enumerate(groups):
        rows = rows.sort_values("step")
        if few:
            kw = {"color": cmap(i % cmap.N), "label": f"member {member}"}
        else:
            kw = {"color": "0.6", "label": f"other members ({len(groups) - 1})" if i == 0 else None}
        ax.plot(_x(rows, starts), rows["train_loss"], lw=1, alpha=0.8, **kw)
    _best_line(ax, table[table["step"] > 0], best, "train_loss", starts, label=f"best {best}")
    ax.set_title("training loss per member (segment mean)")
    _finish_axes(ax, table[table["step"] > 0], "train_loss", starts)
    ax.legend(fontsize=6, ncol=2 if few and len(groups) > 6 else 1, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _stairs(ax, starts: np.ndarray, ends: np.ndarray, values: np.ndarray, **kw) -> None:
    """Step plot of ``values`` over segments ``(starts, ends]``, broken where they leave gaps."""
    if len(ends) == 0:
        return
    breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
    for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(ends)], strict=True):
        edges = np.r_[starts[lo], ends[lo:hi]].astype(float)
        ax.stairs(np.asarray(values[lo:hi], float), edges, baseline=None, **kw)
        kw.pop("label", None)


def _segments(table: pd.DataFrame, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of a member's segments: each row after step 0 ends one."""
    grid = np.array(sorted({int(x) for x in table["step"]}), dtype=np.int64)
    ends = rows["step"].to_numpy(np.int64)
    return grid[np.maximum(np.searchsorted(grid, ends) - 1, 0)], ends


def _ancestry_runs(schedule: pd.DataFrame) -> list[tuple[int, int, int]]:
    """``(member, start, end)`` for each stretch of the schedule trained by one member."""
    runs: list[list[int]] = []
    for rec in schedule[["source_member", "start_step", "end_step"]].to_dict("records"):
        m, a, b = int(rec["source_member"]), int(rec["start_step"]), int(rec["end_step"])
        if runs and runs[-1][0] == m and runs[-1][2] == a:
            runs[-1][2] = b
        else:
            runs.append([m, a, b])
    return [tuple(r) for r in runs]


def plot_lineage(
    table: pd.DataFrame,
    events: Sequence[Mapping[str, Any]],
    path: Path,
    metric: str = "val_loss",
    schedule: pd.DataFrame | None = None,
    best: int | None = None,
) -> None:
    """Members against step, evaluations coloured by ``metric``, exploits as parent -> child
    arrows, the best member's ancestry (from its ``schedule``) in red."""
    ids = sorted(int(m) for m in table["member"].unique())
    ypos = {m: i for i, m in enumerate(ids)}
    height = float(np.clip(0.3 * len(ids) + 1.8, 3.5, 14.0))
    fig, ax = plt.subplots(figsize=(8.0, height), layout="constrained")
    vals = table[metric].to_numpy(float) if metric in table else np.full(len(table), np.nan)
    finite = vals[np.isfinite(vals)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    norm = matplotlib.colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
    cmap = plt.get_cmap("viridis")
    for member, rows in table.assign(_v=vals).groupby("member"):
        rows = rows.sort_values("step")
        y = ypos[int(member)]
        steps = rows["step"].to_numpy(float)
        ax.plot(steps, np.full(len(steps), y), color="0.75", lw=1.0, zorder=1)
        bad = rows["diverged"].astype(bool).to_numpy() | ~np.isfinite(rows["_v"].to_numpy())
        ax.scatter(
            steps[~bad],
            np.full((~bad).sum(), y),
            c=rows["_v"].to_numpy()[~bad],
            cmap=cmap,
            norm=norm,
            s=16,
            zorder=3,
            linewidths=0,
        )
        if bad.any():
            ax.scatter(steps[bad], np.full(bad.sum(), y), marker="x", c="red", s=18, zorder=3)
    # An exploit at step s is an arrow from the parent at s to the child a little after s (the
    # child trains on from there), slanted so that exploits at one step stay apart.
    grid = np.array(sorted({int(x) for x in table["step"]}), dtype=float)
    gap = float(np.median(np.diff(grid))) if grid.size > 1 else 1.0
    lean = 0.3 * gap
    arrow = {"arrowstyle": "-|>", "mutation_scale": 8, "shrinkA": 0, "shrinkB": 2}
    for ev in exploit_events(events):
        child, parent, step = int(ev["child"]), int(ev["parent"]), float(ev["step"])
        if child not in ypos or parent not in ypos or child == parent:
            continue
        ax.annotate(
            "",
            xy=(step + lean, ypos[child]),
            xytext=(step, ypos[parent]),
            arrowprops={**arrow, "color": "tab:blue", "alpha": 0.5, "lw": 0.8},
            zorder=2,
        )
    if schedule is not None and not schedule.empty:
        _draw_ancestry(ax, schedule, ypos, lean, arrow)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metric)
    handles = [
        matplotlib.lines.Line2D([], [], color="0.75", lw=1.0, label="member (id kept by slot)"),
        matplotlib.lines.Line2D([], [], color="tab:blue", lw=0.8, label="exploit: parent → child"),
    ]
    if schedule is not None and not schedule.empty:
        handles.append(
            matplotlib.lines.Line2D(
                [], [], color="tab:red", lw=3.0, label=f"ancestry of best member {best}"
            )
        )
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=3)
    every = max(1, math.ceil(len(ids) / 40))
    ax.set_yticks(range(0, len(ids), every), [str(m) for m in ids[::every]])
    ax.set_ylim(-0.7, len(ids) - 0.3)
    ax.set_xlabel("step")
    ax.set_ylabel("member")
    n = len(exploit_events(events))
    ax.set_title(f"lineage: {n} exploit{'s' if n != 1 else ''}")
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_ancestry(ax, schedule: pd.DataFrame, ypos: Mapping[int, int], lean: float, arrow) -> None:
    """The best member's ancestry in red: its stretches on each member, arrows between them."""
    runs = [r for r in _ancestry_runs(schedule) if r[0] in ypos]
    for i, (m, a, b) in enumerate(runs):
        # After an exploit the child's stretch starts where the arrow lands.
        a = a + lean if i > 0 and runs[i - 1][0] != m else a
        ax.plot([a, b], [ypos[m], ypos[m]], color="tab:red", lw=3.0, alpha=0.7, zorder=2)
    for (m0, _, b0), (m1, a1, _) in zip(runs, runs[1:], strict=False):
        if m0 != m1 and b0 == a1:
            ax.annotate(
                "",
                xy=(a1 + lean, ypos[m1]),
                xytext=(b0, ypos[m0]),
                arrowprops={**arrow, "color": "tab:red", "lw": 2.0},
                zorder=5,
            )


def plot_hparam_trajectories(
    table: pd.DataFrame,
    names: list[str],
    path: Path,
    log_dims: set[str] = frozenset(),
    schedule: pd.DataFrame | None = None,
    best: int | None = None,
) -> None:
    """One panel per hyperparameter: its value against step for every member (thin step plots)
    and the best member's reconstructed ``schedule`` (bold)."""
    n = max(1, len(names))
    cols = min(n, 2)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(5.4 * cols + 1.6, 3.4 * nrows), squeeze=False, layout="constrained"
    )
    groups = [
        (int(m), r.sort_values("step")) for m, r in table[table["step"] > 0].groupby("member")
    ]
    few = len(groups) <= 10  # then each member gets a colour of its own and a legend entry
    cmap = plt.get_cmap("tab10" if few else "tab20")
    for k, (ax, name) in enumerate(zip(axes.ravel(), names, strict=False)):
        for i, (m, rows) in enumerate(groups):
            starts, ends = _segments(table, rows)
            label = f"member {m}" if few and k == 0 else None
            color = cmap(i % cmap.N)
            _stairs(
                ax, starts, ends, rows[name].to_numpy(), color=color, lw=1.0, alpha=0.6, label=label
            )
        if schedule is not None and not schedule.empty and name in schedule:
            _stairs(
                ax,
                schedule["start_step"].to_numpy(np.int64),
                schedule["end_step"].to_numpy(np.int64),
                schedule[name].to_numpy(),
                color="black",
                lw=2.6,
                label=f"best member {best}\n(reconstructed)" if k == 0 else None,
            )
        if name in log_dims:
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=7, loc="outside right upper")
    fig.suptitle("hyperparameters per member (thin) and the best member's schedule (bold)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
