"""A real two-process ``jax.distributed`` run on localhost CPU (gloo collectives).

Two ``jaxhpo run`` processes with 2 CPU devices each form one 4-device mesh; process 0 writes the
run directory. The run must give the same metrics (bit for bit) and lineage as one process
with 4 devices.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ARGS = [
    "lm-pbt",
    "population.size=4",
    "train.steps=20",
    "train.segment_steps=5",
    "strategy.ready_steps=5",
    "model.num_layers=1",
    "model.d_model=16",
    "model.d_ff=32",
    "task.batch_size=4",
    "task.max_bytes=200000",
    "--quiet",
]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAXHPO_", "JAX_"))}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    return {**env, **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jaxhpo(args, env, cwd) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jaxhpo.cli", "run", *args]
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode()


def _run_dir(root: Path) -> Path:
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    return run


def test_two_processes_match_one_process(tmp_path):
    port = _free_port()
    procs = [
        _jaxhpo(
            [*ARGS, f"out_dir={tmp_path / 'multi'}"],
            _env(
                JAXHPO_CPU_DEVICES="2",
                JAXHPO_COORDINATOR=f"127.0.0.1:{port}",
                JAXHPO_NUM_PROCESSES="2",
                JAXHPO_PROCESS_ID=str(i),
            ),
            tmp_path,
        )
        for i in range(2)
    ]
    single = _jaxhpo(
        [*ARGS, f"out_dir={tmp_path / 'single'}"], _env(JAXHPO_CPU_DEVICES="4"), tmp_path
    )
    outs = [_finish(p) for p in procs]
    _finish(single)
    assert "Best member" in outs[0] and "Best member" not in outs[1]  # process 0 reports
    multi, one = _run_dir(tmp_path / "multi"), _run_dir(tmp_path / "single")
    info = json.loads((multi / "run.json").read_text())
    assert len(info["devices"]) == 4 and info["member_devices"] == 4
    a, b = pd.read_csv(multi / "metrics.csv"), pd.read_csv(one / "metrics.csv")
    assert len(a) == len(b) == 4 * 5  # steps 0, 5, 10, 15, 20
    # bit-identical: the same per-member programs, only the devices' owners differ
    np.testing.assert_array_equal(a["val_loss"], b["val_loss"])
    np.testing.assert_array_equal(a["train_loss"], b["train_loss"])
    ev_a = [json.loads(x) for x in (multi / "events.jsonl").read_text().splitlines()]
    ev_b = [json.loads(x) for x in (one / "events.jsonl").read_text().splitlines()]
    lineage = lambda evs: [(e["kind"], e.get("child"), e.get("parent"), e["step"]) for e in evs]
    assert lineage(ev_a) == lineage(ev_b) and any(e["kind"] == "exploit" for e in ev_a)
    assert (multi / "checkpoints").is_dir() and (multi / "plots" / "lineage.png").is_file()
