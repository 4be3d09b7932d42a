"""Storage URLs (issue 25): one check (jaxhpo/storage_url.py) for report.optuna_storage,
strategy.optuna_storage and ``jaxhpo report --to-optuna``: dialect, driver, an SQLite file that
is a database; one line naming the option, before a run is built or a report rewritten."""

from __future__ import annotations

import dataclasses
import importlib.util
import sqlite3

import pytest

from jaxhpo import cli
from jaxhpo.reporting.optuna_export import check_storage
from jaxhpo.storage_url import check_storage_url

MISSING_DRIVER = "pymysql"


@pytest.fixture
def not_a_db(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are notes, not a database\n")
    return path


def _refused(url, match):
    with pytest.raises(ValueError, match=match) as e:
        check_storage_url(url, "where")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("study.db", r"^where: 'study.db' is not a storage URL"),
        (42, r"^where: 42 is not a storage URL"),
        ("foo://bar", r"^where: unknown database 'foo'"),
        ("sqlite:////nonexistent/dir/x.db", r"^where: folder /nonexistent/dir does not exist"),
        ("sqlite:////", r"^where: / is a folder"),
    ],
)
def test_bad_storage_url_is_one_line(url, match):
    _refused(url, match)


@pytest.mark.skipif(
    importlib.util.find_spec(MISSING_DRIVER) is not None, reason="the driver is installed"
)
def test_missing_database_driver_is_named():
    _refused(
        f"mysql+{MISSING_DRIVER}://u@localhost/db",
        rf"^where: the database driver of 'mysql\+{MISSING_DRIVER}' is not installed",
    )


def test_sqlite_file_that_is_not_a_database(not_a_db, tmp_path):
    _refused(f"sqlite:///{not_a_db}", r"notes.db is not an SQLite file")
    journal = tmp_path / "journal.log"
    journal.write_text('{"op_code": 0, "worker_id": "x"}\n')
    _refused(f"sqlite:///{journal}", r"journal.log is an Optuna journal file")


def test_good_sqlite_urls_pass(tmp_path):
    db = tmp_path / "study.db"
    sqlite3.connect(db).execute("create table t (x int)").connection.commit()
    (tmp_path / "empty.db").write_bytes(b"")  # a new database
    for url in (f"sqlite:///{db}", f"sqlite:///{tmp_path / 'empty.db'}", "sqlite://"):
        check_storage_url(url, "where")
    check_storage(f"sqlite:///{tmp_path / 'new.db'}")  # the old name: a thin call


def _one_line(capsys, argv) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("jaxhpo: error: "), err
    return err[0]


def _strategy_storage_field() -> str:
    """The Optuna strategy's storage field: flat (``strategy.optuna_storage``) before the
    strategies' own configs (issue 25), nested (``strategy.storage``) after."""
    from jaxhpo import config

    flat = getattr(config, "StrategyConfig", None)
    names = {f.name for f in dataclasses.fields(flat)} if flat is not None else set()
    return "strategy.optuna_storage" if "optuna_storage" in names else "strategy.storage"


@pytest.mark.parametrize("field", ["report.optuna_storage", "strategy"])
def test_run_with_a_storage_that_is_not_a_database_is_refused_up_front(
    field, not_a_db, tmp_path, capsys, no_compile
):
    """Regression: a bad report.optuna_storage trained the whole run with the export off."""
    field = _strategy_storage_field() if field == "strategy" else field
    runs = tmp_path / "runs"
    line = _one_line(
        capsys, ["run", "lm-optuna", f"{field}=sqlite:///{not_a_db}", f"out_dir={runs}"]
    )
    assert f"{field}: {not_a_db} is not an SQLite file" in line, line
    assert not runs.exists()


def test_run_with_an_unknown_dialect_is_refused(tmp_path, capsys, no_compile):
    runs = tmp_path / "runs"
    line = _one_line(capsys, ["run", "report.optuna_storage=foo://x", f"out_dir={runs}"])
    assert "report.optuna_storage: unknown database 'foo'" in line, line
    assert not runs.exists()


def _files(path):
    return sorted((p.name, p.stat().st_mtime_ns) for p in path.rglob("*"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--to-optuna", "sqlite:///{db}"], "--to-optuna: {db} is not an SQLite file"),
        (["--to-optuna", "foo://x"], "--to-optuna: unknown database 'foo'"),
        (["--study-name", "s"], "--study-name: names the study of --to-optuna"),
    ],
    ids=["not-a-db", "dialect", "study-name-alone"],
)
def test_report_refuses_bad_options_before_rewriting_anything(
    args, expected, not_a_db, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.md").write_text("old summary\n")
    before = _files(run_dir)
    argv = ["report", str(run_dir), *(a.format(db=not_a_db) for a in args)]
    assert expected.format(db=not_a_db) in _one_line(capsys, argv)
    assert _files(run_dir) == before
