"""Conditional dimensions of a search space (``when``): inactive entries are never sampled,
a grid lists only active combinations, unit coordinates of inactive entries are constant,
one-line errors for a ``when`` naming an unknown dimension or value."""

from __future__ import annotations

import numpy as np
import pytest

from jaxhpo.space import Space

CONFIG = {
    "optimizer": ["sgd", "momentum", "nesterov", "adamw"],
    "lr": "loguniform(1e-4, 1e-1)",
    "momentum": {
        "type": "float",
        "low": 0.5,
        "high": 0.99,
        "when": {"optimizer": ["momentum", "nesterov"]},
    },
    "b1": {"type": "float", "low": 0.8, "high": 0.95, "when": {"optimizer": "adamw"}},
    # conditional on a conditional dimension: active for nesterov with clip=on
    "clip": {"type": "choice", "values": ["on", "off"], "when": {"optimizer": ["nesterov"]}},
    "clip_norm": {"type": "choice", "values": [0.5, 1.0], "when": {"clip": ["on"]}},
}


@pytest.fixture()
def space() -> Space:
    return Space.from_config(CONFIG)


def _expected_active(cols):
    opt = cols["optimizer"]
    clip = (opt == "nesterov") & (cols["clip"] == "on")
    return {
        "momentum": np.isin(opt, ["momentum", "nesterov"]),
        "b1": opt == "adamw",
        "clip": opt == "nesterov",
        "clip_norm": clip,
    }


@pytest.mark.parametrize("draw", ["sample", "sobol"])
def test_inactive_entries_are_never_sampled(space, draw):
    cols = getattr(space, draw)(0, 64)
    for name, want in _expected_active(cols).items():
        col = cols[name]
        got = np.array([v is not None and v == v for v in col], bool)
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert set(cols["optimizer"]) == {"sgd", "momentum", "nesterov", "adamw"}
    assert np.all(cols["momentum"][_expected_active(cols)["momentum"]] >= 0.5)
    space.validate_values(cols)
    np.testing.assert_array_equal(space.active(cols)["b1"], cols["optimizer"] == "adamw")


def test_grid_enumerates_only_active_combinations(space):
    grid = space.grid(2)
    # sgd: 2 lr; momentum: 2 lr x 2 momentum; nesterov: 2 x 2 x (off + on x 2 clip_norm);
    # adamw: 2 lr x 2 b1
    assert len(grid["lr"]) == 2 + 4 + 12 + 4
    points = {tuple(str(grid[k][i]) for k in grid) for i in range(len(grid["lr"]))}
    assert len(points) == len(grid["lr"])  # no point twice
    for name, want in _expected_active(grid).items():
        got = np.array([v is not None and v == v for v in grid[name]], bool)
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_unit_coordinates_of_inactive_entries_are_constant(space):
    cols = space.sample(1, 32)
    u = space.to_unit(cols)
    j = space.searched.index("b1")
    inactive = cols["optimizer"] != "adamw"
    np.testing.assert_array_equal(u[inactive, j], 0.5)
    assert np.all(np.isfinite(u))
    # decoding any coordinates empties what is inactive again
    back = space.from_unit(np.random.default_rng(0).random((16, len(space.searched))))
    assert np.all(np.isnan(back["b1"][back["optimizer"] != "adamw"]))


def test_complete_fills_what_a_changed_parent_activates(space):
    cols = space.sample(2, 16)
    cols["optimizer"] = np.array(["momentum"] * 16, dtype=object)
    done = space.complete(cols, 0)
    assert np.all((done["momentum"] >= 0.5) & (done["momentum"] <= 0.99))
    assert np.all(np.isnan(done["b1"]))
    assert all(v is None for v in done["clip"])
    np.testing.assert_array_equal(done["lr"], cols["lr"])


def test_config_round_trip_and_clip_keep_the_conditions(space):
    again = Space.from_config(space.to_config())
    assert again == space and again.when == space.when
    assert space != Space.from_config(
        {k: v for k, v in CONFIG.items()} | {"b1": "uniform(0.8, 0.95)"}
    )
    cols = space.sample(3, 8)
    clipped = space.clip(cols)
    np.testing.assert_array_equal(np.isnan(clipped["b1"]), np.isnan(cols["b1"]))


@pytest.mark.parametrize(
    "when,match",
    [
        ({"optimiser": ["momentum"]}, r"space.momentum.when: unknown dimension 'optimiser'"),
        ({"optimizer": ["rmsprop"]}, r"space.momentum.when.optimizer: 'rmsprop' is not one of"),
        ({"lr": [0.1]}, r"space.momentum.when.lr: a condition names a choice or fixed"),
        ({"momentum": [0.9]}, r"space.momentum.when: unknown dimension 'momentum'"),
        ([], r"space.momentum.when: expected a mapping"),
    ],
)
def test_bad_when_is_a_one_line_error(when, match):
    cfg = dict(CONFIG)
    cfg["momentum"] = {**CONFIG["momentum"], "when": when}
    with pytest.raises(ValueError, match=match) as err:
        Space.from_config(cfg)
    assert "\n" not in str(err.value)


def test_a_cycle_of_conditions_is_refused():
    cfg = {
        "a": {"type": "choice", "values": [1, 2], "when": {"b": [1]}},
        "b": {"type": "choice", "values": [1, 2], "when": {"a": [1]}},
    }
    with pytest.raises(ValueError, match="conditions form a cycle"):
        Space.from_config(cfg)
