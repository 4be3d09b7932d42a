"""Regression tests of the frictions a new user met bringing a model of their own (issue 28),
each named after what it guards against: a relative task reference that could not be resumed
from another folder, the command line and ``jaxhpo.tune`` disagreeing on defaults, user-task
runs named and configured as the byte-level LM, an unsearched batch size in the tables,
``TuneResult`` giving only the best member, and a whole-space override split at a comma."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import yaml

import jaxhpo
from jaxhpo import cli, refs
from jaxhpo.config import Config, build, parse_override, quote_calls
from jaxhpo.presets import USER_TASK_DEFAULTS

TASK_SOURCE = """
import numpy as np
import optax
from flax import nnx

import jaxhpo


class Tiny(jaxhpo.ModelTask):
    batch_size = 8
    hparams = {"scale": 1.0}

    def __init__(self, rows: int = 64):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(rows, 4)).astype(np.float32)
        y = (x.sum(1) > 0).astype(np.int32)
        self.train_data = {"x": x[:40], "y": y[:40]}
        self.val_data = {"x": x[40:52], "y": y[40:52]}
        self.test_data = {"x": x[52:], "y": y[52:]}

    def init(self, key, hp):
        return nnx.Linear(4, 2, rngs=nnx.Rngs(key))

    def loss(self, model, batch, hp, key):
        logits = model(batch["x"]) * hp["scale"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return ce, {"accuracy": (logits.argmax(-1) == batch["y"]).mean()}
"""

LR = "loguniform(1e-3, 1e-1)"
RUN = ["population.size=2", "train.steps=4", "train.segment_steps=2"]


def _table(path: Path) -> pd.DataFrame:
    t = pd.read_csv(path)
    return t.drop(columns=[c for c in ("run", "wall_time") if c in t.columns])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One study of the task in ``tiny.py``, run from the command line with a relative file
    reference (and a fixed weight decay), and from ``jaxhpo.tune`` with the same space."""
    root = tmp_path_factory.mktemp("first_hour")
    (root / "src").mkdir()
    (root / "src" / "tiny.py").write_text(TASK_SOURCE)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root / "src")
        args = ["run", "task.kind=tiny.py:Tiny", f"space.lr={LR}", "space.weight_decay=0.01"]
        assert cli.main([*args, *RUN, "--out", str(root / "cli"), "--quiet"]) == 0
    (cli_dir,) = (root / "cli").iterdir()
    task = refs.resolve(f"{root / 'src' / 'tiny.py'}:Tiny", "task")()
    result = jaxhpo.tune(
        task,
        {"lr": LR, "weight_decay": 0.01},
        population=2,
        steps=4,
        segment_steps=2,
        out_dir=root / "py",
        quiet=True,
    )
    return root, cli_dir, result


def test_relative_task_file_reference_is_stored_absolute_and_resumes_from_another_folder(study):
    root, cli_dir, _ = study
    kind = yaml.safe_load((cli_dir / "config.yaml").read_text())["task"]["kind"]
    assert kind == f"{(root / 'src' / 'tiny.py').resolve()}:Tiny"
    # an interrupted copy (the end's tables gone, only the first checkpoint left), resumed
    # from another folder
    cut = root / "elsewhere" / cli_dir.name
    shutil.copytree(cli_dir, cut)
    for name in ("members.csv", "metrics.parquet", "summary.md"):
        (cut / name).unlink()
    ckpts = [p for p in (cut / "checkpoints").iterdir() if p.name.isdigit()]
    for p in sorted(ckpts, key=lambda p: int(p.name))[1:]:
        shutil.rmtree(p)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root / "elsewhere")
        assert cli.main(["resume", cli_dir.name, "--quiet"]) == 0
    pd.testing.assert_frame_equal(_table(cli_dir / "members.csv"), _table(cut / "members.csv"))


def test_cli_and_tune_disagreeing_on_defaults_give_one_run_for_one_task(study):
    _, cli_dir, result = study
    pd.testing.assert_frame_equal(
        _table(cli_dir / "metrics.csv"), _table(result.run_dir / "metrics.csv")
    )
    params = inspect.signature(jaxhpo.tune).parameters
    d = USER_TASK_DEFAULTS
    assert params["schedule"].default == d["optim"]["schedule"] == "constant"
    assert params["optimizer"].default == d["optim"]["optimizer"]
    assert params["population"].default == d["population"]["size"]
    assert params["steps"].default == d["train"]["steps"]
    assert params["segment_steps"].default == d["train"]["segment_steps"]
    assert params["strategy"].default == d["strategy"]["name"]
    assert params["metric"].default == d["strategy"]["metric"]
    assert params["seed"].default == d["seed"] and params["out_dir"].default == d["out_dir"]


def test_user_task_run_named_lm_random_with_the_lm_fields_in_its_config(study):
    _, cli_dir, result = study
    assert cli_dir.name.startswith("tiny-random-")
    assert result.run_dir.name.startswith("tiny-random-")
    config = yaml.safe_load((cli_dir / "config.yaml").read_text())
    assert "model" not in config
    assert set(config["task"]) == {"kind", "args", "folds"}
    assert config["optim"]["schedule"] == "constant"
    with pytest.raises(ValueError, match=r"^task.seq_len: a setting of the built-in tasks"):
        cli.load_config(
            None,
            [
                f"task.kind={cli_dir.parent.parent / 'src' / 'tiny.py'}:Tiny",
                f"space.lr={LR}",
                "task.seq_len=128",
            ],
        )


def test_unsearched_batch_size_in_best_hparams_and_tables(study):
    _, cli_dir, result = study
    for table in (result.members, pd.read_csv(cli_dir / "metrics.csv"), result.curves):
        assert "batch_size" not in table.columns and "scale" not in table.columns
        assert {"lr", "weight_decay"} <= set(table.columns)  # searched; fixed by the user
    assert set(result.best_hparams) == {"lr", "weight_decay"}


def test_tune_result_with_only_the_best_member(study):
    _, _, result = study
    assert len(result.members) == 2
    pd.testing.assert_frame_equal(result.curves, pd.read_csv(result.run_dir / "metrics.csv"))
    task = result.task
    batch = {k: jnp.asarray(v) for k, v in task.val_data.items()}
    for m in result.members["member"]:
        model = result.model(int(m))
        got = float(task.evaluate(model, batch, {"scale": jnp.float32(1.0)})["loss"])
        want = float(result.members.set_index("member").loc[m, "val_loss"])
        assert got == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match=r"^member_id: member 7 is not in the final population"):
        result.model(7)


def test_tune_of_one_member_cannot_choose_its_point(study, tmp_path):
    _, _, result = study
    one = jaxhpo.tune(
        result.task,
        {"lr": LR},
        population=1,
        points=[{"lr": 0.02}],
        steps=2,
        segment_steps=2,
        out_dir=tmp_path,
        quiet=True,
    )
    assert one.members["lr"].tolist() == [pytest.approx(0.02)]


def test_whole_space_override_split_at_the_comma_inside_a_shorthand():
    text = "space={lr: loguniform(3e-3, 3e-1), weight_decay: [0.0, 0.1], wd2: int(1, 4)}"
    cfg = build(Config(), parse_override(text))
    assert cfg.space == {
        "lr": "loguniform(3e-3, 3e-1)",
        "weight_decay": [0.0, 0.1],
        "wd2": "int(1, 4)",
    }
    assert quote_calls("'a(1, 2)'") == "'a(1, 2)'"  # inside quotes: as typed
    assert quote_calls("f(1, (2, 3)) x") == '"f(1, (2, 3))" x'
    assert quote_calls("int(1, ") == "int(1, "  # unclosed: the dimension's parser names it
    # the CLI's space override replaces the default experiment's space as a whole
    cfg = cli.load_config(None, ["space={lr: loguniform(3e-3, 3e-1)}"])
    assert list(cfg.space) == ["lr"]
    assert np.isclose(float(cfg.space["lr"].split("(")[1].split(",")[0]), 3e-3)


class _CopyWorst(jaxhpo.Strategy):
    """The strategy of the docs' "Writing a strategy": the worst member copies the best."""

    name = "copy_worst"

    def init(self, seed, space, size):
        from jaxhpo.strategies.base import EmptyState

        return EmptyState(), space.sample(seed, size)

    def update(self, state, obs):
        f = obs.fitness()
        parents = np.arange(len(f))
        parents[f.argmax()] = f.argmin()
        return state, jaxhpo.PopulationUpdate(parents=parents, events=[{"copied": 1}])


def test_tune_refusing_a_strategy_object_outside_the_registry(study, tmp_path):
    _, _, result = study
    r = jaxhpo.tune(
        result.task,
        {"lr": LR},
        strategy=_CopyWorst(),
        population=2,
        steps=4,
        segment_steps=2,
        out_dir=tmp_path,
        quiet=True,
    )
    assert r.run_dir.name.startswith("tiny-copy_worst-")
    assert '"copied"' in (r.run_dir / "events.jsonl").read_text()
