"""The Optuna strategy fills optuna-dashboard's panels (issue 18, ask 4): every member's objective
is reported at every evaluation (``trial.report`` at the trial's own step), the same after a kill
and resume mid-generation, and the study is linked to its run (user attributes ``run_dir`` and
``run``; the study's name and storage in ``run.json``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY_LM_OVERRIDES
from searchbench import BOWL_SPACE, bowl, curve

from jaxhpo import cli
from jaxhpo.simulate import simulate

optuna = pytest.importorskip("optuna")
from test_optuna_resume import KilledAfterCheckpoint  # noqa: E402

from jaxhpo.strategies.optuna_search import OptunaSearch  # noqa: E402

P, GEN, GENERATIONS = 4, 3, 3
TPE = {"n_startup_trials": 4}


def _search(url, name="study"):
    return OptunaSearch(
        sampler="tpe", storage=url, study=name, sampler_options=TPE, generation_steps=GEN
    )


def _study(strategy, steps=GEN * GENERATIONS):
    return simulate(strategy, BOWL_SPACE, curve(bowl), steps=steps, segment_steps=1, size=P)


def _reports(url, name="study"):
    study = optuna.load_study(study_name=name, storage=url)
    return [
        (t.number, t.state.name, t.params, t.value, t.user_attrs, t.intermediate_values)
        for t in study.get_trials(deepcopy=False)
    ]


def test_every_evaluation_is_an_intermediate_value_of_its_trial(tmp_path):
    """Regression: jaxhpo never called trial.report, so optuna-dashboard's intermediate values
    panel stayed empty."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    res = _study(_search(url))
    trials = _reports(url)
    assert len(trials) == P * GENERATIONS
    for _, state, _, value, attrs, inter in trials:
        assert state == "COMPLETE" and sorted(inter) == [1, 2, 3]  # steps inside the trial
        assert inter[GEN] == value  # the last report is the told value
        rows = res.table[res.table["member"] == attrs["member"]].sort_values("step")
        np.testing.assert_array_equal(list(inter.values()), rows["val_loss"].to_numpy()[-GEN:])


@pytest.mark.parametrize(("at", "extra"), [(2, 2), (4, 3), (3, 0)])
def test_intermediate_values_survive_a_kill_mid_generation(tmp_path, at, extra):
    """Killed mid-generation (the checkpoint at update ``at``, trials reported and told after
    it) and resumed: the database's trials, intermediate values included, equal the
    uninterrupted run's."""
    url_a, url_b = (f"sqlite:///{tmp_path / f'{t}.db'}" for t in ("plain", "killed"))
    _study(_search(url_a))
    _study(KilledAfterCheckpoint(lambda: _search(url_b), at, extra))
    assert _reports(url_b) == _reports(url_a)
    assert all(len(t[5]) == GEN for t in _reports(url_b))


def test_in_memory_study_reports_through_a_resume():
    """The in-memory default: a resumed strategy adds the generation's trials with the values
    reported before its checkpoint."""

    def make():
        return OptunaSearch(sampler="tpe", sampler_options=TPE, generation_steps=GEN)

    plain, killed = make(), KilledAfterCheckpoint(make, 2, 1)
    _study(plain)
    _study(killed)
    a = [(t.number, t.params, t.value, t.intermediate_values) for t in plain.study.trials]
    b = [(t.number, t.params, t.value, t.intermediate_values) for t in killed.inner.study.trials]
    assert b[-P:] == a[-P:] and [t[:3] for t in b] == [t[:3] for t in a]


def test_attach_links_the_study_to_the_run(tmp_path):
    """Regression: the study's name was a hash that linked to nothing. attach (called once the
    run directory exists) sets run_dir/run on the study, again when a resume re-opens it."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    s = OptunaSearch(sampler="random", storage=url)
    state, _ = s.init(0, BOWL_SPACE, P)
    run_dir = tmp_path / "runs" / "lm-optuna-20261203-070000"
    info = s.attach(state, run_dir)
    (name,) = optuna.get_all_study_names(url)
    assert info == {"optuna_study": name, "optuna_storage": url}
    attrs = optuna.load_study(study_name=name, storage=url).user_attrs
    assert attrs == {"run_dir": str(run_dir.absolute()), "run": run_dir.name}
    restart = OptunaSearch(sampler="random", storage=url)  # a resume: a new study, then the state's
    restart.init(0, BOWL_SPACE, P)
    restart.attach(state, run_dir)
    assert optuna.load_study(study_name=name, storage=url).user_attrs == attrs


@pytest.mark.slow  # a real (tiny) LM study: ~25 s on 2 idle cores
def test_lm_optuna_study_is_named_in_run_json_and_reports(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    argv = [
        "run", "lm-optuna", *TINY_LM_OVERRIDES, "population.size=2", "population.devices=1",
        "train.steps=40", "train.segment_steps=10", "strategy.generation_steps=20",
        f"strategy.storage={url}", "--out", str(tmp_path / "runs"), "--quiet",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["optuna_storage"] == url
    study = optuna.load_study(study_name=info["optuna_study"], storage=url)
    assert study.user_attrs == {"run_dir": str(run_dir.absolute()), "run": run_dir.name}
    trials = study.get_trials()
    assert len(trials) == 4
    for t in trials:
        assert sorted(t.intermediate_values) == [10, 20] and t.intermediate_values[20] == t.value
