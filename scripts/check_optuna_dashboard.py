"""Check a jaxhpo study in optuna-dashboard, in a real headless browser.

Exports a run directory into an Optuna sqlite storage (``jaxhpo report RUN_DIR --to-optuna``),
serves it with optuna-dashboard on 127.0.0.1, opens the study's page in headless Chromium
(Debian's ``chromium``) and saves a screenshot; the page's rendered text must show the study and
its "Intermediate Values" panel. Writes ``OUT/dashboard.png`` and ``OUT/dashboard.json``.

    pip install -e '.[dashboard]' && apt-get install chromium
    python scripts/check_optuna_dashboard.py RUN_DIR --out scripts/results/dashboard
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, seconds: float = 120.0) -> None:
    end = time.time() + seconds
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"optuna-dashboard did not answer at {url}")


def _chromium(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise SystemExit("check_optuna_dashboard: Debian's chromium is not installed")
    base = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=180)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--out", default="scripts/results/dashboard")
    args = p.parse_args(argv)
    from jaxhpo.reporting.optuna_export import export_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = out / "study.db"
    db.unlink(missing_ok=True)
    storage = f"sqlite:///{db.resolve()}"
    name = export_run(args.run_dir, storage)
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    study_id = study._study_id
    port = _free_port()
    log = open(out / "dashboard-server.log", "w")  # noqa: SIM115 - closed with the server
    exe = shutil.which("optuna-dashboard") or str(
        Path(sys.executable).with_name("optuna-dashboard")
    )
    server = subprocess.Popen(
        [exe, storage, "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/api/studies")
        page = f"{base}/dashboard/studies/{study_id}"
        shot = out / "dashboard.png"
        _chromium(
            f"--screenshot={shot.resolve()}",
            "--window-size=1400,2400",
            "--virtual-time-budget=15000",
            page,
        )
        dom = _chromium("--dump-dom", "--virtual-time-budget=15000", page).stdout
        api = json.loads(urllib.request.urlopen(f"{base}/api/studies/{study_id}").read())
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    trials = api.get("trials", [])
    result = {
        "study": name,
        "page": page,
        "screenshot": str(shot),
        "trials": len(trials),
        "trials_with_intermediate_values": sum(bool(t.get("intermediate_values")) for t in trials),
        "page_shows_study": name in dom,
        "page_shows_intermediate_values": "intermediate values" in dom.lower(),
    }
    (out / "dashboard.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = result["page_shows_study"] and result["page_shows_intermediate_values"]
    ok = ok and result["trials_with_intermediate_values"] > 0
    return 0 if ok and shot.exists() else 1


if __name__ == "__main__":
    raise SystemExit(main())
