"""Reports grouped by the program choices: the optimizer and the schedule a run searched by name.

For a run whose space chose ``optimizer`` / ``schedule`` among names
(:mod:`jaxhpo.optim.space_choice`; the tables hold the codes),
:func:`jaxhpo.reporting.report.write_report`
adds

* ``plots/final_vs_hparams_by_<choice>.png``: the final objective against each searched
  hyperparameter, one colour per choice (inactive entries, e.g. ``momentum`` of an AdamW member,
  are not drawn);
* a *Best member per choice* section in ``summary.md``: for each choice (and each optimizer ×
  schedule pair when both are searched) the members that ended with it, the best of them, its
  objective and its searched values;

and the summary's tables show a code as its name and an inactive entry as an empty cell.
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

from jaxhpo.optim.space_choice import space_labels
from jaxhpo.space import Space

Labels = Mapping[str, Sequence[str]]


def labels_of(space_cfg: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """``choice -> names of its codes`` from a run's ``space`` section (``config.yaml``); empty
    when the space chose no program by name (or cannot be read)."""
    try:
        return space_labels(Space.from_config(space_cfg or {}))
    except ValueError:
        return {}


def label(labels: Labels, name: str, code: Any) -> str | None:
    """The name of ``code`` in choice ``name`` (None when it is not a valid code)."""
    try:
        i = int(round(float(code)))
    except (TypeError, ValueError):
        return None
    names = labels.get(name, ())
    return names[i] if 0 <= i < len(names) and float(code) == i else None


def cell(labels: Labels, name: str, value: Any, fmt: str = ".4g") -> str:
    """A table cell: a choice code as its name, an inactive (NaN) hyperparameter as empty."""
    if name in labels and label(labels, name, value) is not None:
        return str(label(labels, name, value))
    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else f"{float(value):{fmt}}"
    return str(value)


def _with_names(members: pd.DataFrame, labels: Labels) -> pd.DataFrame:
    out = members.copy()
    for name in labels:
        if name in out:
            out[name] = [label(labels, name, v) for v in out[name]]
    return out


def best_per_choice_section(
    members: pd.DataFrame,
    labels: Labels,
    hparams: Sequence[str],
    objective: str,
    maximize: bool = False,
) -> list[str]:
    """Markdown lines: per choice (and optimizer × schedule pair), the count of members that
    ended with it, the best member, its objective and its other searched values."""
    present = [n for n in labels if n in members]
    if not present:
        return []
    named = _with_names(members, labels)
    ok = named[~named["diverged"].astype(bool) & np.isfinite(named[objective])]
    groups = [[n] for n in present] + ([present] if len(present) > 1 else [])
    rest = [h for h in hparams if h not in present]
    lines = ["## Best member per choice", ""]
    lines.append(
        f"(by {'highest' if maximize else 'lowest'} final `{objective}` among the members that "
        "did not diverge; a member counts for the choice it ended with)"
    )
    lines.append("")
    for keys in groups:
        head = [*keys, "members", "diverged", "best member", objective, *rest]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + " --- |" * len(head))
        for values, rows in named.groupby(keys, sort=False, dropna=False):
            values = values if isinstance(values, tuple) else (values,)
            good = ok.loc[ok.index.intersection(rows.index)]
            n_div = int(rows["diverged"].astype(bool).sum())
            row = [str(v) for v in values] + [str(len(rows)), str(n_div)]
            if good.empty:
                row += ["-", "-"] + ["" for _ in rest]
            else:
                best = good.loc[good[objective].idxmax() if maximize else good[objective].idxmin()]
                row += [str(int(best["member"])), f"{best[objective]:.4f}"]
                row += [cell(labels, h, best[h], ".3g") for h in rest]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return lines


def plot_final_by_choice(
    members: pd.DataFrame,
    hparams: Sequence[str],
    labels: Labels,
    choice: str,
    path: Path,
    metric: str = "val_loss",
    log_dims: set[str] = frozenset(),
) -> None:
    """Final ``metric`` against each other searched hyperparameter, one colour per value of
    ``choice`` (its name in the legend); diverged members and inactive entries are left out."""
    names = [h for h in hparams if h != choice] or [choice]
    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    ok = members[~members["diverged"].astype(bool)]
    cmap = plt.get_cmap("tab10")
    for ax, name in zip(axes.ravel(), names, strict=False):
        for i, value in enumerate(labels[choice]):
            sel = ok[[label(labels, choice, c) == value for c in ok[choice]]]
            x = sel[name] if name != choice else np.full(len(sel), i)
            ax.scatter(x, sel[metric], s=22, color=cmap(i % 10), label=value)
        if name in labels:  # another choice: its codes on the axis, named
            ax.set_xticks(range(len(labels[name])), labels[name], fontsize=7)
        elif name in log_dims:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(f"final {metric}")
        ax.grid(alpha=0.3)
    axes.ravel()[0].legend(title=choice, fontsize=7)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    fig.suptitle(f"final {metric} by {choice}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
