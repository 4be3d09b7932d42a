"""The examples in examples/ (written only against the public API) run, in a reduced form:
the MLP with BatchNorm and Dropout under random search, PBT and online hypergradients, the
ViT built from nnx.MultiHeadAttention under Sobol search with optax.lion, fine-tuning an encoder
from the user's own weights, and PBT with a schedule of the user's own."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import finetune_encoder  # noqa: E402
import mlp_digits  # noqa: E402
import pbt_schedule  # noqa: E402
import vit_digits  # noqa: E402

SMALL = ["--members", "2", "--steps", "20", "--segment-steps", "10"]


# random search in the default suite; PBT and hypergradients on the same example under -m slow
@pytest.mark.parametrize(
    "strategy",
    [
        "random",
        pytest.param("pbt", marks=pytest.mark.slow),
        pytest.param("hypergrad", marks=pytest.mark.slow),
    ],
)
def test_mlp_digits_example(tmp_path, strategy):
    result = mlp_digits.main(["--strategy", strategy, *SMALL, "--out", str(tmp_path)])
    members = pd.read_csv(result.run_dir / "members.csv")
    assert len(members) == 2 and np.isfinite(members["val_loss"]).all()
    assert result.best_metrics["val_accuracy"] > 0.3  # 20 steps on digits: well above chance
    assert (result.run_dir / "summary.md").exists()


def test_vit_digits_example(tmp_path):
    result = vit_digits.main([*SMALL, "--dim", "16", "--out", str(tmp_path)])
    metrics = pd.read_csv(result.run_dir / "metrics.csv")
    assert {"lr", "weight_decay", "label_smoothing"} <= set(metrics.columns)
    assert np.isfinite(result.best_metrics["val_loss"])


def test_finetune_encoder_example_loads_the_users_weights(tmp_path):
    """The saved encoder goes into every member's init unchanged; a small search fine-tunes it."""
    weights = tmp_path / "encoder.npz"
    finetune_encoder.pretrain(weights, width=16, steps=5)
    saved = dict(np.load(weights))
    task = finetune_encoder.FineTune(str(weights), width=16)
    model = task.init(jax.random.key(3), {})
    flat = nnx.to_flat_state(nnx.state(model.encoder, nnx.Param))
    assert {"/".join(map(str, k)) for k, _ in flat} == set(saved)
    for k, v in flat:
        np.testing.assert_array_equal(np.asarray(v.get_value()), saved["/".join(map(str, k))])
    argv = ["--weights", str(weights), "--width", "16", *SMALL, "--out", str(tmp_path)]
    result = finetune_encoder.main(argv)
    members = pd.read_csv(result.run_dir / "members.csv")
    assert len(members) == 2 and {"lr", "weight_decay"} <= set(members.columns)
    assert np.isfinite(members["val_loss"]).all()


def test_pbt_schedule_example(tmp_path):
    """PBT with the user's optax factory: its searched arguments are per-member columns, the
    fixed cycle a constant one, and the script writes its schedule plot."""
    argv = ["--members", "2", "--steps", "20", "--segment-steps", "10", "--cycle", "10"]
    result = pbt_schedule.main([*argv, "--out", str(tmp_path)])
    metrics = pd.read_csv(result.run_dir / "metrics.csv")
    assert {"lr", "momentum", "floor", "cycle"} <= set(metrics.columns)
    assert (metrics["cycle"] == 10).all()
    assert np.isfinite(result.best_metrics["val_loss"])
    assert (result.run_dir / "schedule.png").stat().st_size > 0
