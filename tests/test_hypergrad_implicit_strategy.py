"""The implicit strategy (jaxhpo.strategies.implicit): its per-member IFT hypergradient equals
jaxhpo.hypergrad.implicit.hypergradient on the member's hand-built losses, per member under the
member axis, its outer step is the optax step on those gradients, and it runs through the CLI."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_LM_OVERRIDES
from flax import nnx

from jaxhpo.hypergrad import implicit
from jaxhpo.population import Population, gather
from jaxhpo.space import Space
from jaxhpo.strategies.implicit import ImplicitHypergrad

HP = {"lr": [3e-3, 1e-2], "weight_decay": [0.01, 0.1], "label_smoothing": [0.1, 0.02]}
NAMES = ("weight_decay", "label_smoothing")
TERMS, ALPHA, OUTER_LR = 4, 0.05, 0.1


SPACE = Space.from_config(
    {"weight_decay": "loguniform(1e-4, 0.3)", "label_smoothing": "uniform(0.0, 0.3)"}
)


@pytest.fixture(scope="module")
def setup(lm_task):
    population = Population(
        lm_task, "adamw", "constant", mode="vmap", devices=1, searched=tuple(HP)
    )
    pop = population.init(jax.random.key(0), np.arange(2), HP)
    pop, _ = population.train_segment(pop, lm_task.train_data, 3)  # off the initial weights
    strat = ImplicitHypergrad(outer_lr=OUTER_LR, outer="sgd", terms=TERMS, alpha=ALPHA)
    return population, pop, strat


def by_hand(population, lm_task, m):
    """One member's IFT hypergradient in natural coordinates, losses written out here."""
    task, graphdef = lm_task, population.graphdef
    batch, key = population.member_batch(m, lm_task.train_data)
    task_hp = {k: m.hparams[k] for k in population.task_names}
    wd = m.opt_state.hyperparams["weight_decay"]

    def train(w, lam):
        hp = {**task_hp, "label_smoothing": lam["label_smoothing"]}
        loss, _ = task.loss(nnx.merge(graphdef, w), batch, hp, key)
        sq = sum(jnp.sum(x**2) for x in jax.tree.leaves(w))
        return loss + 0.5 * lam["weight_decay"] * sq

    def val(w, lam):
        del lam
        return task.evaluate(nnx.merge(graphdef, w), lm_task.splits.val)["loss"]

    lam = {"weight_decay": wd, "label_smoothing": task_hp["label_smoothing"]}
    g, v = implicit.hypergradient(
        train, val, m.params, lam, method="neumann", iters=TERMS, alpha=ALPHA
    )
    return g, v, lam


def test_strategy_hypergradient_equals_implicit_by_hand_per_member(setup, lm_task):
    """Mapped over two members, member i's gradient (log wd, logit ls) equals the IFT
    hypergradient of member i alone with losses written out here, chained into those
    coordinates; and the outer step is sgd on it."""
    population, pop, strat = setup
    data = (lm_task.train_data, lm_task.splits.val)
    hp = population.get_hparams(pop)
    z0 = {
        "weight_decay": jnp.log(hp["weight_decay"]),
        "label_smoothing": jax.scipy.special.logit(hp["label_smoothing"]),
    }
    outer0 = jax.vmap(strat.outer_opt.init)(z0)
    new_z, _, val, g_z = strat.hypergradients(population, pop, data, outer0, SPACE)
    hand = jax.jit(lambda m: by_hand(population, lm_task, m))  # one compile for both members
    for i in range(2):
        g, v, lam = hand(jax.tree.map(lambda x, i=i: x[i], pop))
        # chain rule into the strategy's coordinates: log wd, logit ls
        wd, ls = float(lam["weight_decay"]), float(lam["label_smoothing"])
        expect = {
            "weight_decay": g["weight_decay"] * wd,
            "label_smoothing": g["label_smoothing"] * ls * (1 - ls),
        }
        np.testing.assert_allclose(val[i], v, rtol=1e-5)
        for k in NAMES:
            assert abs(float(expect[k])) > 0, k  # a real signal, not a zero gradient
            np.testing.assert_allclose(g_z[k][i], expect[k], rtol=2e-3, atol=1e-7)
            # sgd outer step in unconstrained coordinates
            np.testing.assert_allclose(new_z[k][i], z0[k][i] - OUTER_LR * g_z[k][i], rtol=1e-5)


@pytest.mark.slow
def test_member_under_the_member_axis_equals_member_alone(setup, lm_task):
    """The strategy's own program on a one-member population (another compile) gives member
    i's hypergradient in the two-member population."""
    population, pop, strat = setup
    data = (lm_task.train_data, lm_task.splits.val)
    hp = population.get_hparams(pop)
    z0 = {
        "weight_decay": jnp.log(hp["weight_decay"]),
        "label_smoothing": jax.scipy.special.logit(hp["label_smoothing"]),
    }
    outer0 = jax.vmap(strat.outer_opt.init)(z0)
    _, _, val, g_z = strat.hypergradients(population, pop, data, outer0, SPACE)
    for i in range(2):
        alone = gather(pop, np.asarray([i]))
        _, _, val_i, g_i = strat.hypergradients(
            population, alone, data, jax.tree.map(lambda x, i=i: x[i : i + 1], outer0), SPACE
        )
        np.testing.assert_allclose(val_i[0], val[i], rtol=1e-6)
        for k in NAMES:
            np.testing.assert_allclose(g_i[k][0], g_z[k][i], rtol=1e-4, atol=1e-8)


def test_train_segment_trains_like_the_population_and_proposes_clipped_step(setup, lm_task):
    population, pop, strat = setup
    data = (lm_task.train_data, lm_task.splits.val)
    state, _ = strat.init(0, SPACE, 2)  # a fresh state: no outer state, nothing proposed
    s2, pop2, losses = strat.train_segment(state, population, pop, data, 2, 2)
    ref, ref_losses = population.train_segment(pop, lm_task.train_data, 2)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
    hp = population.get_hparams(ref)
    z0 = {
        "weight_decay": jnp.log(hp["weight_decay"]),
        "label_smoothing": jax.scipy.special.logit(hp["label_smoothing"]),
    }
    new_z, _, _, _ = strat.hypergradients(
        population, ref, data, jax.vmap(strat.outer_opt.init)(z0), SPACE
    )
    np.testing.assert_allclose(
        s2.proposed["weight_decay"], np.exp(new_z["weight_decay"]), rtol=1e-5
    )
    ls = np.clip(jax.nn.sigmoid(new_z["label_smoothing"]), 0.0, 0.3)
    np.testing.assert_allclose(s2.proposed["label_smoothing"], ls, rtol=1e-5)
    assert s2.windows == 1 and np.all(np.isfinite(s2.val))


@pytest.mark.slow
def test_lm_implicit_runs_through_the_cli(tmp_path):
    from jaxhpo.cli import main

    rc = main(
        [
            "run",
            "lm-implicit",
            *TINY_LM_OVERRIDES,
            "population.devices=1",
            "population.size=2",
            "train.steps=4",
            "train.segment_steps=2",
            f"out_dir={tmp_path}",
        ]
    )
    assert rc in (0, None)
    run_dir = next(p.parent for p in tmp_path.rglob("events.jsonl"))
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    explore = [e for e in events if e["kind"] == "explore"]
    assert {e["member"] for e in explore} == {0, 1}
    for e in explore:
        assert e["before"]["weight_decay"] != e["after"]["weight_decay"]
        assert e["before"]["label_smoothing"] != e["after"]["label_smoothing"]
    assert (run_dir / "members.csv").exists()


@pytest.mark.parametrize("name", ["lr", "dropout", "b1"])
def test_searched_hparam_outside_the_training_loss_is_refused(name):
    from jaxhpo.cli import load_config
    from jaxhpo.config import ConfigError
    from jaxhpo.experiment import prepare

    cfg = load_config("lm-implicit", [*TINY_LM_OVERRIDES, f"space.{name}=uniform(0.001, 0.1)"])
    with pytest.raises(ConfigError, match=rf"space\.{name}.*training loss") as e:
        prepare(cfg)
    assert "\n" not in str(e.value)
    strat = ImplicitHypergrad()
    with pytest.raises(ValueError, match=rf"space\.{name}"):
        strat.init(0, Space.from_config({name: "uniform(0.001, 0.1)"}), 2)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("strategy.method=lbfgs", "strategy.method"),
        ("strategy.terms=0", "strategy.terms"),
        ("strategy.alpha=0", "strategy.alpha"),
    ],
)
def test_bad_implicit_setting_is_one_line_error_naming_the_field(override, field):
    from jaxhpo.cli import load_config
    from jaxhpo.config import ConfigError
    from jaxhpo.experiment import prepare

    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as e:
        prepare(load_config("lm-implicit", [*TINY_LM_OVERRIDES, override]))
    assert "\n" not in str(e.value)
