"""Optuna with a database storage resumes as if never killed: the study in the database is cut
back to the checkpoint, so the resumed run proposes what the uninterrupted run does and the
database ends with the same trials (numbers, states, parameters, values, intermediate values,
member/generation attributes): no duplicate COMPLETE trial, no FAIL, none RUNNING or WAITING."""

from __future__ import annotations

import numpy as np
import pytest
from searchbench import BOWL_SPACE, bowl, curve, generations_of

from jaxhpo.checkpoint import pack_tree, unpack_tree
from jaxhpo.simulate import simulate
from jaxhpo.strategies.base import Strategy

optuna = pytest.importorskip("optuna")
from jaxhpo.strategies.optuna_search import OptunaSearch  # noqa: E402

P, GENERATIONS = 4, 5
TPE = {"n_startup_trials": 4}


class KilledAfterCheckpoint(Strategy):
    """Checkpoints after update ``at``, goes on for ``extra`` more updates (trials told and asked
    that the checkpoint does not know, as a process killed later would leave them), then
    restarts: a fresh strategy is initialised (asking trials of its own) and the checkpoint is
    restored, as ``jaxhpo resume`` does."""

    name = "killed"

    def __init__(self, make, at: int, extra: int):
        self.make, self.inner, self.at, self.extra, self.calls = make, make(), at, extra, 0

    def check(self, train_steps, segment_steps):
        self.check_args = (train_steps, segment_steps)
        self.inner.check(train_steps, segment_steps)

    def init(self, seed, space, size):
        self.args = (seed, space, size)
        return self.inner.init(seed, space, size)

    def update(self, state, obs):
        state, upd = self.inner.update(state, obs)
        self.calls += 1
        if self.calls != self.at:
            return state, upd
        checkpoint = pack_tree(state)
        after = self.inner.restore_state(unpack_tree(checkpoint), state)
        for _ in range(self.extra):  # the killed process went on past its checkpoint
            after, _ = self.inner.update(after, obs)
        self.inner = self.make()
        self.inner.check(*self.check_args)
        fresh, _ = self.inner.init(*self.args)  # the restart asks trials of its own
        return self.inner.restore_state(unpack_tree(checkpoint), fresh), upd


def _trials(url: str, name: str) -> list[tuple]:
    study = optuna.load_study(study_name=name, storage=url)
    return [
        (t.number, t.state.name, t.params, t.value, t.user_attrs, t.intermediate_values)
        for t in study.get_trials(deepcopy=False)
    ]


def _optuna(tmp_path, tag, named):
    url = f"sqlite:///{tmp_path / f'{tag}.db'}"
    name = "study" if named else None
    return url, (lambda: OptunaSearch(sampler="tpe", storage=url, study=name, sampler_options=TPE))


@pytest.mark.parametrize(
    ("named", "at", "extra"),
    [(True, 2, 2), (False, 1, 1), pytest.param(True, 3, 0, marks=pytest.mark.slow)],
    ids=["named-2-extra", "unnamed-1-extra", "named-no-extra"],
)
def test_optuna_sqlite_resume_after_trials_past_the_checkpoint(tmp_path, named, at, extra):
    url_a, make_a = _optuna(tmp_path, "plain", named)
    plain = simulate(make_a(), BOWL_SPACE, curve(bowl), steps=GENERATIONS, segment_steps=1, size=P)
    url_b, make_b = _optuna(tmp_path, "killed", named)
    killed = simulate(
        KilledAfterCheckpoint(make_b, at, extra),
        BOWL_SPACE,
        curve(bowl),
        steps=GENERATIONS,
        segment_steps=1,
        size=P,
    )
    for a, b in zip(
        generations_of(plain, BOWL_SPACE, GENERATIONS),
        generations_of(killed, BOWL_SPACE, GENERATIONS),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    names_a, names_b = optuna.get_all_study_names(url_a), optuna.get_all_study_names(url_b)
    assert len(names_a) == len(names_b) == 1  # the restart's own study was deleted
    ta, tb = _trials(url_a, names_a[0]), _trials(url_b, names_b[0])
    assert tb == ta
    assert len(tb) == P * GENERATIONS and {t[1] for t in tb} == {"COMPLETE"}


def test_optuna_sqlite_resume_keeps_a_continued_studys_earlier_trials(tmp_path):
    """A named study that held trials before the run keeps them through a kill and resume."""
    url_a, make_a = _optuna(tmp_path, "plain", True)
    url_b, make_b = _optuna(tmp_path, "killed", True)
    for url in (url_a, url_b):  # an earlier study of the same name
        simulate(
            OptunaSearch(sampler="random", storage=url, study="study"),
            BOWL_SPACE,
            curve(bowl),
            steps=1,
            segment_steps=1,
            size=3,
        )
    plain = simulate(make_a(), BOWL_SPACE, curve(bowl), steps=GENERATIONS, segment_steps=1, size=P)
    killed = simulate(
        KilledAfterCheckpoint(make_b, 2, 1),
        BOWL_SPACE,
        curve(bowl),
        steps=GENERATIONS,
        segment_steps=1,
        size=P,
    )
    for a, b in zip(
        generations_of(plain, BOWL_SPACE, GENERATIONS),
        generations_of(killed, BOWL_SPACE, GENERATIONS),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    ta, tb = _trials(url_a, "study"), _trials(url_b, "study")
    assert [t[:4] for t in tb] == [t[:4] for t in ta] and len(tb) == 3 + P * GENERATIONS


def _db_trials(url: str) -> list[tuple]:
    (name,) = optuna.get_all_study_names(url)
    return _trials(url, name)


@pytest.mark.slow
def test_optuna_sqlite_sigkill_then_resume_equals_the_uninterrupted_run(tmp_path):
    """Regression: a named sqlite study killed with SIGKILL and resumed ended with other
    hyperparameters from the next generation on, shifted trial numbers and duplicate COMPLETE,
    FAIL and RUNNING trials. Killed after a random checkpoint, the resume killed again, resumed:
    metrics, events, members and the database's trials equal the uninterrupted run's."""
    import signal
    import subprocess
    import time

    from test_checkpoint import _assert_same_run, _cli, _env, _resume, _run, _run_killed

    def study(db: str) -> list[str]:
        return [
            "lm-optuna",
            "population.size=4",
            "strategy.generation_steps=20",
            "strategy.study=s",
            "strategy.sampler_options={n_startup_trials: 4}",
            f"strategy.storage=sqlite:///{tmp_path / db}",
        ]

    full = _run(tmp_path / "full", study("full.db"))
    rng = np.random.default_rng(16)
    killed = _run_killed(tmp_path / "killed", study("killed.db"), rng)
    segments = max(int(p.parent.name) for p in killed.glob("checkpoints/*/commit_success.txt"))
    proc = subprocess.Popen(  # the resume, killed after its next checkpoint
        _cli("resume", str(killed), "--quiet"), env=_env(), stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        done = [int(p.parent.name) for p in killed.glob("checkpoints/*/commit_success.txt")]
        if max(done, default=0) > segments:
            break
        time.sleep(0.05)
    time.sleep(float(rng.uniform(0.0, 0.08)))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _resume(killed)
    _assert_same_run(full, killed)
    ta = _db_trials(f"sqlite:///{tmp_path / 'full.db'}")
    tb = _db_trials(f"sqlite:///{tmp_path / 'killed.db'}")
    assert tb == ta and {t[1] for t in tb} == {"COMPLETE"}
