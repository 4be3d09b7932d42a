"""The plots and the summary of ``jaxhpo report`` on hand-built tables: the y-range leaves out a
dwarfing first evaluation, generation-based runs plot each member from its own step 0, the best
member is drawn and named, and the summary gives the steps each member trained."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from jaxhpo.reporting import plots
from jaxhpo.reporting.markdown import summary_markdown, trained_steps_text


def _table(first=(50.0, 60.0), later=((3.0, 2.5), (3.2, 2.9)), starts=(0, 0)):
    rows = []
    for m, (f, rest) in enumerate(zip(first, later, strict=True)):
        for i, v in enumerate((f, *rest)):
            rows.append({"member": m, "step": starts[m] + 10 * i, "val_loss": v, "train_loss": v})
    return pd.DataFrame(rows)


def test_y_range_leaves_out_a_first_evaluation_that_dwarfs_the_rest():
    lo, hi = plots.robust_ylim(_table(), "val_loss")
    assert 2.4 < lo < 2.5 and 3.2 < hi < 3.3  # the first losses (50, 60) are not in range


def test_y_range_keeps_everything_when_nothing_dwarfs():
    assert plots.robust_ylim(_table(first=(3.5, 3.4)), "val_loss") is None


def test_generation_members_start_at_their_generation():
    table = _table(starts=(0, 30))
    events = [{"kind": "generation", "step": 20}, {"kind": "exploit", "step": 10}]
    assert plots.member_starts(table, events) == {0: 0, 1: 20}
    assert plots.member_starts(table, []) == {0: 0, 1: 0}


def test_curve_plot_draws_the_best_member_bold_from_its_own_start(tmp_path, monkeypatch):
    table = _table(starts=(0, 30)).assign(lr=lambda t: 1e-3 * (1 + t["member"]))
    drawn = {}
    real = plt.Figure.savefig

    def keep(fig, path, **kw):
        drawn[str(path)] = fig.axes[0]
        return real(fig, path, **kw)

    monkeypatch.setattr(plt.Figure, "savefig", keep)
    path = tmp_path / "c.png"
    plots.plot_curves(table, "lr", path, best=1, starts={0: 0, 1: 20})
    ax = drawn[str(path)]
    bold = [ln for ln in ax.get_lines() if ln.get_linewidth() > 2]
    assert len(bold) == 1 and bold[0].get_label() == "best member 1"
    assert list(bold[0].get_xdata()) == [10, 20, 30]  # steps 30, 40, 50 less its start 20
    assert ax.get_ylim()[1] < 10  # the first evaluations (50, 60) are left out
    assert path.stat().st_size > 0


def test_train_curves_have_a_legend_entry_per_member(tmp_path, monkeypatch):
    drawn = {}
    real = plt.Figure.savefig
    monkeypatch.setattr(
        plt.Figure,
        "savefig",
        lambda fig, p, **kw: (drawn.setdefault("ax", fig.axes[0]), real(fig, p, **kw)),
    )
    plots.plot_train(_table(), tmp_path / "t.png", best=0)
    labels = [t.get_text() for t in drawn["ax"].get_legend().get_texts()]
    assert labels == ["member 0", "member 1", "best 0"]


@pytest.mark.parametrize(
    ("steps", "text"),
    [((40, 40), "40 steps each"), ((10, 40, 20), "10–40 steps trained per member (median 20)")],
)
def test_summary_gives_the_steps_each_member_trained(steps, text):
    members = pd.DataFrame({"member": range(len(steps)), "steps": steps})
    assert trained_steps_text(members, pd.DataFrame({"step": [0, 40]})) == text


def test_summary_table_has_the_steps_column(tmp_path):
    table = _table()
    members = pd.DataFrame(
        {
            "member": [0, 1],
            "lr": [1e-3, 2e-3],
            "val_loss": [2.5, 2.9],
            "test_loss": [2.6, np.nan],
            "diverged": [False, False],
            "steps": [30, 20],
        }
    )
    md = summary_markdown(tmp_path, table, members, ["lr"])
    assert "| member | lr | val_loss | test_loss | steps | diverged |" in md
    assert "20–30 steps trained per member" in md
    assert "show `nan`" in md  # why member 1 has no test loss
