"""``jaxhpo.tune(population=1, first_member=m)`` trains member ``m`` of a larger run alone, bit
for bit (issue 28): a member's initial weights, data order and dropout derive from the seed and
its id, so one member given its id and hyperparameters is the same member."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pandas as pd
import pytest
from flax import nnx

import jaxhpo
from jaxhpo import cli
from jaxhpo.config import ConfigError

POINTS = [{"lr": 0.003}, {"lr": 0.01}, {"lr": 0.03}, {"lr": 0.1}]


class Noisy(jaxhpo.ModelTask):
    """A small classifier with dropout (a per-member random stream) and minibatches (a
    per-member data order), so that a member's id shows in its training."""

    batch_size = 8
    hparams = {"dropout": 0.2}

    def __init__(self, rows: int = 96):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(rows, 6)).astype(np.float32)
        y = (x[:, :3].sum(1) > 0).astype(np.int32)
        self.train_data = {"x": x[:64], "y": y[:64]}
        self.val_data = {"x": x[64:80], "y": y[64:80]}
        self.test_data = {"x": x[80:], "y": y[80:]}

    def init(self, key, hp):
        return nnx.Sequential(
            nnx.Linear(6, 16, rngs=nnx.Rngs(key)),
            nnx.relu,
            nnx.Dropout(0.2, rngs=nnx.Rngs(dropout=jax.random.fold_in(key, 1))),
            nnx.Linear(16, 2, rngs=nnx.Rngs(jax.random.fold_in(key, 2))),
        )

    def loss(self, model, batch, hp, key):
        logits = model(batch["x"])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return ce, {"accuracy": (logits.argmax(-1) == batch["y"]).mean()}


def _tune(tmp_path, name, **kw):
    args = {"population": 1, "steps": 6, "segment_steps": 3, "out_dir": tmp_path, "quiet": True}
    return jaxhpo.tune(Noisy(), {"lr": "loguniform(1e-3, 1e-1)"}, name=name, **(args | kw))


def _rows(table: pd.DataFrame, member: int) -> pd.DataFrame:
    rows = table[table["member"] == member].drop(columns=["run", "wall_time"], errors="ignore")
    return rows.reset_index(drop=True)


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    return _tune(tmp_path_factory.mktemp("four"), "four", population=4, points=POINTS)


@pytest.mark.parametrize("member", [2, 0])
def test_tune_of_one_member_cannot_choose_its_member_id(four, tmp_path, member):
    one = _tune(tmp_path, "one", points=[POINTS[member]], first_member=member)
    assert one.members["member"].tolist() == [member]
    pd.testing.assert_frame_equal(_rows(one.curves, member), _rows(four.curves, member))
    pd.testing.assert_frame_equal(_rows(one.members, member), _rows(four.members, member))
    alone = nnx.state(one.model(member), nnx.Param)
    together = nnx.state(four.model(member), nnx.Param)
    for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(together), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if member:  # another id trains another member: the test sees the id
        other = _tune(tmp_path, "other", points=[POINTS[member]])
        assert not _rows(other.curves, 0)["train_loss"].equals(
            _rows(four.curves, member)["train_loss"]
        )


def test_first_member_numbers_the_population_and_reaches_the_cli(tmp_path):
    two = _tune(tmp_path, "two", population=2, points=POINTS[:2], first_member=np.int64(5))
    assert two.members["member"].tolist() == [5, 6]
    assert two.best_member in (5, 6)
    task = f"task.kind={__file__}:Noisy"
    cfg = cli.load_config(None, [task, "space.lr=0.01", "population.first_member=5"])
    assert cfg.population.first_member == 5


@pytest.mark.parametrize("bad", [-1, 2**31, 2.5, True, "5"])
def test_first_member_out_of_range_refused_in_one_line(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"^population\.first_member: ") as e:
        _tune(tmp_path, "bad", first_member=bad)
    assert "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())  # refused before anything was written
