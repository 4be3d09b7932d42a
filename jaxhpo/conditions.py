"""Conditional dimensions of a search space: ``when: {parent: [values...]}``.

A dimension that declares ``when`` is *active* for a point only where every named parent is
active and takes one of the listed values, e.g. ``momentum`` only for ``optimizer`` in
``[momentum, nesterov]``. An inactive entry holds no value: NaN in a numeric column, None in a
categorical one (empty in the run's tables), and the trainer reads the default in its place
(:mod:`jaxhpo.optim.choices`: the default of the member's own optimizer).

:class:`jaxhpo.space.Space` calls these helpers, so the strategies see conditions through it:
points decoded from unit / unconstrained coordinates (random, Sobol, BO, evo, REINFORCE, PES)
come back with their inactive entries emptied; a grid lists only active combinations; unit
coordinates of inactive entries are a constant 0.5 (a model fitted on them sees no variation
there); :meth:`~jaxhpo.space.Space.complete` gives a value to an entry that a changed parent
made active (PBT's explore).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxhpo.dims import Choice, Fixed, _numeric_from_unit

Conditions = dict[str, tuple[tuple[str, tuple], ...]]

#: Unit coordinate of an inactive entry.
INACTIVE_UNIT = 0.5


def parse_when(spec: Any, path: str) -> tuple[tuple[str, tuple], ...]:
    """``{parent: [values]}`` (a scalar is one value) as ``((parent, values), ...)``."""
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(f"{path}.when: expected a mapping of dimension -> values, got {spec!r}")
    out = []
    for parent, values in spec.items():
        vals = tuple(values) if isinstance(values, list | tuple) else (values,)
        if not vals:
            raise ValueError(f"{path}.when.{parent}: needs at least one value")
        out.append((parent, vals))
    return tuple(out)


def check_conditions(dims: Mapping[str, Any], when: Mapping[str, Any], where: str) -> Conditions:
    """Validates ``when`` against the space's dimensions: each parent is another dimension, a
    choice or a fixed value, each listed value one of its values; no cycles.

    Raises:
      ValueError: one line naming ``where.name.when...``.
    """
    out: Conditions = {}
    for name, spec in when.items():
        path = f"{where}.{name}"
        if name not in dims:
            raise ValueError(f"{path}.when: unknown dimension {name!r}")
        conds = spec if isinstance(spec, tuple) else parse_when(spec, path)
        for parent, values in conds:
            if parent == name or parent not in dims:
                known = ", ".join(n for n in dims if n != name)
                raise ValueError(f"{path}.when: unknown dimension {parent!r} (known: {known})")
            dim = dims[parent]
            if not isinstance(dim, Choice | Fixed):
                raise ValueError(
                    f"{path}.when.{parent}: a condition names a choice or fixed dimension, "
                    f"not a {type(dim).__name__.lower()} range"
                )
            allowed = dim.values if isinstance(dim, Choice) else (dim.value,)
            for v in values:
                if v not in allowed:
                    raise ValueError(f"{path}.when.{parent}: {v!r} is not one of {list(allowed)}")
        out[name] = tuple((p, tuple(v)) for p, v in conds)
    for name in out:
        _check_acyclic(name, out, (), where)
    return out


def _check_acyclic(name: str, conds: Conditions, seen: tuple[str, ...], where: str) -> None:
    if name in seen:
        raise ValueError(f"{where}.{name}.when: conditions form a cycle ({' -> '.join(seen)})")
    for parent, _ in conds.get(name, ()):
        _check_acyclic(parent, conds, (*seen, name), where)


def _present(col: np.ndarray) -> np.ndarray:
    """Entries that hold a value (not NaN / None)."""
    if col.dtype == object:
        return np.array([v is not None and v == v for v in col.ravel()], bool).reshape(col.shape)
    return ~np.isnan(col.astype(np.float64))


def active(space: Any, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Where each dimension is active (bool, the columns' batch shape); unconditional dims and
    names missing from ``columns`` are active everywhere."""
    shape = space._batch_shape(columns)
    memo: dict[str, np.ndarray] = {}

    def of(name: str) -> np.ndarray:
        if name in memo:
            return memo[name]
        mask = np.ones(shape, bool)
        for parent, values in space.when.get(name, ()):
            if parent not in columns:
                col = np.full(shape, space[parent].value, dtype=object)  # a fixed parent
            else:
                col = np.asarray(columns[parent], dtype=object)
            hit = (
                np.vectorize(lambda v, vs=values: v in vs, otypes=[bool])(col) if col.size else col
            )
            mask &= of(parent) & hit.astype(bool)
        memo[name] = mask
        return mask

    return {n: of(n) for n in space.names}


def deactivate(space: Any, columns: Mapping[str, Any]) -> dict[str, Any]:
    """The columns with every inactive entry emptied (NaN, or None in a categorical column)."""
    if not space.when:
        return dict(columns)
    masks = active(space, columns)
    out = dict(columns)
    for name in space.when:
        if name not in out:
            continue
        col = np.asarray(out[name])
        col = col.copy() if col.dtype == object else col.astype(np.float64)
        col[~masks[name]] = None if col.dtype == object else np.nan
        out[name] = col
    return out


def complete(space: Any, columns: Mapping[str, Any], seed: Any) -> dict[str, Any]:
    """Every entry consistent with its parents: inactive ones emptied, active ones without a
    value (a parent changed) drawn from the space (uniform in unit coordinates)."""
    out = deactivate(space, columns)
    masks = active(space, out)
    shape = space._batch_shape(out)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    draw = None
    for name in space.when:
        if name not in out:
            continue
        missing = masks[name] & ~_present(np.asarray(out[name]))
        if missing.any():
            if draw is None:
                draw = space.from_unit(rng.random((*shape, len(space.searched))), raw=True)
            col = np.asarray(out[name]).copy()
            col[missing] = np.asarray(draw[name])[missing]
            out[name] = col
    return out


def unique_points(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The columns without repeated points (first occurrence kept, in order)."""
    names = list(columns)
    if not names:
        return dict(columns)
    n = len(columns[names[0]])
    seen, keep = set(), []
    for i in range(n):
        point = tuple(_key(columns[k][i]) for k in names)
        if point not in seen:
            seen.add(point)
            keep.append(i)
    return {k: np.asarray(v)[keep] for k, v in columns.items()}


def _key(v: Any) -> Any:
    if isinstance(v, float | np.floating) and np.isnan(v):
        return "<inactive>"
    return v.item() if isinstance(v, np.generic) else v


def _order(space: Any) -> list[str]:
    """The searched names, every parent before its conditional dimensions."""
    done: list[str] = []

    def visit(name: str) -> None:
        for parent, _ in space.when.get(name, ()):
            visit(parent)
        if name not in done:
            done.append(name)

    for name in space.names:
        visit(name)
    return [n for n in done if n in space.searched]


def ask(study: Any, space: Any, dists: Mapping[str, Any]) -> Any:
    """An Optuna trial asked define-by-run: the active dimensions only, parents first, so a
    sampler such as TPE models the conditional structure (without conditions: ``study.ask``
    with every distribution fixed)."""
    if not space.when:
        return study.ask(dict(dists))
    trial = study.ask()
    for name in _order(space):
        ok = True
        for parent, values in space.when.get(name, ()):
            # a searched parent that is inactive is not in the trial: nothing is in ``values``
            fixed = getattr(space[parent], "value", None)
            ok = ok and trial.params.get(parent, fixed) in values
        if ok:
            _suggest(trial, name, dists[name])
    return trial


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    kind = type(dist).__name__
    if kind == "CategoricalDistribution":
        return trial.suggest_categorical(name, dist.choices)
    suggest = trial.suggest_int if kind == "IntDistribution" else trial.suggest_float
    return suggest(name, dist.low, dist.high, log=dist.log, step=dist.step)


def internal(trial: Any, name: str, dist: Any) -> float:
    """Optuna's internal value of a trial's parameter; NaN where it was not suggested."""
    return dist.to_internal_repr(trial.params[name]) if name in trial.params else float("nan")


def parents(space: Any) -> set[str]:
    """The dimensions that conditions read."""
    return {p for conds in space.when.values() for p, _ in conds}


def active_coords(space: Any, x_PxD: np.ndarray) -> np.ndarray:
    """Which coordinates of unconstrained points are active (bool ``[P, len(searched)]``)."""
    cols = space.from_unconstrained(np.asarray(x_PxD, np.float64), raw=True)
    act = active(space, cols)
    return np.stack([act[n] for n in space.searched], -1)


def centre_inactive(space: Any, x_PxD: np.ndarray, centre_D: np.ndarray) -> np.ndarray:
    """Unconstrained points with their inactive coordinates moved to ``centre_D`` (an ES's
    mean): a draw that reached no member then carries no step into the search distribution."""
    mask = active_coords(space, x_PxD)
    return np.where(mask, x_PxD, np.asarray(centre_D)[None]).astype(np.asarray(x_PxD).dtype)


def complete_traced(space: Any, hp: Mapping[str, Any], key: Any) -> dict[str, Any]:
    """:func:`complete` inside ``jit`` for numeric columns (PBT's decision in the compiled loop):
    inactive entries NaN, an active NaN entry drawn uniformly in unit coordinates."""
    import jax
    import jax.numpy as jnp

    out = dict(hp)
    if not space.when:
        return out
    shape = jnp.shape(next(iter(out.values())))
    memo: dict[str, Any] = {}

    def of(name: str) -> Any:
        if name not in memo:
            mask = jnp.ones(shape, bool)
            for parent, values in space.when.get(name, ()):
                col = out[parent] if parent in out else jnp.full(shape, space[parent].value)
                hit = jnp.isin(jnp.asarray(col, jnp.float32), jnp.asarray(values, jnp.float32))
                mask = mask & of(parent) & hit
            memo[name] = mask
        return memo[name]

    for i, name in enumerate(space.when):
        if name not in out:
            continue
        v = jnp.asarray(out[name], jnp.float32)
        u = jax.random.uniform(jax.random.fold_in(key, i), shape)
        fresh = _numeric_from_unit(space[name], u, jnp).astype(jnp.float32)
        v = jnp.where(of(name) & jnp.isnan(v), fresh, v)
        out[name] = jnp.where(of(name), v, jnp.nan)
    return out
