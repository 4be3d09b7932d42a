"""Model-based Hyperband (``bohb``): Hyperband iterations whose members a density model proposes.

Under :func:`jaxhpo.simulate.simulate` on learning curves of a quadratic: the brackets halve as
the ``hyperband`` strategy's do, each iteration re-initialises every member, proposals stay in the
space, the model is used once a budget has enough observations and concentrates the members near
the optimum, a seed fixes the study, and the state round-trips a checkpoint.
"""

from __future__ import annotations

import chex
import numpy as np
import pytest

from jaxhpo.checkpoint import pack_tree, unpack_tree
from jaxhpo.config import TrainConfig
from jaxhpo.simulate import simulate
from jaxhpo.space import Space
from jaxhpo.strategies import BOHB, STRATEGIES, Hyperband
from jaxhpo.strategies.base import Observation
from jaxhpo.strategies.bo import BayesOpt

SPACE = Space.from_config({"x": "uniform(-1.0, 1.0)", "y": "uniform(-1.0, 1.0)"})
R = 9  # eta 3, smallest budget 1: brackets of 9, 5 and 3 members


def curve(hp, ids, t, rng):
    f = (np.asarray(hp["x"]) - 0.3) ** 2 + (np.asarray(hp["y"]) + 0.2) ** 2
    return f + 0.5 * np.exp(-np.asarray(t) / 3)


def study(model="tpe", seed=0, iterations=4, **settings):
    strategy = BOHB(eta=3, min_steps=1, model=model, max_steps=R, **settings)
    return simulate(strategy, SPACE, curve, steps=R * iterations, segment_steps=1, seed=seed)


@pytest.fixture(scope="module")
def tpe_run():
    return study()


def test_bohb_is_registered_and_its_brackets_are_hyperbands():
    assert STRATEGIES["bohb"] is BOHB
    strategy = BOHB(eta=3, min_steps=1, max_steps=R)
    hb = Hyperband(eta=3, min_steps=1, max_steps=R)
    assert strategy.hyperband.rungs == hb.rungs
    assert strategy.budgets == (1, 3, 9)


def test_bohb_config_checks_name_the_field():
    bad_values = [("model", "smac"), ("top_fraction", 1.0), ("samples", 0), ("eta", 1)]
    for field, bad in [*bad_values, ("mode", "packed"), ("fidelity", "every")]:
        with pytest.raises(ValueError, match=f"strategy.{field}"):
            BOHB.Config(**{field: bad})


def test_bohb_from_config_picks_an_iteration_that_fits_three_times():
    strategy = BOHB.from_config(BOHB.Config(), TrainConfig(steps=90, segment_steps=10))
    assert strategy.max_steps == 30 and strategy.config.min_steps == 10
    strategy.check(90, 10)


def test_bohb_reinitialises_every_member_each_iteration_and_stays_in_bounds(tpe_run):
    t = tpe_run.table
    assert t["member"].nunique() == 4 * 17  # 17 members per iteration, 4 iterations
    assert t["x"].between(-1, 1).all() and t["y"].between(-1, 1).all()
    stops = [e for e in tpe_run.events if e["kind"] == "stop"]
    assert len(stops) == 3 * (8 + 2 + 4 + 1 + 1), "each iteration halves as Hyperband does"
    gens = [e for e in tpe_run.events if e["kind"] == "generation"]
    assert [e["generation"] for e in gens] == [0, 1, 2]
    assert gens[0]["proposal"] == "tpe"  # budget 1 has 17 >= 9 observations after one iteration


def test_bohb_model_concentrates_members_near_the_optimum(tpe_run):
    def last_iteration_distance(res):
        t = res.table
        last = t[t["member"] >= 3 * 17].drop_duplicates("member")
        return np.median(np.hypot(last["x"] - 0.3, last["y"] + 0.2))

    rand = study(model="random")
    assert last_iteration_distance(tpe_run) < 0.6 * last_iteration_distance(rand)
    assert tpe_run.best_loss <= rand.best_loss


def test_bohb_is_deterministic_per_seed(tpe_run):
    again = study()
    chex.assert_trees_all_equal(again.table.to_numpy(), tpe_run.table.to_numpy())
    other = study(seed=1)
    assert not np.array_equal(other.table["x"].to_numpy(), tpe_run.table["x"].to_numpy())


def test_bohb_state_round_trips_a_checkpoint_mid_study():
    strategy = BOHB(eta=3, min_steps=1, max_steps=R)
    state, cols = strategy.init(0, SPACE, None)
    fresh = state
    P = len(cols["x"])
    for step in range(1, R + 3):
        obs = Observation(
            step=step,
            member_id=np.arange(P) + (P if step > R else 0),
            hparams={k: np.asarray(v, np.float64) for k, v in cols.items()},
            metrics={"loss": curve(cols, None, step, None)},
            diverged=np.zeros(P, bool),
            active=np.ones(P, bool),
        )
        state, upd = strategy.update(state, obs)
        if upd.hparams:
            cols = upd.hparams
    assert int(state.iteration) == 1 and len(state.y) > 0
    restored = strategy.restore_state(unpack_tree(pack_tree(state)), fresh)
    chex.assert_trees_all_equal(restored, state)


def test_bohb_gp_model_proposes_from_the_gp_near_the_optimum_and_is_deterministic():
    """``model: gp``: after one iteration the GP proposes (the generation event says so), its
    best member ends within 1e-3 of the optimum (``0.5 exp(-R / 3)`` at full budget) where
    Hyperband's random members do not, and a seed fixes the study (the GP's draws come from
    the seed and the iteration)."""
    gp_run = study(model="gp")
    gens = [e for e in gp_run.events if e["kind"] == "generation"]
    assert gens[0]["proposal"] == "gp" and gens[0]["model_members"] > 0
    floor = 0.5 * np.exp(-R / 3)
    assert gp_run.best_loss - floor < 1e-3 < study(model="random").best_loss - floor
    chex.assert_trees_all_equal(study(model="gp").table.to_numpy(), gp_run.table.to_numpy())


def test_bohb_gp_model_keeps_thompson_draws_for_one_model_member(monkeypatch):
    """bo's default for one member per generation became log EI; bohb's GP model asks bo for
    Thompson draws whatever the number of model members (its figures are measured so)."""
    strategy = BOHB(eta=3, min_steps=1, max_steps=R, model="gp", random_fraction=0.0)
    state, cols = strategy.init(0, SPACE, None)
    P = len(cols["x"])
    for step in range(1, R + 1):
        obs = Observation(
            step=step,
            member_id=np.arange(P),
            hparams={k: np.asarray(v, np.float64) for k, v in cols.items()},
            metrics={"loss": curve(cols, None, step, None)},
            diverged=np.zeros(P, bool),
            active=np.ones(P, bool),
        )
        state, upd = strategy.update(state, obs)
        cols = upd.hparams or cols
    calls = []
    propose = BayesOpt.propose

    def spy(self, *args, **kwargs):
        out = propose(self, *args, **kwargs)
        calls.append((self.config.acquisition, len(out[0])))
        return out

    monkeypatch.setattr(BayesOpt, "propose", spy)
    u, info = strategy.propose(state, 1, 1)
    assert info["proposal"] == "gp" and u.shape == (1, 2)
    assert calls == [("thompson", 1)]


def test_bohb_masked_and_compact_give_the_same_study(tpe_run):
    strategy = BOHB(eta=3, min_steps=1, model="tpe", max_steps=R, mode="compact")
    compact = simulate(strategy, SPACE, curve, steps=R * 4, segment_steps=1, seed=0)
    # the same decisions: every member's values at every step it was evaluated in both runs
    key = ["member", "step"]
    masked = tpe_run.table.set_index(key)
    both = compact.table.set_index(key).join(masked, how="inner", rsuffix="_masked")
    assert len(both) == len(compact.table)
    for c in ("x", "y", "val_loss", "active", "t"):
        np.testing.assert_array_equal(both[c], both[f"{c}_masked"])
    assert compact.best_loss == tpe_run.best_loss and compact.best_member == tpe_run.best_member
    assert compact.member_steps == tpe_run.member_steps
    # compact re-packs at each rung and grows back to 17 members when an iteration starts
    sizes = compact.table.groupby("step")["member"].count()
    assert sizes.max() == 17 and sizes.min() < 17
    grows = [e for e in compact.events if e["kind"] == "grow"]
    assert [e["size"] for e in grows] == [17, 17, 17]
    assert len(compact.table) < len(tpe_run.table)  # stopped members are not evaluated again


def test_bohb_gp_over_every_budget_draws_at_the_largest_and_is_deterministic():
    """``fidelity: all``: one GP over (x, log budget) from every observation; its members are
    drawn at the budget R (the budget's column held at 1), land near the optimum and follow
    from the seed."""
    run = study(model="gp", fidelity="all")
    gens = [e for e in run.events if e["kind"] == "generation"]
    assert gens[0]["proposal"] == "gp" and gens[0]["fidelity"] == "all"
    assert gens[0]["budget"] == R and gens[0]["model_members"] > 0
    floor = 0.5 * np.exp(-R / 3)
    assert run.best_loss - floor < 1e-3 < study(model="random").best_loss - floor
    assert run.table["x"].between(-1, 1).all() and run.table["y"].between(-1, 1).all()
    chex.assert_trees_all_equal(
        study(model="gp", fidelity="all").table.to_numpy(), run.table.to_numpy()
    )
