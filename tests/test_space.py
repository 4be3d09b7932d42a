"""Tests for jaxhpo.space."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import qmc

from jaxhpo.space import Choice, Fixed, Float, Int, Space


def make_space() -> Space:
    return Space(
        {
            "lr": Float(1e-4, 1e-1, log=True),
            "dropout": Float(0.0, 0.5),
            "warmup": Int(0, 100),
            "heads": Int(1, 64, log=True),
            "ls": Choice((0.0, 0.1, 0.2)),
            "opt": Choice(("adam", "sgd", "lion")),
            "b2": Fixed(0.999),
            "act": Fixed("gelu"),
        }
    )


def interior_columns(n: int = 50) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "lr": np.exp(rng.uniform(np.log(1e-4), np.log(1e-1), n)),
        "dropout": rng.uniform(0.01, 0.49, n),
        "warmup": rng.integers(0, 101, n).astype(float),
        "heads": rng.integers(1, 65, n).astype(float),
        "ls": rng.choice([0.0, 0.1, 0.2], n),
        "opt": rng.choice(np.array(["adam", "sgd", "lion"], dtype=object), n),
    }


def assert_columns_equal(space: Space, got: dict, want: dict) -> None:
    for name in space.searched:
        if name in ("lr", "dropout"):
            np.testing.assert_allclose(np.asarray(got[name]), want[name], rtol=1e-9)
        else:
            np.testing.assert_array_equal(np.asarray(got[name]), want[name])


def test_names_and_protocol():
    s = make_space()
    assert s.names == ("lr", "dropout", "warmup", "heads", "ls", "opt", "b2", "act")
    assert s.searched == ("lr", "dropout", "warmup", "heads", "ls", "opt")
    assert len(s) == 8 and list(s) == list(s.names)
    assert "lr" in s and "nope" not in s
    assert s["warmup"] == Int(0, 100)
    with pytest.raises(KeyError):
        s["nope"]


def test_unit_round_trip():
    s = make_space()
    cols = interior_columns()
    u = s.to_unit(cols)
    assert u.shape == (50, 6) and u.dtype == np.float64
    assert (u >= 0).all() and (u <= 1).all()
    back = s.from_unit(u)
    assert_columns_equal(s, back, cols)
    np.testing.assert_array_equal(back["b2"], np.full(50, 0.999))
    assert list(back["act"]) == ["gelu"] * 50


def test_unconstrained_round_trip():
    s = make_space()
    cols = interior_columns()
    z = s.to_unconstrained(cols)
    assert np.isfinite(z).all()
    assert_columns_equal(s, s.from_unconstrained(z), cols)


def test_unit_endpoints_and_clipping():
    s = Space({"x": Float(2.0, 3.0), "k": Int(1, 8, log=True), "c": Choice((1, 2))})
    lo, hi = s.from_unit(np.zeros((1, 3))), s.from_unit(np.ones((1, 3)))
    assert (lo["x"][0], lo["k"][0], lo["c"][0]) == (2.0, 1.0, 1.0)
    assert (hi["x"][0], hi["k"][0], hi["c"][0]) == (3.0, 8.0, 2.0)
    out = s.from_unit(np.array([[-5.0, 7.0, 0.5]]))
    assert (out["x"][0], out["k"][0], out["c"][0]) == (2.0, 8.0, 2.0)
    with pytest.raises(ValueError, match="last axis 3"):
        s.from_unit(np.zeros((2, 2)))


def test_every_int_reachable_and_bins_equal_width():
    s = Space({"k": Int(0, 4)})
    vals = s.from_unit(np.linspace(0, 1, 1001)[:, None])["k"]
    counts = np.bincount(vals.astype(int))
    assert len(counts) == 5 and counts.min() >= 199


def test_sample_bounds_and_log_uniform():
    s = make_space()
    cols = s.sample(0, 20_000)
    assert cols["lr"].dtype == np.float64 and cols["warmup"].dtype == np.float64
    assert cols["opt"].dtype == object
    assert ((cols["lr"] >= 1e-4) & (cols["lr"] <= 1e-1)).all()
    assert ((cols["dropout"] >= 0) & (cols["dropout"] <= 0.5)).all()
    assert set(np.unique(cols["warmup"])) == set(range(101))
    assert set(cols["opt"]) == {"adam", "sgd", "lion"}
    assert set(cols["ls"]) == {0.0, 0.1, 0.2}
    # log-uniform: median of log10(lr) near the midpoint -2.5; a linear sampler would give ~-1.3.
    assert abs(np.median(np.log10(cols["lr"])) - (-2.5)) < 0.05
    assert abs(np.median(cols["dropout"]) - 0.25) < 0.02
    s.validate_values(cols)
    np.testing.assert_array_equal(s.sample(0, 5)["lr"], s.sample(np.random.default_rng(0), 5)["lr"])


def test_grid_size_and_endpoints():
    s = make_space()
    g = s.grid(4)
    # lr 4, dropout 4, warmup 4 (of 101), heads 4, ls 3, opt 3, fixed 1 each
    n = 4 * 4 * 4 * 4 * 3 * 3
    assert all(len(v) == n for v in g.values())
    assert {1e-4, 1e-1} <= set(g["lr"]) and {0.0, 0.5} <= set(g["dropout"])
    np.testing.assert_allclose(np.unique(g["lr"]), [1e-4, 1e-3, 1e-2, 1e-1], rtol=1e-12)
    assert set(g["warmup"]) == {0.0, 33.0, 67.0, 100.0}
    assert set(g["opt"]) == {"adam", "sgd", "lion"}
    assert len({tuple(row) for row in zip(*g.values(), strict=True)}) == n
    s.validate_values(g)


def test_grid_small_int_and_mapping():
    s = Space({"k": Int(1, 3), "x": Float(0.0, 1.0), "c": Fixed(2)})
    g = s.grid({"k": 5, "x": 2})
    assert len(g["k"]) == 3 * 2
    assert set(g["k"]) == {1.0, 2.0, 3.0} and set(g["x"]) == {0.0, 1.0}
    np.testing.assert_array_equal(g["k"], [1, 1, 2, 2, 3, 3])  # first name varies slowest
    assert len(s.grid()["x"]) == 3 * 3
    with pytest.raises(ValueError, match=r"space\.zz"):
        s.grid({"zz": 3})
    with pytest.raises(ValueError, match=r"^space\.k: grid points must be an int >= 2"):
        s.grid(1)


def test_sobol():
    s = make_space()
    a, b, c = s.sobol(3, 100), s.sobol(3, 100), s.sobol(4, 100)
    for name in s.names:
        np.testing.assert_array_equal(a[name], b[name])
        assert len(a[name]) == 100
    assert not np.array_equal(a["lr"], c["lr"])
    s.validate_values(a)


def test_sobol_better_spread_than_random():
    s = Space({"a": Float(0.0, 1.0), "b": Float(1e-3, 1.0, log=True), "c": Float(-1.0, 1.0)})
    d_sobol = [qmc.discrepancy(s.to_unit(s.sobol(k, 64))) for k in range(5)]
    d_rand = [qmc.discrepancy(s.to_unit(s.sample(k, 64))) for k in range(5)]
    assert np.mean(d_sobol) < 0.5 * np.mean(d_rand)


def test_all_fixed_space():
    s = Space({"a": Fixed(1), "b": Fixed("x")})
    assert s.searched == ()
    assert list(s.sample(0, 3)["b"]) == ["x"] * 3
    assert len(s.sobol(0, 5)["a"]) == 5
    assert len(s.grid()["a"]) == 1


CFG = {
    "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True},
    "warmup_steps": {"type": "int", "low": 0, "high": 100},
    "label_smoothing": {"type": "choice", "values": [0.0, 0.1]},
    "b2": 0.999,
    "opt": ["adam", "sgd"],
    "wd": "loguniform(1e-5, 1e-2)",
    "drop": "uniform(0, 0.3)",
    "layers": "int(1, 8)",
    "width": "logint(16, 256)",
    "act": "gelu",
}


def test_from_config_and_round_trip():
    s = Space.from_config(CFG)
    assert s["lr"] == Float(1e-4, 1e-1, True)
    assert s["warmup_steps"] == Int(0, 100)
    assert s["label_smoothing"] == Choice((0.0, 0.1))
    assert s["b2"] == Fixed(0.999)
    assert s["opt"] == Choice(("adam", "sgd"))
    assert s["wd"] == Float(1e-5, 1e-2, True)
    assert s["drop"] == Float(0.0, 0.3)
    assert s["layers"] == Int(1, 8) and s["width"] == Int(16, 256, True)
    assert s["act"] == Fixed("gelu")
    cfg = s.to_config()
    assert Space.from_config(cfg) == s
    assert cfg["lr"] == {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}
    assert isinstance(cfg["opt"]["values"], list)


def test_from_config_yaml_quirks():
    # PyYAML reads `1e-4` (no dot) as a string; numeric strings are accepted.
    s = Space.from_config({"lr": {"type": "float", "low": "1e-4", "high": 0.1, "log": True}})
    assert s["lr"] == Float(1e-4, 0.1, True)
    assert Space.from_config({"k": {"type": "int", "low": 2.0, "high": 4}})["k"] == Int(2, 4)


BAD = [
    ({"lr": {"type": "float", "low": 0.1, "high": 0.01}}, "space.lr", "low (0.1) must be < high"),
    ({"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "space.lr", "low=0.0"),
    ({"lr": {"type": "float", "low": 0.0, "hgih": 1.0}}, "space.lr", "unknown key 'hgih'"),
    ({"lr": {"type": "float", "low": "abc", "high": 1.0}}, "space.lr", "low must be a number"),
    ({"lr": {"type": "float", "low": 0.0}}, "space.lr", "missing key 'high'"),
    ({"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": "yes"}}, "space.lr", "log"),
    ({"lr": {"type": "float", "low": 1.0, "high": 1.0}}, "space.lr", "fixed"),
    ({"lr": {"type": "float", "low": float("nan"), "high": 1.0}}, "space.lr", "finite"),
    ({"lr": {"type": "flaot", "low": 0.0, "high": 1.0}}, "space.lr", "unknown type 'flaot'"),
    ({"lr": {"low": 0.0, "high": 1.0}}, "space.lr", "missing key 'type'"),
    ({"opt": {"type": "choice", "values": []}}, "space.opt", "at least one value"),
    ({"opt": []}, "space.opt", "at least one value"),
    ({"opt": ["adam", "adam"]}, "space.opt", "duplicate"),
    ({"opt": [[1], [2]]}, "space.opt", "numbers or strings"),
    ({"warmup_steps": {"type": "int", "low": 1.5, "high": 10}}, "space.warmup_steps", "got 1.5"),
    ({"warmup_steps": {"type": "int", "low": 3, "high": 3}}, "space.warmup_steps", "fixed"),
    ({"n": "logint(0, 8)"}, "space.n", "log range must be > 0"),
    ({"n": "loguniform(1e-3)"}, "space.n", "bad shorthand"),
    ({"n": "int(a, 3)"}, "space.n", "low must be a number"),
    ({"n": None}, "space.n", "cannot parse"),
]


@pytest.mark.parametrize(("cfg", "path", "fragment"), BAD)
def test_bad_config(cfg, path, fragment):
    with pytest.raises(ValueError) as info:
        Space.from_config(cfg)
    msg = str(info.value)
    assert msg.startswith(path + ":"), msg
    assert fragment in msg, msg
    assert "\n" not in msg


def test_bad_config_where_prefix_and_direct_dims():
    with pytest.raises(
        ValueError, match=r"^tune\.space\.lr: low \(0\.1\) must be < high \(0\.01\)$"
    ):
        Space.from_config({"lr": "uniform(0.1, 0.01)"}, where="tune.space")
    with pytest.raises(ValueError, match=r"^space\.k: int bounds must be integers, got 1\.5$"):
        Space({"k": Int(1.5, 3)})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="^space: expected a mapping"):
        Space.from_config([1, 2])  # type: ignore[arg-type]


def test_clip():
    s = make_space()
    cols = {
        "lr": np.array([1e-6, 0.05, 3.0]),
        "dropout": np.array([-1.0, 0.2, 0.9]),
        "warmup": np.array([-3.0, 10.4, 1e4]),
        "heads": np.array([0.0, 7.6, 100.0]),
        "ls": np.array([-1.0, 0.13, 0.17]),
        "opt": np.array(["adam", "sgd", "lion"], dtype=object),
    }
    out = s.clip(cols)
    np.testing.assert_array_equal(out["lr"], [1e-4, 0.05, 1e-1])
    np.testing.assert_array_equal(out["dropout"], [0.0, 0.2, 0.5])
    np.testing.assert_array_equal(out["warmup"], [0.0, 10.0, 100.0])
    np.testing.assert_array_equal(out["heads"], [1.0, 8.0, 64.0])
    np.testing.assert_array_equal(out["ls"], [0.0, 0.1, 0.2])
    np.testing.assert_array_equal(out["b2"], [0.999] * 3)
    s.validate_values(out)
    with pytest.raises(ValueError, match=r"space\.opt"):
        s.clip({**cols, "opt": np.array(["adamw", "sgd", "sgd"], dtype=object)})


def test_validate_values():
    s = make_space()
    good = s.sample(0, 10)
    s.validate_values(good)
    cases = [
        ("lr", 0.5, "space.lr"),
        ("warmup", 3.5, "space.warmup"),
        ("ls", 0.05, "space.ls"),
        ("opt", "adamw", "space.opt"),
        ("b2", 0.9, "space.b2"),
        ("dropout", np.nan, "space.dropout"),
    ]
    for name, value, path in cases:
        bad = {k: v.copy() for k, v in good.items()}
        bad[name][3] = value
        with pytest.raises(ValueError, match="^" + path.replace(".", r"\.") + ":"):
            s.validate_values(bad)
    with pytest.raises(ValueError, match=r"space\.lr: missing"):
        s.validate_values({k: v for k, v in good.items() if k != "lr"})
    with pytest.raises(ValueError, match=r"space\.zz"):
        s.validate_values({**good, "zz": np.zeros(10)})


def test_from_unit_under_jit():
    s = Space(
        {
            "lr": Float(1e-4, 1e-1, log=True),
            "k": Int(1, 8),
            "c": Choice((0.1, 0.2)),
            "b2": Fixed(0.999),
        }
    )
    u = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.9, 1.0, 0.99]])
    got = jax.jit(s.from_unit)(jnp.asarray(u))
    want = s.from_unit(u)
    assert isinstance(got["lr"], jax.Array)
    for name in s.names:
        np.testing.assert_allclose(np.asarray(got[name]), want[name], rtol=1e-5)
    z = jax.jit(s.to_unconstrained)({k: jnp.asarray(v) for k, v in want.items()})
    np.testing.assert_allclose(np.asarray(z), s.to_unconstrained(want), rtol=1e-4, atol=1e-4)


def test_categorical_under_jit_raises():
    s = Space({"opt": Choice(("adam", "sgd"))})
    with pytest.raises(TypeError, match=r"space\.opt"):
        jax.jit(s.from_unit)(jnp.zeros((2, 1)))


def test_hypergradient_matches_finite_differences():
    s = Space({"k": Int(1, 8), "lr": Float(1e-4, 1e-1, log=True), "wd": Float(0.0, 0.1)})
    z0 = np.array([[0.3, -0.7, 0.2]])

    def f(z):
        cols = s.from_unconstrained(z)
        return (cols["lr"] ** 0.5 + cols["wd"] * cols["lr"]).sum()

    g = np.asarray(jax.grad(f)(jnp.asarray(z0, dtype=jnp.float32)))
    assert np.isfinite(g).all()
    h = 1e-6
    for j in (1, 2):
        e = np.zeros_like(z0)
        e[0, j] = h
        fd = (f(z0 + e) - f(z0 - e)) / (2 * h)  # numpy float64 path
        np.testing.assert_allclose(g[0, j], fd, rtol=1e-4)
    assert g[0, 0] == 0.0  # rounding an Int has zero gradient
