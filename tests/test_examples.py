"""The examples in examples/ (written only against the public API) run, in a reduced form:
the MLP with BatchNorm and Dropout under random search, PBT and online hypergradients, and the
ViT built from nnx.MultiHeadAttention under Sobol search with optax.lion."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import mlp_digits  # noqa: E402
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
