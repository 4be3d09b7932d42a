"""``scripts/bench_search.py``: ``--update`` replaces the rows it runs and keeps the file's other
rows, its notes and its regimes (a named regime such as ``wide`` still resolves to its shape)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(
        "bench_search", ROOT / "scripts" / "bench_search.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_update_keeps_rows_notes_and_regimes(tmp_path, monkeypatch):
    bench = _bench()
    out = tmp_path / "r.json"
    kept = {"median": 1.0, "p90": 2.0, "regrets": [1.0], "seconds": 0.0}
    meta = {"note": "keep me", "regimes": {"5x8": {"generations": 5, "size": 8}}}
    out.write_text(json.dumps({"meta": meta, "results": {"quad2": {"seq": {"bo": kept}}}}))
    argv = ["bench_search.py", "--out", str(out), "--update", "--regimes", "wide,2x3"]
    argv += ["--functions", "quad2", "--methods", "random", "--seeds", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    d = json.loads(out.read_text())
    assert d["results"]["quad2"]["seq"]["bo"] == kept
    assert len(d["results"]["quad2"]["wide"]["random"]["regrets"]) == 2
    assert "2x3" in d["results"]["quad2"]
    assert d["meta"]["note"] == "keep me" and d["meta"]["seeds"] == [0, 1]
    assert d["meta"]["regimes"]["5x8"] == {"generations": 5, "size": 8}
    assert d["meta"]["regimes"]["wide"] == {"generations": 4, "size": 16}
