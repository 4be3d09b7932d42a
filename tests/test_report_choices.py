"""Reports grouped by the optimizer / schedule choice (``jaxhpo/reporting/choices.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from jaxhpo.reporting import choices as report_choices

SPACE = {
    "optimizer": ["adamw", "sgd", "momentum"],
    "schedule": ["warmup_cosine", "constant"],
    "lr": "loguniform(1e-4, 1e-1)",
    "momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": {"optimizer": ["momentum"]}},
}
NAN = float("nan")


def _members() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "member": [0, 1, 2, 3, 4, 5],
            "optimizer": [0.0, 1.0, 2.0, 0.0, 1.0, 2.0],
            "schedule": [0.0, 0.0, 1.0, 1.0, 0.0, 1.0],
            "lr": [1e-3, 0.1, 0.05, 3e-4, 0.02, 0.01],
            "momentum": [NAN, NAN, 0.9, NAN, NAN, 0.6],
            "val_loss": [2.0, 2.5, 1.8, 1.9, np.inf, 2.2],
            "diverged": [False, False, False, False, True, False],
        }
    )


def _rows(table: str) -> dict[str, list[str]]:
    """A markdown table's rows (after the header and rule) as cells, by their first cell."""
    rows = [[c.strip() for c in x.strip("|").split("|")] for x in table.splitlines()[2:]]
    return {r[0]: r for r in rows}


def test_labels_come_from_the_space_as_written():
    assert report_choices.labels_of(SPACE) == {
        "optimizer": ("adamw", "sgd", "momentum"),
        "schedule": ("warmup_cosine", "constant"),
    }
    assert report_choices.labels_of({"lr": "loguniform(1e-4, 1e-1)"}) == {}
    assert report_choices.labels_of({"optimizer": ["rmsprop"]}) == {}  # unreadable: no labels


def test_cells_name_codes_and_leave_inactive_entries_empty():
    labels = report_choices.labels_of(SPACE)
    assert report_choices.cell(labels, "optimizer", 2.0) == "momentum"
    assert report_choices.cell(labels, "schedule", 1.0) == "constant"
    assert report_choices.cell(labels, "momentum", NAN) == ""
    assert report_choices.cell(labels, "lr", 0.05) == "0.05"


def test_best_member_per_choice_skips_diverged_members():
    labels = report_choices.labels_of(SPACE)
    hparams = ["optimizer", "schedule", "lr", "momentum"]
    lines = report_choices.best_per_choice_section(_members(), labels, hparams, "val_loss")
    assert lines[0] == "## Best member per choice"
    tables = "\n".join(lines).split("\n\n")[2:]  # heading, note, then one table per grouping
    by_opt, by_sched, by_pair = (_rows(t) for t in tables[:3])
    # optimizer | members | diverged | best member | val_loss | lr | momentum
    assert by_opt["adamw"][1:5] == ["2", "0", "3", "1.9000"]
    assert by_opt["sgd"][1:5] == ["2", "1", "1", "2.5000"]  # member 4 diverged
    assert by_opt["momentum"][3] == "2" and by_opt["momentum"][-1] == "0.9"
    assert by_opt["adamw"][-1] == ""  # momentum is inactive for AdamW: empty, not nan
    assert by_sched["constant"][3] == "2"
    assert by_pair["sgd"][:4] == ["sgd", "warmup_cosine", "2", "1"]


def test_a_choice_whose_members_all_diverged_has_no_best():
    labels = report_choices.labels_of(SPACE)
    members = _members()
    members.loc[members["optimizer"] == 1.0, "diverged"] = True
    lines = report_choices.best_per_choice_section(members, labels, ["optimizer"], "val_loss")
    row = next(x for x in lines if x.startswith("| sgd |"))
    assert row == "| sgd | 2 | 2 | - | - |"


def test_plot_by_choice_writes_a_figure(tmp_path):
    labels = report_choices.labels_of(SPACE)
    path = tmp_path / "by_optimizer.png"
    hparams = ["optimizer", "schedule", "lr", "momentum"]
    report_choices.plot_final_by_choice(
        _members(), hparams, labels, "optimizer", path, log_dims={"lr"}
    )
    assert path.stat().st_size > 1000
