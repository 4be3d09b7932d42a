"""Slow checks (minutes): ``pytest -m slow``. Not part of the default suite."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from jaxhpo.cli import main

pytestmark = pytest.mark.slow


def test_default_experiment_learns_and_hparams_matter(tmp_path):
    """`jaxhpo run` as shipped: validation loss falls and members end visibly apart."""
    assert main(["run", "--out", str(tmp_path), "--quiet"]) == 0
    (run_dir,) = list(tmp_path.iterdir())
    table = pd.read_parquet(run_dir / "metrics.parquet")
    first = table[table.step == 0]["val_loss"]
    last = table[table.step == table.step.max()]["val_loss"]
    assert first.min() > 5.0  # untrained: about log(256) = 5.55 nats per byte
    assert last.min() < 3.0  # trained for 400 steps
    assert last.max() - last.min() > 0.2  # hyperparameters matter
    assert not table["diverged"].any()


EQUIVALENCE = textwrap.dedent(
    """
    import chex, jax, numpy as np
    from jaxhpo.population import Population, gather
    from jaxhpo.tasks import LanguageModelTask
    task = LanguageModelTask(max_bytes=300_000, seq_len=32, batch_size=8, eval_batches=1,
                             model={"num_layers": 2, "num_heads": 2, "d_model": 32, "d_ff": 64})
    hp = {"lr": np.geomspace(1e-3, 1e-2, 8), "dropout": np.linspace(0, 0.2, 8)}
    popn = Population(task, "adamw", "warmup_cosine", mode="map", searched=tuple(hp))
    key = jax.random.key(0)
    full, _ = popn.train_segment(popn.init(key, np.arange(8), hp), task.train_data, 30)
    alone, _ = popn.train_segment(popn.init(key, [6], {k: v[6:7] for k, v in hp.items()}),
                                  task.train_data, 30)
    chex.assert_trees_all_close(gather(full, [6]).params, alone.params, rtol=2e-5, atol=2e-6)
    print("ok")
    """
)


def test_equivalence_at_default_xla_optimisation(tmp_path):
    """The default suite compiles at XLA's lowest backend optimisation level for speed; this
    repeats the member-alone equivalence with XLA's defaults, as users run it."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(
        [sys.executable, "-c", EQUIVALENCE], env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
