"""The documentation site builds strictly (broken links, missing pages and unresolved API
references fail the build), and its generated tables follow the code: every setting of every
strategy's ``Config`` and every field of the config appears on its page. Skipped where the docs
extra (``pip install -e '.[docs]'``) is not installed."""

from __future__ import annotations

import dataclasses
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


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="no headless chromium")
def test_docs_site_opens_in_a_headless_browser(site, tmp_path):
    """The built pages render in headless Chromium (the DOM after scripts ran)."""
    shot = tmp_path / "home.png"
    args = ["chromium", "--headless", "--no-sandbox", "--disable-gpu"]
    page = (site / "tune-your-own-model" / "index.html").as_uri()
    dom = subprocess.run(
        [*args, "--dump-dom", page], capture_output=True, text=True, timeout=120
    ).stdout
    assert "Tune your own model" in dom and "md-search" in dom
    subprocess.run(
        [*args, f"--screenshot={shot}", "--window-size=1200,900", page],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 10_000
