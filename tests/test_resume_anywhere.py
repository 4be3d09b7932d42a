"""A run of ``task.kind=file.py:Name`` resumes and reruns after its task file moved next to the
run directory (issue 28): the stored absolute path gone, the file of the same name in the run
directory or its parent is used; found nowhere, one line names the paths tried (exit 2)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_first_hour import TASK_SOURCE

from jaxhpo import cli, refs

RUN = [
    "population.size=2",
    "train.steps=4",
    "train.segment_steps=2",
    "space.lr=loguniform(1e-3, 1e-1)",
]


def _table(path: Path) -> pd.DataFrame:
    t = pd.read_csv(path)
    return t.drop(columns=[c for c in ("run", "wall_time") if c in t.columns])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished CLI run of ``src/tiny.py:Tiny`` (a relative reference, stored absolute)."""
    root = tmp_path_factory.mktemp("anywhere")
    (root / "src").mkdir()
    (root / "src" / "tiny.py").write_text(TASK_SOURCE)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root / "src")
        assert cli.main(["run", "task.kind=tiny.py:Tiny", *RUN, "--out", "../runs", "--quiet"]) == 0
    (run_dir,) = (root / "runs").iterdir()
    return root, run_dir


def _interrupted(run_dir: Path, to: Path) -> Path:
    """A copy of ``run_dir`` in folder ``to`` as a kill after its first checkpoint leaves it
    (the end's tables gone, the later checkpoints too)."""
    cut = to / run_dir.name
    shutil.copytree(run_dir, cut)
    for name in ("members.csv", "metrics.parquet", "summary.md"):
        (cut / name).unlink()
    ckpts = sorted(
        (p for p in (cut / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    for p in ckpts[1:]:
        shutil.rmtree(p)
    return cut


@pytest.fixture
def moved(finished, tmp_path):
    """``(run directory, original, interrupted copy under tmp_path/elsewhere/runs)``, with the
    task file of the stored path gone (renamed back afterwards)."""
    root, run_dir = finished
    cut = _interrupted(run_dir, tmp_path / "elsewhere" / "runs")
    gone = root / "src" / "tiny.py"
    kept = gone.with_suffix(".kept")
    gone.rename(kept)
    yield cut, run_dir, gone
    kept.rename(gone)


@pytest.mark.parametrize("where", ["beside", "inside"])
def test_resume_lost_the_task_file_moved_next_to_the_run_directory(moved, tmp_path, where):
    cut, run_dir, gone = moved
    folder = cut.parent if where == "beside" else cut
    (folder / "tiny.py").write_text(TASK_SOURCE)
    stored = (cut / "config.yaml").read_text()
    assert yaml.safe_load(stored)["task"]["kind"] == f"{gone.resolve()}:Tiny"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)  # from another folder
        assert cli.main(["resume", str(cut), "--quiet"]) == 0
    pd.testing.assert_frame_equal(_table(run_dir / "members.csv"), _table(cut / "members.csv"))
    pd.testing.assert_frame_equal(_table(run_dir / "metrics.csv"), _table(cut / "metrics.csv"))
    assert (cut / "config.yaml").read_text() == stored  # as written: its checkpoints' config


def test_rerun_of_config_yaml_lost_the_task_file_moved_next_to_the_run_directory(moved, tmp_path):
    cut, run_dir, _ = moved
    (cut.parent / "tiny.py").write_text(TASK_SOURCE)
    out = tmp_path / "again"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert cli.main(["run", str(cut / "config.yaml"), "--out", str(out), "--quiet"]) == 0
    (rerun,) = out.iterdir()
    kind = yaml.safe_load((rerun / "config.yaml").read_text())["task"]["kind"]
    assert kind == f"{(cut.parent / 'tiny.py').resolve()}:Tiny"  # where it is now
    pd.testing.assert_frame_equal(_table(run_dir / "metrics.csv"), _table(rerun / "metrics.csv"))


def test_resume_with_the_task_file_deleted_fails_in_one_line_naming_the_paths_tried(
    moved, tmp_path, capsys
):
    cut, _, gone = moved
    before = sorted(p.name for p in cut.iterdir())
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert cli.main(["resume", str(cut), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    want = f"task.kind: no file {gone.resolve()}, {cut.resolve() / 'tiny.py'} or "
    assert err.startswith(f"jaxhpo: error: {want}{cut.parent.resolve() / 'tiny.py'}"), err
    assert sorted(p.name for p in cut.iterdir()) == before  # nothing written


def test_looking_in_only_while_open_and_only_for_a_missing_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "t.py").write_text("X = 1\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "t.py").write_text("X = 2\n")
    missing = f"{tmp_path / 'gone' / 't.py'}:X"
    with refs.looking_in(tmp_path / "a"):
        assert refs.resolve(missing, "task.kind") == 1
        assert refs.absolute(missing) == f"{tmp_path / 'a' / 't.py'}:X"
        assert refs.resolve(f"{tmp_path / 'b' / 't.py'}:X", "task.kind") == 2  # present: as is
        assert refs.absolute("jaxhpo.api:tune") == "jaxhpo.api:tune"
    with pytest.raises(ValueError, match=r"^task.kind: no file \S+gone/t.py \(from "):
        refs.resolve(missing, "task.kind")
