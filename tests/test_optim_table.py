"""jaxhpo.optim's tables: each entry is consistent, and the code that reads optimizer facts (the
config's domains, hypergradients' coordinates, µP's per-layer rates) reads them from the table."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhpo import optim
from jaxhpo.hypergrad import unrolled
from jaxhpo.models import mup
from jaxhpo.optim import table
from jaxhpo.optim.base import (
    COORDINATE_KINDS,
    MUP_ADAM,
    MUP_SGD,
    POSITIVE,
    ChainInputs,
    Hparam,
    OptimizerEntry,
)

ENTRIES = [*optim.SCHEDULE_TABLE.values(), *optim.OPTIMIZER_TABLE.values()]
IDS = [e.name for e in ENTRIES]

#: jaxhpo.optim.DEFAULTS and run/checks.OPT_DOMAINS as lists before the table (hd_beta had no
#: domain then: it is [0, inf) now).
FORMER_DEFAULTS = {
    "lr": 1e-3,
    "warmup_steps": 0.0,
    "decay_steps": 1000.0,
    "min_lr_ratio": 0.0,
    "decay_rate": 0.5,
    "cycle_steps": 1000.0,
    "weight_decay": 0.0,
    "b1": 0.9,
    "b2": 0.999,
    "eps": 1e-8,
    "momentum": 0.9,
    "clip_norm": float("inf"),
    "adafactor_decay_rate": 0.8,
    "clipping_threshold": 1.0,
    "hd_beta": 0.0,
    "schedule": 0.0,
    "optimizer": 0.0,
}
INF = np.inf
FORMER_DOMAINS = {
    "lr": (0.0, INF, False, False),
    "weight_decay": (0.0, INF, True, False),
    "b1": (0.0, 1.0, True, False),
    "b2": (0.0, 1.0, True, False),
    "eps": (0.0, INF, False, False),
    "momentum": (0.0, 1.0, True, False),
    "clip_norm": (0.0, INF, False, True),
    "warmup_steps": (0.0, INF, True, False),
    "decay_steps": (0.0, INF, False, False),
    "cycle_steps": (0.0, INF, False, False),
    "min_lr_ratio": (0.0, 1.0, True, True),
    "decay_rate": (0.0, INF, False, False),
    "adafactor_decay_rate": (0.0, 1.0, False, True),
    "clipping_threshold": (0.0, INF, False, True),
}


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_each_entry_defaults_lie_in_its_domains(entry):
    assert len(set(entry.names)) == len(entry.names), entry.names
    for h in entry.hparams:
        assert h.domain.contains(h.default), (entry.name, h)
        assert h.domain.low < h.domain.high, (entry.name, h)
    assert entry.doc, entry.name


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_each_entry_differentiates_only_its_hyperparameters_with_a_coordinate(entry):
    own = {h.name: h for h in entry.hparams}
    for name in entry.differentiable:
        assert name in own, (entry.name, name)
        kind = own[name].coordinate
        assert kind in COORDINATE_KINDS, (entry.name, name, kind)
        # a coordinate maps onto the domain: log / softplus onto (0, inf), logit onto (0, 1)
        low, high = own[name].domain.low, own[name].domain.high
        assert low >= 0.0 and (kind != "logit" or high <= 1.0), (entry.name, name)


def test_schedules_start_with_the_peak_rate_and_optimizers_do_not_share_their_names():
    schedule_names = {n for e in optim.SCHEDULE_TABLE.values() for n in e.names}
    for entry in optim.SCHEDULE_TABLE.values():
        assert entry.names[0] == optim.LR
    for entry in optim.OPTIMIZER_TABLE.values():
        assert not schedule_names & set(entry.names), entry.name
        assert entry.mup in (MUP_ADAM, MUP_SGD)


def test_one_name_is_one_hyperparameter_across_the_tables(monkeypatch):
    table.hparams()  # the built-in entries agree
    clash = Hparam("b1", 0.5, POSITIVE, "log")
    sgd = optim.OPTIMIZER_TABLE["sgd"]
    bad = OptimizerEntry("bad", sgd.chain, (*sgd.hparams, clash), (), doc="clash")
    monkeypatch.setitem(optim.OPTIMIZER_TABLE, "bad", bad)
    with pytest.raises(ValueError, match="'bad' declares 'b1'.*one name, one hyperparameter"):
        table.hparams()


def test_derived_defaults_and_domains_equal_the_former_lists():
    """The former lists, less ``learning_rate``: an optax factory's learning rate is ``lr``."""
    assert dict(optim.DEFAULTS) == FORMER_DEFAULTS
    domains = {k: tuple(v) for k, v in optim.DOMAINS.items()}
    assert domains == {**FORMER_DOMAINS, "hd_beta": (0.0, INF, True, False)}
    assert set(unrolled.COORDINATES) == {
        *(n for n in FORMER_DEFAULTS if n not in ("clip_norm", "clipping_threshold")),
        "dropout",
        "attn_dropout",
        "label_smoothing",
    } - {"schedule", "optimizer"}


def test_lion_betas_are_not_differentiated():
    """Lion's b1 and b2 reach the update only through a sign: the table says so, and the
    hypergradient check refuses them under lion (and accepts them under adam)."""
    unrolled.check_names(["b1", "lr", "dropout"], optimizer="adam", schedule="warmup_cosine")
    with pytest.raises(ValueError, match="'b1' cannot be differentiated under optimizer 'lion'"):
        unrolled.check_names(["b1"], optimizer="lion")


# --------------------------------------------------------------------- a new entry flows through


def _scaled_sgd(x: ChainInputs) -> optax.GradientTransformation:
    gain = optax.scale(x.hp["fake_gain"])
    return optax.chain(x.clip(), gain, x.weight_decay(), x.scale_by_learning_rate())


FAKE_GAIN = Hparam("fake_gain", 2.0, POSITIVE, "log")


@pytest.fixture
def fake(monkeypatch):
    """An optimizer added to the table as a new entry would be, and nothing else edited."""
    sgd = optim.OPTIMIZER_TABLE["sgd"]
    entry = OptimizerEntry(
        "fake_sgd",
        _scaled_sgd,
        (sgd.hparams[0], FAKE_GAIN, sgd.hparams[-1]),
        ("weight_decay", "fake_gain"),
        MUP_SGD,
        "clip, scale(fake_gain), wd, lr",
    )
    monkeypatch.setitem(optim.OPTIMIZER_TABLE, "fake_sgd", entry)
    return entry


def test_a_new_entry_reaches_names_defaults_domains_and_the_template(fake):
    assert "fake_sgd" in optim.OPTIMIZERS
    names = ("lr", "weight_decay", "fake_gain", "clip_norm")
    assert optim.hparam_names("fake_sgd", "constant") == names
    assert optim.DEFAULTS["fake_gain"] == 2.0
    assert optim.DOMAINS["fake_gain"] == POSITIVE
    params = {"w": jnp.ones((2,))}
    tx = optim.make_optimizer("fake_sgd", "constant")
    state = optim.init_opt_state(tx, params, {"lr": 0.1})
    updates, _ = tx.update({"w": jnp.ones((2,))}, state, params)
    np.testing.assert_allclose(np.asarray(updates["w"]), [-0.2, -0.2], rtol=1e-6)


def test_mup_scaling_reads_the_entry(fake):
    """jaxhpo.models.mup's multipliers follow the entry's µP rule: SGD's for the fake entry
    (vectors scaled by width_mult), Adam's for a name the table does not hold."""
    assert mup.lr_multiplier("vector", 4.0, "fake_sgd") == 4.0
    assert mup.lr_multiplier("hidden", 4.0, "fake_sgd") == 1.0
    assert mup.lr_multiplier("hidden", 4.0, "not_in_the_table") == 0.25
    for name, entry in optim.OPTIMIZER_TABLE.items():
        for role in ("hidden", "vector", "readout"):
            assert mup.lr_multiplier(role, 8.0, name) == entry.mup.multiplier(role, 8.0)


def test_hypergradients_read_the_entry(fake):
    """The new hyperparameter gets the entry's coordinate, passes the hypergradient checks, and
    a hypergradient through the entry's chain reaches it."""
    assert unrolled.COORDINATES["fake_gain"] == "log"
    unrolled.check_names(["fake_gain", "lr"], optimizer="fake_sgd")
    with pytest.raises(ValueError, match="'momentum' cannot be differentiated under"):
        unrolled.check_names(["momentum"], optimizer="fake_sgd")
    z = unrolled.to_unconstrained({"fake_gain": 2.0})
    np.testing.assert_allclose(float(z["fake_gain"]), np.log(2.0), rtol=1e-6)

    params = {"w": jnp.array([1.0, -2.0])}

    def step_fn(p, hp, t):
        del t
        tx = optim.make_chain("fake_sgd", "constant", {"lr": 0.1, **hp}, differentiable=True)
        loss, g = jax.value_and_grad(lambda q: jnp.sum(q["w"] ** 2))(p)
        updates, _ = tx.update(g, tx.init(p), p)
        return optax.apply_updates(p, updates), loss

    val_fn = lambda p, hp: jnp.sum(p["w"] ** 2)
    _, grad, _, _ = unrolled.hypergradient(step_fn, val_fn, params, z, num_steps=2)
    assert np.isfinite(float(grad["fake_gain"])) and float(grad["fake_gain"]) != 0.0
