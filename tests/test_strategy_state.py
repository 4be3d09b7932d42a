"""Every built-in strategy's state is typed and its ``init`` / ``update`` are pure.

For each strategy of :data:`jaxhpo.strategies.STRATEGIES`: the state ``init`` and ``update``
return is an instance of the class's declared ``State``; ``update`` called twice on the same
``(state, observation)`` gives equal results and leaves its input untouched (no hidden state on the
strategy object, no mutation); and a checkpoint round trip (``pack_tree`` / ``unpack_tree`` /
``Strategy.restore_state``) gives the state back exactly. The Optuna strategy keeps a live study
(:class:`jaxhpo.strategies.optuna_study.LiveStudy`) and is checked for types and round trips
only.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import numpy as np
import pandas as pd
import pytest

from jaxhpo.checkpoint import pack_tree, unpack_tree
from jaxhpo.config import TrainConfig
from jaxhpo.space import Space
from jaxhpo.strategies import PBT, STRATEGIES, BayesOpt, MedianStopping, Replay
from jaxhpo.strategies.base import EmptyState, Observation, StrategyState
from jaxhpo.strategies.trust_region import initial as initial_trust_region

# Names the hypergradient strategies can differentiate (implicit: training-loss terms).
SPACE = Space.from_config(
    {"weight_decay": "loguniform(1e-4, 0.3)", "label_smoothing": "uniform(0.0, 0.3)"}
)
TRAIN = TrainConfig(steps=9, segment_steps=1)  # Hyperband: rungs at 1, 3 (eta 3, R 9)
P = 4
#: Cheaper settings where the defaults would spend seconds on a 2-dimensional toy.
SETTINGS = {"bo": {"candidates": 32, "fit_steps": 10}}
IMPURE = {"optuna": "asks and tells its live Optuna study (LiveStudy), host-side by design"}


def build(name: str):
    cls = STRATEGIES[name]
    if cls is Replay:
        table = pd.DataFrame(
            {"start_step": [0, 2], "end_step": [2, 9], "source_member": [0, 1]}
            | {"weight_decay": [1e-3, 1e-2], "label_smoothing": [0.1, 0.0]}
        )
        return Replay(table=table)
    if name == "optuna":
        pytest.importorskip("optuna")
    config = cls.Config(**SETTINGS.get(name, {}))
    return cls.from_config(config, TRAIN, "loss")


def observe(cols: dict, step: int = 1) -> Observation:
    size = len(next(iter(cols.values())))
    loss = np.random.default_rng(step).random(size)
    loss[-1] = np.nan  # one diverged member: every strategy must handle it
    hparams = {k: np.asarray(v, np.float64) for k, v in cols.items()}
    return Observation(
        step=step,
        member_id=np.arange(size),
        hparams=hparams,
        metrics={"loss": loss},
        diverged=~np.isfinite(loss),
        active=np.ones(size, bool),
        train_steps=TRAIN.steps,
    )


def start(name: str):
    strategy = build(name)
    strategy.check(TRAIN.steps, TRAIN.segment_steps)
    size = None if strategy.capabilities.decides_size else P
    state, cols = strategy.init(0, SPACE, size)
    return strategy, state, cols


def host_copy(tree):
    return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def assert_updates_equal(a, b):
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if field.name == "events":
            assert x == y
        else:
            chex.assert_trees_all_equal(x, y)


def assert_round_trips(strategy, state, fresh):
    text = pack_tree(state)
    restored = strategy.restore_state(unpack_tree(text), fresh)
    assert type(restored) is type(state)
    chex.assert_trees_all_equal(restored, state)
    chex.assert_trees_all_equal_dtypes(restored, jax.tree.map(np.asarray, state))
    assert pack_tree(restored) == text


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_state_is_the_declared_type_and_round_trips_a_checkpoint(name):
    strategy, state, cols = start(name)
    assert strategy.State is not None and issubclass(strategy.State, StrategyState)
    assert isinstance(state, strategy.State)
    assert_round_trips(strategy, state, state)
    new, _ = strategy.update(state, observe(cols))
    assert isinstance(new, strategy.State)
    _, fresh, _ = start(name)  # a resumed run: its own fresh init gives the static fields
    assert_round_trips(strategy, new, fresh)


@pytest.mark.parametrize("name", [n for n in STRATEGIES if n not in IMPURE])
def test_update_is_a_pure_function_of_state_and_observation(name):
    strategy, state, cols = start(name)
    obs = observe(cols)
    before = host_copy(state)
    new_a, upd_a = strategy.update(state, obs)
    chex.assert_trees_all_equal(state, before)  # the input state is not mutated
    new_b, upd_b = strategy.update(state, obs)
    chex.assert_trees_all_equal(new_a, new_b)
    assert_updates_equal(upd_a, upd_b)
    again, _ = build(name).init(0, SPACE, None if strategy.capabilities.decides_size else P)
    chex.assert_trees_all_equal(again, state)  # init: a function of its arguments too


def test_no_strategy_sets_attributes_in_init_or_update():
    """Regression (issue 25): ``init`` set ``self.space`` (and evo ``self.es``, rl its policy
    structure, generational searchers ``self.train_steps`` in ``check``), which forced "not
    initialised" guards. The object's attributes are the same before and after."""
    for name in STRATEGIES:
        if name in IMPURE:
            continue
        strategy = build(name)
        attrs = dict(vars(strategy))
        strategy.check(TRAIN.steps, TRAIN.segment_steps)
        state, cols = strategy.init(0, SPACE, None if strategy.capabilities.decides_size else P)
        strategy.update(state, observe(cols))
        added = {k for k in vars(strategy) if k not in attrs and not k.startswith("_jitted")}
        # ``_jitted*``: compile caches (cached properties holding no state)
        assert not added, (name, added)
        assert all(vars(strategy)[k] is v for k, v in attrs.items()), name


def test_checkpoints_of_untyped_dict_states_still_restore():
    """Field names are the old dict keys: a checkpoint written before the states were typed
    restores; a key added later (bo's trust region) takes its default."""
    pbt = PBT(ready_steps=1)
    pbt_fresh, _ = pbt.init(0, SPACE, P)
    key = np.asarray(jax.random.key_data(jax.random.key(3)))
    state = pbt.restore_state(unpack_tree(pack_tree({"key": key})), pbt_fresh)
    assert isinstance(state, PBT.State) and state.space == SPACE
    np.testing.assert_array_equal(state.key, key)
    bo = BayesOpt()
    fresh, _ = bo.init(0, SPACE, P)
    old = {k: v for k, v in pack_and_unpack(fresh).items() if k != "tr"}
    state = bo.restore_state(old, fresh)
    np.testing.assert_array_equal(state.tr, initial_trust_region())
    median = MedianStopping(min_steps=1)
    fresh, _ = median.init(0, SPACE, P)
    old = {k: getattr(fresh, k) for k in ("member_id", "alive", "sum", "count", "best")}
    chex.assert_trees_all_equal(median.restore_state(old, fresh), fresh)
    assert STRATEGIES["random"]().restore_state(None) == EmptyState()  # old: None
    with pytest.raises(ValueError, match=r"^checkpoint: the strategy state has no 'key'"):
        pbt.restore_state({}, pbt_fresh)


def pack_and_unpack(state):
    return unpack_tree(pack_tree(state))


def test_compiled_decision_carries_the_typed_state_through_scan():
    """PBT's state goes through ``lax.scan`` as a pytree of arrays (the space is static)."""
    strategy = PBT(ready_steps=1)
    state, cols = strategy.init(0, SPACE, P)
    hp = {k: np.asarray(v, np.float32) for k, v in cols.items()}
    fit = np.linspace(0.0, 1.0, P).astype(np.float32)

    def body(carry, step):
        state, hp = carry
        state, _, _, _, hp = strategy.device_update(state, step, fit, hp)
        return (state, hp), None

    (out, _), _ = jax.jit(lambda s, h: jax.lax.scan(body, (s, h), np.arange(1, 4)))(state, hp)
    assert isinstance(out, PBT.State) and out.space == SPACE
    chex.assert_trees_all_equal(out.key, state.key)
