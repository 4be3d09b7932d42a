"""Several objectives from the Python API and in the reports (issue 27): ``jaxhpo.tune(...,
objectives=, constraints=)``, ``TuneResult.front`` and its members' models, TensorBoard's HParams
session with every objective (read back with tensorboard's event reader), and the Optuna export
with one direction per objective (read back with ``optuna.load_study``)."""

from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from mlp_digits import Digits  # noqa: E402

import jaxhpo  # noqa: E402
from jaxhpo import pareto  # noqa: E402

LR = {"lr": {"type": "float", "low": 1e-3, "high": 3e-1, "log": True}}
OBJ = {"loss": "min", "accuracy": "max"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One random-search study of 5 members with two objectives, exported to Optuna live."""
    tmp = tmp_path_factory.mktemp("mo")
    task = Digits(hidden=8)
    r = jaxhpo.tune(
        task, LR, strategy="random", population=5, steps=20, segment_steps=10, out_dir=tmp,
        objectives=OBJ, quiet=True,
        settings={"report": {"optuna_storage": f"sqlite:///{tmp / 'study.db'}"}},
    )  # fmt: skip
    return task, r, f"sqlite:///{tmp / 'study.db'}"


def _front_by_hand(members):
    F = np.stack([members["val_loss"], -members["val_accuracy"]], axis=1).astype(np.float64)
    return set(members["member"][pareto.front_mask(F)].tolist())


def test_front_is_the_non_dominated_members_and_each_model_rebuilds_its_metrics(study):
    task, r, _ = study
    front = r.front
    assert len(front) >= 1 and set(front["member"]) == _front_by_hand(r.members)
    assert front["kept"].all()  # random search: every member is in the final population
    batch = {k: jnp.asarray(v) for k, v in task.val_data.items()}
    for _, row in front.iterrows():
        model = r.model(int(row["member"]))
        got = task.evaluate(model, batch, {})
        assert float(got["loss"]) == pytest.approx(float(row["val_loss"]), rel=1e-4)
        assert float(got["accuracy"]) == pytest.approx(float(row["val_accuracy"]), abs=1e-6)


def test_one_metric_front_is_the_best_member(tmp_path):
    r = jaxhpo.tune(
        Digits(hidden=8), LR, population=2, steps=10, segment_steps=10, out_dir=tmp_path,
        quiet=True,
    )  # fmt: skip
    assert r.front["member"].tolist() == [r.best_member]


def test_a_constraint_keeps_infeasible_members_off_the_front(tmp_path):
    # accuracy >= 2 is impossible: nothing is feasible, the front is empty
    r = jaxhpo.tune(
        Digits(hidden=8), LR, population=2, steps=10, segment_steps=10, out_dir=tmp_path,
        objectives=OBJ, constraints={"accuracy": ">= 2"}, quiet=True,
    )  # fmt: skip
    assert r.front.empty and len(r.members) == 2


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"objectives": ["loss"]}, TypeError, "^objectives: expected a mapping"),
        ({"objectives": {"loss": "down", "accuracy": "max"}}, Exception, "loss: direction"),
        ({"objectives": OBJ, "strategy": "rl"}, Exception, "optimises one objective"),
        ({"objectives": OBJ, "constraints": {"loss": "small"}}, Exception, "strategy.constr"),
    ],
)
def test_bad_objectives_from_python_are_one_line(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match) as e:
        jaxhpo.tune(Digits(hidden=8), LR, population=2, steps=10, out_dir=tmp_path, **kwargs)
    assert "\n" not in str(e.value)


def test_tensorboard_hparams_hold_every_objective_and_the_front(study):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, r, _ = study
    on = set(r.front["member"])
    for member in r.members["member"]:
        ea = EventAccumulator(str(r.run_dir / "tensorboard" / f"member-{member}"))
        ea.Reload()
        content = ea.PluginTagToContent("hparams")
        data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
        names = {m.name.tag for m in data.experiment.metric_infos}
        assert {"val_loss", "val_accuracy", "pareto_front"} <= names
        row = r.members[r.members["member"] == member].iloc[0]
        for tag, want in (("val_loss", row["val_loss"]), ("val_accuracy", row["val_accuracy"])):
            assert ea.Scalars(tag)[-1].value == pytest.approx(float(want), rel=1e-6)
        assert ea.Scalars("pareto_front")[-1].value == float(member in on)


def test_optuna_export_has_one_direction_per_objective_and_the_front(study):
    import optuna

    _, r, storage = study
    s = optuna.load_study(study_name=r.run_dir.name, storage=storage)
    assert s.directions == [
        optuna.study.StudyDirection.MINIMIZE,
        optuna.study.StudyDirection.MAXIMIZE,
    ]
    trials = {t.user_attrs["member"]: t for t in s.trials}
    assert set(trials) == set(r.members["member"])
    for _, row in r.members.iterrows():
        t = trials[int(row["member"])]
        assert t.values == pytest.approx([row["val_loss"], row["val_accuracy"]], rel=1e-6)
    assert {t.user_attrs["member"] for t in s.best_trials} == set(r.front["member"])


def test_optuna_export_marks_constraints(tmp_path):
    import optuna

    from jaxhpo.reporting.optuna_export import export_run

    r = jaxhpo.tune(
        Digits(hidden=8), LR, population=3, steps=10, segment_steps=10, out_dir=tmp_path,
        objectives=OBJ, constraints={"loss": "<= 1e9"}, quiet=True,
    )  # fmt: skip
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    name = export_run(r.run_dir, storage)
    s = optuna.load_study(study_name=name, storage=storage)
    assert len(s.directions) == 2
    for t in s.trials:
        (c,) = t.system_attrs["constraints"]
        assert c == pytest.approx(t.values[0] - 1e9)
