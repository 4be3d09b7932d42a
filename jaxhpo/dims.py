"""Search-space dimensions (``Float``, ``Int``, ``Choice``, ``Fixed``), their parsing from a
config's ``space:`` entries and the maps of one dimension to unit coordinates.

:class:`jaxhpo.space.Space` (an ordered mapping of them) and :mod:`jaxhpo.conditions` (which
dimensions are active) both build on this module; it imports neither.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = np.ndarray | jax.Array

_EPS = 1e-6
_VALIDATE_RTOL = 1e-6


@dataclasses.dataclass(frozen=True)
class Float:
    """A real interval ``[low, high]``, log-scaled if ``log``."""

    low: float
    high: float
    log: bool = False


@dataclasses.dataclass(frozen=True)
class Int:
    """An integer range ``low..high`` (both inclusive), log-scaled if ``log``."""

    low: int
    high: int
    log: bool = False


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a tuple of distinct values (all numbers, or str/bool for a categorical choice)."""

    values: tuple


@dataclasses.dataclass(frozen=True)
class Fixed:
    """A constant that is not searched (a number, str or bool)."""

    value: Any


Dimension = Float | Int | Choice | Fixed

_TYPES = {"float": Float, "int": Int, "choice": Choice, "fixed": Fixed}
_KEYS = {
    Float: ("type", "low", "high", "log"),
    Int: ("type", "low", "high", "log"),
    Choice: ("type", "values"),
    Fixed: ("type", "value"),
}
_SHORTHAND = re.compile(r"^\s*(loguniform|uniform|logint|int)\s*\((.*)\)\s*$")
_SHORTHAND_START = re.compile(r"^\s*(loguniform|uniform|logint|int)\s*\(")


# --------------------------------------------------------------------------------------------
# Validation and parsing


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(
        v, bool | np.bool_
    )


def _number(v: Any, what: str, path: str) -> float:
    """Parses a finite number (numeric strings such as PyYAML's ``'1e-4'`` are accepted)."""
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            raise ValueError(f"{path}: {what} must be a number, got {v!r}") from None
    elif _is_number(v):
        f = float(v)
    else:
        raise ValueError(f"{path}: {what} must be a number, got {v!r}")
    if not math.isfinite(f):
        raise ValueError(f"{path}: {what} must be finite, got {v!r}")
    return f


def _integer(v: Any, what: str, path: str) -> int:
    if isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_):
        return int(v)
    f = _number(v, what, path)
    if f != round(f):
        raise ValueError(f"{path}: int bounds must be integers, got {v!r}")
    return int(f)


def _check_bool(v: Any, what: str, path: str) -> bool:
    if not isinstance(v, bool | np.bool_):
        raise ValueError(f"{path}: {what} must be true or false, got {v!r}")
    return bool(v)


def _is_categorical(dim: Dimension) -> bool:
    if isinstance(dim, Choice):
        return not all(_is_number(v) for v in dim.values)
    if isinstance(dim, Fixed):
        return not _is_number(dim.value)
    return False


def _check_dim(dim: Any, path: str) -> Dimension:
    """Validates one dimension and returns it normalized (Python floats/ints, tuple values)."""
    if isinstance(dim, Float | Int):
        conv = _number if isinstance(dim, Float) else _integer
        low, high = conv(dim.low, "low", path), conv(dim.high, "high", path)
        log = _check_bool(dim.log, "log", path)
        if low == high:
            raise ValueError(
                f"{path}: empty range, low ({low!r}) == high ({high!r}); use a fixed value instead"
            )
        if low > high:
            raise ValueError(f"{path}: low ({low!r}) must be < high ({high!r})")
        if log and low <= 0:
            raise ValueError(f"{path}: log range must be > 0, got low={low!r}")
        return type(dim)(low, high, log)
    if isinstance(dim, Choice):
        if isinstance(dim.values, str) or not isinstance(dim.values, tuple | list):
            raise ValueError(f"{path}: choice values must be a list, got {dim.values!r}")
        if not dim.values:
            raise ValueError(f"{path}: choice needs at least one value")
        values = []
        for v in dim.values:
            if isinstance(v, np.generic):
                v = v.item()
            if not isinstance(v, int | float | str | bool):
                raise ValueError(f"{path}: choice values must be numbers or strings, got {v!r}")
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{path}: choice values must be finite, got {v!r}")
            if v in values:
                raise ValueError(f"{path}: duplicate choice value {v!r}")
            values.append(v)
        return Choice(tuple(values))
    if isinstance(dim, Fixed):
        v = dim.value.item() if isinstance(dim.value, np.generic) else dim.value
        if not isinstance(v, int | float | str | bool):
            raise ValueError(f"{path}: fixed value must be a number, string or bool, got {v!r}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{path}: fixed value must be finite, got {v!r}")
        return Fixed(v)
    raise ValueError(f"{path}: not a dimension: {dim!r}")


def _parse_shorthand(s: str, path: str) -> Dimension:
    m = _SHORTHAND.match(s)
    args = m.group(2).split(",") if m else []
    if m is None or len(args) != 2:
        raise ValueError(
            f"{path}: bad shorthand {s!r} (expected loguniform(low, high), uniform(low, high), "
            "int(low, high) or logint(low, high))"
        )
    kind = m.group(1)
    low, high = (a.strip() for a in args)
    if kind in ("int", "logint"):
        return Int(_integer(low, "low", path), _integer(high, "high", path), kind == "logint")
    return Float(_number(low, "low", path), _number(high, "high", path), kind == "loguniform")


def _parse_dim(spec: Any, path: str) -> Dimension:
    """Parses one config entry (mapping, shorthand string, list or scalar) into a dimension."""
    if isinstance(spec, Float | Int | Choice | Fixed):
        return spec
    if isinstance(spec, Mapping):
        if "type" not in spec:
            raise ValueError(f"{path}: missing key 'type' (expected one of {', '.join(_TYPES)})")
        kind = spec["type"]
        cls = _TYPES.get(kind.lower()) if isinstance(kind, str) else None
        if cls is None:
            raise ValueError(f"{path}: unknown type {kind!r} (expected one of {', '.join(_TYPES)})")
        keys = _KEYS[cls]
        for k in spec:
            if k not in keys:
                raise ValueError(f"{path}: unknown key {k!r} (expected {', '.join(keys)})")
        kwargs = {k: spec[k] for k in keys[1:] if k in spec}
        for k in keys[1:]:
            if k not in kwargs and k != "log":
                raise ValueError(f"{path}: missing key {k!r}")
        return cls(**kwargs)
    if isinstance(spec, str) and _SHORTHAND_START.match(spec):
        return _parse_shorthand(spec, path)
    if isinstance(spec, list | tuple):
        return Choice(tuple(spec))
    if isinstance(spec, int | float | str | bool | np.generic):
        return Fixed(spec)
    raise ValueError(f"{path}: cannot parse dimension from {spec!r}")


# --------------------------------------------------------------------------------------------
# Per-dimension unit maps (xp is numpy or jax.numpy)


def _log_bounds(dim: Float | Int) -> tuple[float, float]:
    a, b = (dim.low, dim.high) if isinstance(dim, Float) else (dim.low - 0.5, dim.high + 0.5)
    return (math.log(a), math.log(b)) if dim.log else (a, b)


def _numeric_to_unit(dim: Float | Int | Choice, x: Any, xp: Any) -> Any:
    if isinstance(dim, Choice):
        vals = xp.asarray(dim.values, dtype=float)
        idx = xp.argmin(xp.abs(x[..., None] - vals.reshape((1,) * x.ndim + (-1,))), axis=-1)
        return (idx + 0.5) / len(dim.values)
    a, b = _log_bounds(dim)
    t = xp.log(x) if dim.log else x
    return xp.clip((t - a) / (b - a), 0.0, 1.0)


def _numeric_from_unit(dim: Float | Int | Choice, u: Any, xp: Any) -> Any:
    if isinstance(dim, Choice):
        k = len(dim.values)
        idx = xp.clip(xp.floor(u * k), 0, k - 1).astype(int)
        return xp.asarray(dim.values, dtype=float)[idx]
    a, b = _log_bounds(dim)
    t = a + u * (b - a)
    x = xp.exp(t) if dim.log else t
    if isinstance(dim, Int):
        x = xp.round(x)
    return xp.clip(x, dim.low, dim.high)


def _xp_of(*arrays: Any) -> Any:
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


# --------------------------------------------------------------------------------------------
# Space
