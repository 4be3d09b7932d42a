"""The optimizer and the schedule searched from a run's space (``jaxhpo/optim/space_choice.py``):
``space.optimizer=[adamw, sgd, momentum]`` becomes a per-member choice in one program, the
strategies search its codes, ``when`` names the choices; a killed mixed run resumes bit-identically.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_LM_OVERRIDES

from jaxhpo.cli import load_config
from jaxhpo.config import ConfigError
from jaxhpo.experiment import prepare
from jaxhpo.optim import space_choice as choice_space
from jaxhpo.optim.choices import ChoiceSpec
from jaxhpo.space import Choice, Fixed

MIXED = [
    "space.optimizer=[adamw, sgd, momentum]",
    "space.schedule=[warmup_cosine, constant]",
    "space.momentum={type: float, low: 0.5, high: 0.99, when: {optimizer: [momentum]}}",
]
SMALL = [*TINY_LM_OVERRIDES, "train.steps=20", "train.segment_steps=10", "population.size=8"]


def test_space_names_become_codes_of_one_mixed_program():
    prep = prepare(load_config("lm-random", [*MIXED, *SMALL]))
    assert prep.space["optimizer"] == Choice((0, 1, 2))
    assert prep.space["schedule"] == Choice((0, 1))
    assert prep.space.when["momentum"] == (("optimizer", (2,)),)
    pop = prep.population
    assert isinstance(pop.opt, ChoiceSpec)
    assert (pop.optimizer, pop.schedule) == (
        ("adamw", "sgd", "momentum"),
        ("warmup_cosine", "constant"),
    )
    assert {"optimizer", "schedule", "momentum", "lr"} <= set(pop.hparam_names)
    hp = prep.hparams
    assert set(np.unique(hp["optimizer"])) <= {0.0, 1.0, 2.0}
    # momentum is drawn only for momentum SGD, NaN (inactive) elsewhere
    assert np.all(np.isnan(hp["momentum"]) == (hp["optimizer"] != 2))
    assert choice_space.labels(prep.cfg) == {
        "optimizer": ("adamw", "sgd", "momentum"),
        "schedule": ("warmup_cosine", "constant"),
    }


def test_a_fixed_name_is_a_choice_of_one_and_codes_pass_through():
    cfg = load_config("lm-random", ["space.optimizer=sgd", *SMALL])
    assert choice_space.program(cfg) == (("sgd",), "warmup_cosine")
    assert choice_space.as_codes(cfg, prepare(cfg).space)["optimizer"] == Fixed(0)
    plain = load_config("lm-random", SMALL)
    assert choice_space.program(plain) == ("adamw", "warmup_cosine")
    assert choice_space.labels(plain) == {}


@pytest.mark.parametrize(
    "override, message",
    [
        ("space.optimizer=[adamw, rmsprop]", "space.optimizer: unknown 'rmsprop' (choose from"),
        ("space.schedule=[constant, linear_decay]", "space.schedule: unknown 'linear_decay'"),
    ],
)
def test_an_unknown_name_is_a_one_line_error(override, message):
    with pytest.raises(ConfigError) as exc:
        prepare(load_config("lm-random", [override, *SMALL]))
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_a_when_on_an_unknown_choice_is_a_one_line_error():
    bad = "space.momentum={type: float, low: 0.5, high: 0.9, when: {optimizer: [nesterov]}}"
    with pytest.raises(ConfigError) as exc:
        prepare(load_config("lm-random", ["space.optimizer=[adamw, sgd]", bad, *SMALL]))
    assert str(exc.value).startswith("space.momentum.when.optimizer: 'nesterov' is not one of")


@pytest.mark.slow
def test_sigkill_then_resume_of_a_mixed_pbt_run_is_bit_identical(tmp_path):
    """PBT explores the optimizer and schedule codes and copies members across optimizers (each
    member carries every choice's state): the killed, resumed run equals the uninterrupted one."""
    from test_checkpoint import _assert_same_run, _resume, _run, _run_killed

    study = ["lm-pbt", "population.size=4", "strategy.ready_steps=10", *MIXED]
    full = _run(tmp_path / "full", study)
    killed = _run_killed(tmp_path / "killed", study, np.random.default_rng(20))
    _resume(killed)
    _assert_same_run(full, killed)
    members = (full / "members.csv").read_text().splitlines()
    assert "optimizer" in members[0] and "momentum" in members[0]
