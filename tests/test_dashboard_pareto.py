"""optuna-dashboard's Pareto front plot for a study with several objectives
(``scripts/check_optuna_dashboard.py``): a small run against loss and parameter count, exported
to Optuna and opened in headless chromium, draws every member at its values and marks the run's
front as the dashboard's "Best Trial"s; the check's comparison names a wrong front in one line."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY_LM_OVERRIDES

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]


def _script():
    path = ROOT / "scripts" / "check_optuna_dashboard.py"
    spec = importlib.util.spec_from_file_location("check_optuna_dashboard", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pareto_front_renders_in_the_dashboard(tmp_path, capsys):
    check = _script()
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    if check._dashboard_exe() is None:
        pytest.skip("optuna-dashboard is not installed (pip install -e '.[dashboard]')")
    from jaxhpo.cli import main

    args = [*TINY_LM_OVERRIDES, "model.num_layers=2", "space.depth=[1, 2]"]
    args += ["population.structure=masked", "population.size=4", "report.tensorboard=false"]
    args += [
        "train.steps=4",
        "train.segment_steps=2",
        "strategy.objectives={loss: min, params: min}",
    ]
    assert main(["run", "lm-random", *args, "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    capsys.readouterr()
    out = tmp_path / "dashboard"
    assert check.main([str(run_dir), "--out", str(out), "--timeout", "60"]) == 0, (
        capsys.readouterr().err
    )
    result = json.loads((out / "pareto.json").read_text())
    assert result["page_shows_pareto_front"]
    assert result["directions"] == ["minimize", "minimize"]
    assert result["points_drawn"] == result["complete_trials"] == 4
    assert result["trials_plotted"] == [0, 1, 2, 3]
    assert result["front_on_page"] == result["front_of_optuna"] and result["front_on_page"]
    assert result["front_members_on_page"] == result["front_members_of_run"]
    assert (out / "pareto.png").stat().st_size > 10_000


def _study(values):
    study = optuna.create_study(directions=["minimize", "maximize"])
    for i, v in enumerate(values):
        study.add_trial(
            optuna.trial.create_trial(
                values=v, params={}, distributions={}, user_attrs={"member": i}
            )
        )
    return study


def _page(kinds: dict[str, list[tuple[int, float, float]]], points: int) -> dict:
    traces = [
        {
            "kind": kind,
            "x": [x for _, x, _ in pts],
            "y": [y for _, _, y in pts],
            "text": [f'{{<br>  "number": {n},<br>  "values": []<br>}}' for n, _, _ in pts],
        }
        for kind, pts in kinds.items()
    ]
    graph = {"points": points, "traces": traces}
    return {"headings": ["Pareto Front"], "graphs": {"graph-pareto-front": graph}}


def test_the_check_reads_the_plot_and_names_a_wrong_front():
    check = _script()
    study = _study([(1.0, 0.5), (2.0, 0.9), (3.0, 0.1)])  # front: trials 0 and 1
    right = _page({"Trial": [(2, 3.0, 0.1)], "Best Trial": [(0, 1.0, 0.5), (1, 2.0, 0.9)]}, 3)
    got = check.check_pareto(right, study, [0, 1])
    assert got["front_on_page"] == got["front_of_optuna"] == [0, 1]
    assert got["trials_by_kind"] == {"Trial": [2], "Best Trial": [0, 1]}

    wrong = _page({"Trial": [(1, 2.0, 0.9), (2, 3.0, 0.1)], "Best Trial": [(0, 1.0, 0.5)]}, 3)
    with pytest.raises(check.DashboardCheckError, match=r"front on the page \[0\], .* \[0, 1\]"):
        check.check_pareto(wrong, study, [0, 1])
    moved = _page({"Trial": [(2, 3.0, 0.2)], "Best Trial": [(0, 1.0, 0.5), (1, 2.0, 0.9)]}, 3)
    with pytest.raises(check.DashboardCheckError, match=r"away from their values: \[2\]"):
        check.check_pareto(moved, study, [0, 1])
    missing = {"headings": ["History"], "graphs": {}}
    with pytest.raises(check.DashboardCheckError, match="no 'Pareto Front' panel"):
        check.check_pareto(missing, study, None)
