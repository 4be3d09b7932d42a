"""Check a jaxhpo study in optuna-dashboard, in a real headless browser.

Exports a run directory into an Optuna sqlite storage (what ``jaxhpo report RUN_DIR --to-optuna``
writes: :func:`jaxhpo.reporting.optuna_export.export_run`), serves it with optuna-dashboard on
127.0.0.1 and opens the study's page in Debian's headless ``chromium``, driven over the DevTools
protocol on a pipe (the driver of ``scripts/check_docs_site.py``): the page is polled in real
time until its plots are drawn, then checked and screenshot.

* One objective: the page names the study and shows its "Intermediate Values" panel with every
  member's learning curve. Writes ``OUT/dashboard.png`` and ``OUT/dashboard.json``.
* Several objectives (``strategy.objectives``): the page shows the "Pareto Front" panel, its plot
  holds one point per COMPLETE trial, at the trial's values (objective 0 across, 1 up), and the
  trials it draws as "Best Trial" are Optuna's front (``study.best_trials``) and the run's own
  (the final members that are feasible and non-dominated, :func:`jaxhpo.pareto.front_mask`).
  Writes ``OUT/pareto.png`` and ``OUT/pareto.json``.

    pip install -e '.[dashboard]' && apt-get install chromium
    python scripts/check_optuna_dashboard.py RUN_DIR [--out scripts/results/dashboard]

Exits 0 when every check passes (the JSON printed), 1 with a one-line message naming what failed,
2 when chromium or optuna-dashboard is not installed.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_docs_site import Browser, SiteCheckError  # noqa: E402 - the DevTools pipe driver

#: The study page as rendered: its text, its panel headings, and each plotly graph's traces (the
#: graph div's ``data``: a trace's kind is the ``<extra>`` of its hover template, its trials'
#: numbers are in its hover texts) and the points drawn in its SVG.
PAGE_PROBE = """JSON.stringify({
  text: document.body.innerText,
  headings: Array.from(document.querySelectorAll("h6")).map(h => h.textContent.trim()),
  graphs: Object.fromEntries(Array.from(document.querySelectorAll(".js-plotly-plot[id]")).map(
    g => [g.id, {
      points: g.querySelectorAll(".scatterlayer path.point").length,
      lines: g.querySelectorAll(".scatterlayer path.js-line").length,
      traces: Array.from(g.data || []).map(t => ({
        kind: ((t.hovertemplate || "").match(/<extra>(.*)<\\/extra>/) || [])[1] || t.name || "",
        x: Array.from(t.x || []), y: Array.from(t.y || []),
        text: Array.isArray(t.text) ? t.text : [],
      })),
    }])),
})"""

PARETO_GRAPH = "graph-pareto-front"


class DashboardCheckError(Exception):
    """A check of the dashboard failed (the message says which and what was seen)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dashboard_exe() -> str | None:
    beside = Path(sys.executable).with_name("optuna-dashboard")
    return str(beside) if beside.exists() else shutil.which("optuna-dashboard")


def _serve(exe: str, storage: str, log: Path, seconds: float) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    with open(log, "w") as f:
        server = subprocess.Popen(
            [exe, storage, "--host", "127.0.0.1", "--port", str(port)],
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    end = time.time() + seconds
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/studies", timeout=2).read()
            return server, base
        except OSError:
            if server.poll() is not None or time.time() > end:
                server.kill()
                server.wait()
                tail = " | ".join(log.read_text().strip().splitlines()[-3:])
                raise DashboardCheckError(f"optuna-dashboard did not answer at {base}: {tail}")
            time.sleep(0.3)


def _numbers(trace: dict) -> list[int]:
    """The trial numbers of a trace's points (from their hover texts: the trial as JSON)."""
    out = []
    for t in trace["text"]:
        m = re.search(r'"number":\s*(\d+)', t)
        out.append(int(m.group(1)) if m else -1)
    return out


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def run_front(run_dir: Path) -> list[int] | None:
    """The run's own Pareto front: the final members feasible and non-dominated (None: one
    objective)."""
    import pandas as pd
    import yaml

    from jaxhpo import pareto
    from jaxhpo.objectives import Front

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    front = Front.of(cfg.get("strategy") or {})
    if front is None:
        return None
    members = pd.read_csv(run_dir / "members.csv")
    on = pareto.front_mask(*front.matrix(members))
    return sorted(int(m) for m in members["member"][on])


def check_pareto(page: dict, study, run_members: list[int] | None) -> dict:
    """The Pareto front panel against the study: its points, their places, the front."""
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    values = {t.number: t.values for t in complete}
    best = sorted(t.number for t in study.best_trials)
    member_of = {t.number: t.user_attrs.get("member") for t in study.trials}
    graph = page.get("graphs", {}).get(PARETO_GRAPH) or {}
    traces = graph.get("traces", [])
    drawn: dict[str, list[int]] = {}
    misplaced = []
    for tr in traces:
        nums = _numbers(tr)
        drawn.setdefault(tr["kind"], []).extend(nums)
        for n, x, y in zip(nums, tr["x"], tr["y"], strict=False):
            v = values.get(n)
            if v is None or not (_close(x, v[0]) and _close(y, v[1])):
                misplaced.append(n)
    on_page = sorted(n for ns in drawn.values() for n in ns)
    page_front = sorted(drawn.get("Best Trial", []))
    front_members = sorted(member_of[n] for n in page_front)
    result = {
        "directions": [d.name.lower() for d in study.directions],
        "complete_trials": len(complete),
        "page_shows_pareto_front": "Pareto Front" in page.get("headings", []),
        "points_drawn": graph.get("points", 0),
        "trials_plotted": on_page,
        "trials_by_kind": {k: sorted(v) for k, v in drawn.items()},
        "front_on_page": page_front,
        "front_of_optuna": best,
        "front_members_on_page": front_members,
        "front_members_of_run": run_members,
    }
    problems = []
    if not result["page_shows_pareto_front"]:
        problems.append(f"no 'Pareto Front' panel (panels: {page.get('headings')})")
    if not traces:
        problems.append(f"no plot in #{PARETO_GRAPH}")
    if on_page != sorted(values):
        problems.append(f"trials plotted {on_page}, COMPLETE trials {sorted(values)}")
    if graph.get("points", 0) != len(complete):
        problems.append(f"{graph.get('points', 0)} points drawn for {len(complete)} trials")
    if misplaced:
        problems.append(f"trials drawn away from their values: {sorted(set(misplaced))}")
    if page_front != best:
        problems.append(f"front on the page {page_front}, Optuna's best_trials {best}")
    every_trial_complete = len(complete) == len(study.trials)  # else the run's front differs
    if run_members is not None and every_trial_complete and front_members != run_members:
        problems.append(f"front's members {front_members}, the run's front {run_members}")
    if problems:
        raise DashboardCheckError("; ".join(problems))
    return result


def check_single(page: dict, study) -> dict:
    """The intermediate values panel: every trial's learning curve."""
    trials = study.get_trials(deepcopy=False)
    with_curves = [t for t in trials if t.intermediate_values]
    graph = page.get("graphs", {}).get("graph-intermediate-values") or {}
    result = {
        "trials": len(trials),
        "trials_with_intermediate_values": len(with_curves),
        "page_shows_intermediate_values": "intermediate values" in page.get("text", "").lower(),
        "curves_drawn": len(graph.get("traces", [])),
    }
    problems = []
    if not with_curves:
        problems.append("no trial has intermediate values")
    if not result["page_shows_intermediate_values"]:
        problems.append(f"no 'Intermediate Values' panel (panels: {page.get('headings')})")
    elif result["curves_drawn"] < len(with_curves):
        problems.append(f"{result['curves_drawn']} curves drawn for {len(with_curves)} trials")
    if problems:
        raise DashboardCheckError("; ".join(problems))
    return result


def _ready(page: dict, name: str, several: bool, expect: int) -> bool:
    if name not in page.get("text", ""):
        return False
    if several:
        return (page.get("graphs", {}).get(PARETO_GRAPH) or {}).get("points", 0) >= expect
    graph = page.get("graphs", {}).get("graph-intermediate-values") or {}
    return len(graph.get("traces", [])) >= expect


def check(run_dir: Path, out: Path, chromium: str, dashboard: str, seconds: float) -> dict:
    import optuna

    from jaxhpo.reporting.optuna_export import export_run

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="jaxhpo-dashboard-") as tmp:
        storage = f"sqlite:///{Path(tmp) / 'study.db'}"
        name = export_run(run_dir, storage)
        study = optuna.load_study(study_name=name, storage=storage)
        several = len(study.directions) > 1
        if several:
            expect = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        else:
            expect = sum(bool(t.intermediate_values) for t in study.trials)
        stem = "pareto" if several else "dashboard"
        shot = out / f"{stem}.png"
        server, base = _serve(dashboard, storage, Path(tmp) / "server.log", seconds)
        try:
            browser = Browser(chromium, Path(tmp) / "profile")
            try:
                height = 1000 if several else 2400
                browser.call(
                    "Emulation.setDeviceMetricsOverride",
                    session=browser.session,
                    width=1400,
                    height=height,
                    deviceScaleFactor=1,
                    mobile=False,
                )
                url = f"{base}/dashboard/studies/{study._study_id}"
                browser.open(url)
                page = browser.wait_for(
                    PAGE_PROBE, lambda p: _ready(p, name, several, expect), seconds
                )
                time.sleep(0.5)  # plotly's transitions, before the screenshot
                browser.screenshot(shot)
                exceptions = list(browser.exceptions)
            finally:
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    if name not in page.get("text", ""):
        raise DashboardCheckError(f"page {url}: the study {name!r} not shown in {seconds:g} s")
    try:
        if several:
            details = check_pareto(page, study, run_front(Path(run_dir)))
        else:
            details = check_single(page, study)
    except DashboardCheckError as e:
        raise DashboardCheckError(f"page {url}: {e}") from None
    if exceptions:
        raise DashboardCheckError(f"page {url}: script errors: {'; '.join(exceptions)}")
    result = {"study": name, "page": url, "screenshot": str(shot), **details}
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, default=Path("scripts/results/dashboard"))
    p.add_argument("--timeout", type=float, default=90.0, help="seconds the page may take")
    args = p.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("check_optuna_dashboard: Debian's chromium is not installed", file=sys.stderr)
        return 2
    dashboard = _dashboard_exe()
    if dashboard is None:
        print(
            "check_optuna_dashboard: optuna-dashboard is not installed "
            "(pip install -e '.[dashboard]')",
            file=sys.stderr,
        )
        return 2
    try:
        result = check(args.run_dir, args.out, chromium, dashboard, args.timeout)
    except (DashboardCheckError, SiteCheckError) as e:
        print(f"check_optuna_dashboard: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
