"""The values of a :class:`~jaxhpo.space.Space`: its full grid, clipping columns into it and
checking that columns lie in it (the methods ``Space.grid``, ``Space.clip`` and
``Space.validate_values`` call these)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from jaxhpo import conditions
from jaxhpo.dims import _VALIDATE_RTOL, Choice, Fixed, Float, Int, _is_categorical


def grid(space: Any, points: int | Mapping[str, int] = 3) -> dict[str, np.ndarray]:
    """:meth:`jaxhpo.space.Space.grid`."""
    if isinstance(points, Mapping):
        for name in points:
            if name not in space._dims:
                raise ValueError(f"{space.where}.{name}: grid points for unknown dimension")
        per = {name: points.get(name, 3) for name in space.names}
    else:
        per = dict.fromkeys(space.names, points)
    axes: list[np.ndarray] = []
    for name in space.names:
        dim, p = space._dims[name], per[name]
        if isinstance(dim, Float | Int) and (
            not isinstance(p, int | np.integer) or isinstance(p, bool) or p < 2
        ):
            raise ValueError(f"{space._path(name)}: grid points must be an int >= 2, got {p!r}")
        if isinstance(dim, Float):
            vals = (np.geomspace if dim.log else np.linspace)(dim.low, dim.high, int(p))
            vals[0], vals[-1] = dim.low, dim.high
        elif isinstance(dim, Int):
            if dim.high - dim.low + 1 <= p:
                vals = np.arange(dim.low, dim.high + 1, dtype=np.float64)
            else:
                spaced = (np.geomspace if dim.log else np.linspace)(dim.low, dim.high, int(p))
                vals = np.unique(np.round(spaced))
        elif isinstance(dim, Choice):
            dtype = object if _is_categorical(dim) else np.float64
            vals = np.asarray(dim.values, dtype=dtype)
        else:
            vals = np.asarray([dim.value], dtype=object if _is_categorical(dim) else float)
        axes.append(vals)
    idx = np.meshgrid(*(np.arange(len(a)) for a in axes), indexing="ij")
    out = {name: a[i.ravel()] for name, a, i in zip(space.names, axes, idx, strict=True)}
    if space.when:  # only active combinations, each once
        out = conditions.unique_points(conditions.deactivate(space, out))
    return out


def clip(space: Any, columns: Mapping[str, ArrayLike]) -> dict[str, Any]:
    """:meth:`jaxhpo.space.Space.clip`."""
    space._require(columns)
    shape = space._batch_shape(columns)
    out: dict[str, np.ndarray] = {}
    for name in space.names:
        dim = space._dims[name]
        if isinstance(dim, Fixed):
            out[name] = space._fixed_column(dim, shape, np)
        elif _is_categorical(dim):
            assert isinstance(dim, Choice)
            col = np.asarray(columns[name], dtype=object)
            for v in col.ravel():
                if v not in dim.values and not (v is None and name in space.when):
                    raise ValueError(f"{space._path(name)}: {v!r} is not one of {list(dim.values)}")
            out[name] = col.copy()
        else:
            x = np.asarray(columns[name], dtype=np.float64)
            if np.isnan(x).any() and name not in space.when:  # NaN: an inactive entry
                raise ValueError(f"{space._path(name)}: cannot clip NaN")
            if isinstance(dim, Choice):
                vals = np.asarray(dim.values, dtype=np.float64)
                snapped = vals[np.argmin(np.abs(x[..., None] - vals), axis=-1)]
                out[name] = np.where(np.isnan(x), np.nan, snapped)
            else:
                x = np.round(x) if isinstance(dim, Int) else x
                out[name] = np.clip(x, dim.low, dim.high)
    return conditions.deactivate(space, out)


def validate_values(space: Any, columns: Mapping[str, ArrayLike]) -> None:
    """:meth:`jaxhpo.space.Space.validate_values`."""
    space._require(columns)
    for name in columns:
        if name not in space._dims:
            raise ValueError(f"{space.where}.{name}: unknown dimension")
    for name in space.names:
        if name not in columns:
            continue
        dim, path = space._dims[name], space._path(name)
        empty = (None,) if name in space.when else ()  # an inactive entry
        if _is_categorical(dim):
            allowed = dim.values if isinstance(dim, Choice) else (dim.value,)  # type: ignore[union-attr]
            for v in np.asarray(columns[name], dtype=object).ravel():
                if v not in allowed and v not in empty:
                    raise ValueError(f"{path}: {v!r} is not one of {list(allowed)}")
            continue
        try:
            x = np.asarray(columns[name], dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise ValueError(f"{path}: values must be numeric") from None
        if empty:
            x = x[~np.isnan(x)]
        if isinstance(dim, Float | Int):
            tol = _VALIDATE_RTOL * (abs(dim.low) + abs(dim.high))
            bad = ~((x >= dim.low - tol) & (x <= dim.high + tol))
            if isinstance(dim, Int):
                bad |= x != np.round(x)
            desc = f"[{dim.low!r}, {dim.high!r}]"
            if isinstance(dim, Int):
                desc += " (integers)"
        else:
            allowed_num = dim.values if isinstance(dim, Choice) else (dim.value,)
            bad = ~np.isin(x, np.asarray(allowed_num, dtype=np.float64))
            desc = f"one of {list(allowed_num)}"
        if bad.any():
            raise ValueError(f"{path}: value {x[bad][0]!r} outside {desc}")
