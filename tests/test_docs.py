"""The documentation site builds strictly (broken links, missing pages and unresolved API
references fail the build), and its generated tables follow the code: every setting of every
strategy's ``Config`` and every field of the config appears on its page. Skipped where the docs
extra (``pip install -e '.[docs]'``) is not installed."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("mkdocstrings_handlers.python")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_docs_site_builds_strictly_with_every_page(site):
    for page in (
        "getting-started",
        "tune-your-own-model",
        "cli-and-config",
        "strategies",
        "run-directory",
        "resume-and-side-outputs",
        "reproductions",
        "design",
        "reference/api",
    ):
        html = (site / page / "index.html").read_text()
        assert "<!-- generated:" not in html, page
    assert (site / "search" / "search_index.json").exists()
    api = (site / "reference" / "api" / "index.html").read_text()
    for anchor in (
        "jaxhpo.api.tune",
        "jaxhpo.api.TuneResult",
        "jaxhpo.api.TuneResult.model",
        "jaxhpo.tasks.protocol.ModelTask",
        "jaxhpo.population.trainer.Population",
        "jaxhpo.space.Space",
        "jaxhpo.strategies.base.Strategy",
        "jaxhpo.strategies.base.Observation",
        "jaxhpo.strategies.base.PopulationUpdate",
        "jaxhpo.reporting.callbacks.Callback",
    ):
        assert f'id="{anchor}"' in api, anchor


def test_strategy_settings_page_drifting_from_the_config_classes(site):
    from jaxhpo import config
    from jaxhpo.strategies import STRATEGIES

    strategies = (site / "strategies" / "index.html").read_text()
    for name, cls in STRATEGIES.items():
        assert f"<code>{name}</code>" in strategies, name
        for f in dataclasses.fields(cls.Config):
            assert f"strategy.{f.name}" in strategies, (name, f.name)
    sections = (site / "cli-and-config" / "index.html").read_text()
    for section in ("task", "model", "optim", "population", "train", "report"):
        for f in dataclasses.fields(getattr(config.Config(), section)):
            assert f"{section}.{f.name}" in sections, (section, f.name)


NO_CHROMIUM = "no headless browser: Debian's chromium is not installed (apt-get install chromium)"


@pytest.mark.skipif(shutil.which("chromium") is None, reason=NO_CHROMIUM)
def test_docs_site_and_its_search_in_a_headless_browser(tmp_path):
    """``scripts/check_docs_site.py`` builds the site strictly, serves it over http (the search's
    web worker cannot start under ``file://``) and opens it in headless Chromium: the home page
    and a page with plots render, and a search lists results that link to pages of the site."""
    shot = tmp_path / "search.png"
    proc = subprocess.run(
        [sys.executable, "scripts/check_docs_site.py", "--screenshot", str(shot)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["ok"] * 3, proc.stdout
    assert "'Tune your own model'" in lines[1] and "3 images loaded" in lines[1], lines[1]
    assert "search 'halving'" in lines[2] and "matching documents" in lines[2], lines[2]
    assert shot.stat().st_size > 10_000


@pytest.mark.slow  # a second browser session; the first test checks the site and its search
@pytest.mark.skipif(shutil.which("chromium") is None, reason=NO_CHROMIUM)
def test_docs_site_check_failing_on_a_search_without_results(site, tmp_path):
    """The check fails in one line naming what it saw: a search that lists nothing (an index
    without documents), a page whose scripts fail (no index at all)."""
    broken = tmp_path / "site"
    shutil.copytree(site, broken)
    index = broken / "search" / "search_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "docs": []}))
    args = ["--site", str(broken)]
    proc = subprocess.run(
        [sys.executable, "scripts/check_docs_site.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("check_docs_site: search http://127.0.0.1:") and "\n" not in err, err
    assert "halving: no results (search box open, query 'halving', meta 'No matching" in err, err
    index.unlink()
    proc = subprocess.run(
        [sys.executable, "scripts/check_docs_site.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = proc.stderr.strip()
    assert proc.returncode == 1 and "\n" not in err, err
    assert err.startswith("check_docs_site: page http://127.0.0.1:") and "script errors" in err
