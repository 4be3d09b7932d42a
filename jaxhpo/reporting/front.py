"""The Pareto front of a run with several objectives (``strategy.objectives``): a section of
``summary.md``, ``plots/pareto_front.png`` (every pair of objectives; infeasible members marked)
and ``plots/hypervolume.png`` (the hypervolume of everything evaluated so far, against
member-steps).

The hypervolume's reference point is stated with it: per objective (minimised), the worst finite
value any feasible evaluation reached plus a tenth of the objective's range, so every feasible
evaluation adds volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from jaxhpo import pareto  # noqa: E402
from jaxhpo.objectives import Front  # noqa: E402, F401  (re-exported)


def front_section(front: Front, members: pd.DataFrame, hparams: Sequence[str]) -> list[str]:
    """The ``## Pareto front`` section of ``summary.md``: the final members on the front."""
    F, v = front.matrix(members)
    on = pareto.front_mask(F, v)
    ref = front.reference(F, v)
    hv = pareto.hypervolume(F[v <= 0], ref)
    names = ", ".join(
        f"`{c}` ({'max' if o.maximize else 'min'})"
        for c, o in zip(front.columns(), front.objectives)
    )
    lines = ["## Pareto front", "", f"Objectives: {names}."]
    if front.constraints:
        cons = ", ".join(f"`{c.metric} {c.op} {c.bound:g}`" for c in front.constraints)
        lines.append(f"Constraints: {cons}; {int(np.sum(v > 0))} members infeasible.")
    shown_ref = [(-r if o.maximize else r) for r, o in zip(ref, front.objectives)]
    lines += [
        f"{int(on.sum())} of {len(members)} final members on the front; hypervolume "
        f"{hv:.6g} (reference point {', '.join(f'{r:.4g}' for r in shown_ref)}).",
        "",
    ]
    cols = ["member", *hparams, *front.columns()]
    lines += ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for _, r in members[on].sort_values(front.columns()[0]).iterrows():
        cells = [f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def plot_front(front: Front, members: pd.DataFrame, path: Path) -> None:
    """Every pair of objectives: the final members, the front joined, infeasible ones as x."""
    F, v = front.matrix(members)
    on = pareto.front_mask(F, v)
    cols, M = front.columns(), len(front.objectives)
    pairs = [(i, j) for i in range(M) for j in range(i + 1, M)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.8), squeeze=False)
    for ax, (i, j) in zip(axes[0], pairs):
        x, y = members[cols[i]].to_numpy(float), members[cols[j]].to_numpy(float)
        feas = v <= 0
        ax.scatter(x[feas & ~on], y[feas & ~on], s=14, c="0.6", label="member")
        ax.scatter(x[~feas], y[~feas], s=18, marker="x", c="tab:red", label="infeasible")
        order = np.argsort(x[on])
        ax.plot(x[on][order], y[on][order], "o-", c="tab:blue", ms=5, label="front")
        ax.set_xlabel(cols[i])
        ax.set_ylabel(cols[j])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_hypervolume(front: Front, table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The hypervolume of every evaluation up to each step (one reference point, from the whole
    table), against the member-steps trained by then; returns the curve."""
    curve = hypervolume_curve(front, table)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(curve["member_steps"], curve["hypervolume"], "o-", ms=3)
    ax.set_xlabel("member-steps")
    ax.set_ylabel("hypervolume")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return curve


def hypervolume_curve(
    front: Front, table: pd.DataFrame, reference: np.ndarray | None = None
) -> pd.DataFrame:
    """``step``, ``member_steps`` (trained by then) and ``hypervolume`` (of every feasible
    evaluation up to the step) for a metrics table; ``reference``: minimised, in the front's
    objective order (default: :meth:`Front.reference` of the whole table)."""
    F, v = front.matrix(table)
    ref = front.reference(F, v) if reference is None else np.asarray(reference, np.float64)
    steps = np.sort(table["step"].unique())
    # a row active (and not diverged) at step s trained in the segment that ended at s: a member
    # stopped at a rung is inactive from the next evaluation on (run.json's member_steps)
    training = table["active"].astype(bool) & ~table["diverged"].astype(bool)
    per_step = training.groupby(table["step"]).sum().reindex(steps, fill_value=0).to_numpy()
    gaps = np.diff(np.concatenate([[0], steps]))
    used = np.cumsum(per_step * gaps)
    rows = []
    for s, u in zip(steps, used, strict=True):
        upto = table["step"].to_numpy() <= s
        rows.append((int(s), float(u), pareto.hypervolume(F[upto & (v <= 0)], ref)))
    return pd.DataFrame(rows, columns=["step", "member_steps", "hypervolume"])
