"""Search spaces: typed hyperparameter dimensions and maps to unit / unconstrained coordinates.

A :class:`Space` is an ordered mapping ``name -> Dimension``. Values travel as *columns*: a dict
``name -> array`` whose arrays share one batch shape (usually ``(n,)``, one entry per trial).

Dtype conventions:
    * Numeric dimensions (``Float``, ``Int``, a ``Choice`` of numbers, a numeric ``Fixed``) give
      **float64** numpy arrays from :meth:`Space.sample`, :meth:`Space.grid`, :meth:`Space.sobol`
      and :meth:`Space.clip`. ``Int`` columns hold integer values stored as float64; cast with
      ``.astype(int)`` where an integer is needed.
    * Categorical dimensions (a ``Choice`` with any str/bool value, a str/bool ``Fixed``) give
      numpy arrays of dtype ``object``.

Unit coordinates put every searched (non-``Fixed``) dimension on ``[0, 1]``: linearly (or in
log space for ``log=True``) for ``Float``; ``Int`` uses the same map on ``[low - 0.5, high + 0.5]``
followed by rounding, so each integer gets an equal-width bin; ``Choice`` splits ``[0, 1]`` into
equal-width bins, one per value. Unconstrained coordinates are ``logit(unit)``.

The unit maps dispatch on their input: numpy / Python inputs are computed with numpy in float64
(exact round trips); ``jax.Array`` inputs (including tracers inside ``jit``/``grad``) are
computed with ``jax.numpy`` and stay differentiable for ``Float`` dimensions. Categorical
choices can only be decoded from concrete (non-traced) values.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from numpy.typing import ArrayLike
from scipy.stats import qmc

from jaxhpo import conditions, space_values
from jaxhpo.dims import (  # noqa: F401  (the dimensions, re-exported)
    _EPS,
    _KEYS,
    _SHORTHAND,
    _SHORTHAND_START,
    _TYPES,
    _VALIDATE_RTOL,
    Array,
    Choice,
    Dimension,
    Fixed,
    Float,
    Int,
    _check_bool,
    _check_dim,
    _integer,
    _is_categorical,
    _is_number,
    _log_bounds,
    _number,
    _numeric_from_unit,
    _numeric_to_unit,
    _parse_dim,
    _parse_shorthand,
    _xp_of,
)


class Space:
    """An ordered, validated collection of named dimensions.

    Args:
        dims: Mapping ``name -> Dimension``; insertion order is kept.
        where: Prefix for error messages (e.g. ``"space"`` gives ``space.lr: ...``).
        when: Conditional dimensions, ``name -> {parent: [values]}``: ``name`` is active only
            where each parent (a choice or fixed dimension) takes one of the values
            (:mod:`jaxhpo.conditions`); an inactive entry is NaN (None if categorical).

    Raises:
        ValueError: If a name or dimension is invalid (one-line message naming the field).
    """

    def __init__(
        self,
        dims: Mapping[str, Dimension],
        *,
        where: str = "space",
        when: Mapping[str, Any] | None = None,
    ):
        if not isinstance(dims, Mapping):
            raise ValueError(f"{where}: expected a mapping of name -> dimension, got {dims!r}")
        self.where = where
        self._dims: dict[str, Dimension] = {}
        for name, dim in dims.items():
            if not isinstance(name, str) or not name:
                raise ValueError(
                    f"{where}: dimension names must be non-empty strings, got {name!r}"
                )
            self._dims[name] = _check_dim(dim, f"{where}.{name}")
        self.names: tuple[str, ...] = tuple(self._dims)
        self.searched: tuple[str, ...] = tuple(
            n for n, d in self._dims.items() if not isinstance(d, Fixed)
        )
        #: ``name -> ((parent, values), ...)`` for the conditional dimensions.
        self.when: conditions.Conditions = conditions.check_conditions(
            self._dims, when or {}, where
        )

    # -- construction / serialization ------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], *, where: str = "space") -> Space:
        """Builds a space from a YAML-style mapping.

        Each entry is a mapping with ``type`` (``float``/``int``/``choice``/``fixed``) and
        optionally ``when: {parent: [values]}`` (a conditional dimension), a shorthand string
        (``"loguniform(1e-4, 1e-1)"``, ``"uniform(0, 1)"``, ``"int(1, 8)"``, ``"logint(1, 64)"``),
        a list (a ``Choice``), or a scalar (a ``Fixed``).

        Args:
            cfg: Mapping ``name -> entry``.
            where: Field-path prefix used in error messages.

        Returns:
            The validated space.

        Raises:
            ValueError: On bad input, with a one-line message naming ``where.name``.
        """
        if not isinstance(cfg, Mapping):
            raise ValueError(f"{where}: expected a mapping of name -> dimension, got {cfg!r}")
        when = {
            name: conditions.parse_when(spec["when"], f"{where}.{name}")
            for name, spec in cfg.items()
            if isinstance(spec, Mapping) and "when" in spec
        }
        dims = {
            name: _parse_dim(
                {k: v for k, v in spec.items() if k != "when"}
                if isinstance(spec, Mapping)
                else spec,
                f"{where}.{name}",
            )
            for name, spec in cfg.items()
        }
        return cls(dims, where=where, when=when)

    def to_config(self) -> dict[str, dict[str, Any]]:
        """Returns a plain (YAML-dumpable) mapping that :meth:`from_config` turns back into self."""
        out: dict[str, dict[str, Any]] = {}
        for name, d in self._dims.items():
            if isinstance(d, Float | Int):
                kind = "float" if isinstance(d, Float) else "int"
                out[name] = {"type": kind, "low": d.low, "high": d.high, "log": d.log}
            elif isinstance(d, Choice):
                out[name] = {"type": "choice", "values": list(d.values)}
            else:
                out[name] = {"type": "fixed", "value": d.value}
            if name in self.when:
                out[name]["when"] = {p: list(v) for p, v in self.when[name]}
        return out

    # -- mapping protocol ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._dims)

    def __iter__(self) -> Iterator[str]:
        return iter(self._dims)

    def __contains__(self, name: object) -> bool:
        return name in self._dims

    def __getitem__(self, name: str) -> Dimension:
        return self._dims[name]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Space):
            return NotImplemented
        return list(self._dims.items()) == list(other._dims.items()) and self.when == other.when

    def __hash__(self) -> int:
        return hash((tuple(self._dims.items()), tuple(self.when.items())))

    def __repr__(self) -> str:
        return (
            f"Space({self._dims!r}, when={self.when!r})" if self.when else f"Space({self._dims!r})"
        )

    # -- helpers ---------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return f"{self.where}.{name}"

    def _fixed_column(self, dim: Fixed, shape: tuple[int, ...], xp: Any) -> Any:
        if _is_categorical(dim):
            return np.full(shape, dim.value, dtype=object)
        return xp.full(shape, float(dim.value), dtype=float)

    def _batch_shape(self, columns: Mapping[str, ArrayLike]) -> tuple[int, ...]:
        for name in self.names:
            if name in columns:
                return tuple(np.shape(columns[name]))
        return ()

    def _require(self, columns: Mapping[str, ArrayLike]) -> None:
        for name in self.searched:
            if name not in columns:
                raise ValueError(f"{self._path(name)}: missing column")

    # -- unit / unconstrained maps ---------------------------------------------------------

    def to_unit(self, columns: Mapping[str, ArrayLike]) -> Array:
        """Maps columns to unit coordinates.

        Args:
            columns: ``name -> array`` for every searched name (other keys are ignored).
                Out-of-range numeric values are clipped; numeric choices snap to the nearest value.

        Returns:
            Array of shape ``[..., len(searched)]`` in ``[0, 1]`` (bin centres for ints/choices).
            A ``jax.Array`` if any column is one, else a float64 numpy array.

        Raises:
            ValueError: If a searched column is missing or a categorical value is not a choice.
        """
        self._require(columns)
        xp = _xp_of(*(columns[n] for n in self.searched))
        shape = self._batch_shape(columns)
        out = []
        for name in self.searched:
            dim = self._dims[name]
            if _is_categorical(dim):
                assert isinstance(dim, Choice)
                col = np.asarray(columns[name], dtype=object)
                index = {v: i for i, v in enumerate(dim.values)}
                if name in self.when:  # an inactive entry (None) sits at the constant 0.5
                    index[None] = (len(dim.values) * conditions.INACTIVE_UNIT) - 0.5
                try:
                    idx = np.vectorize(index.__getitem__, otypes=[float])(col)
                except (KeyError, TypeError):
                    bad = next(v for v in col.ravel() if v not in index)
                    raise ValueError(
                        f"{self._path(name)}: {bad!r} is not one of {list(dim.values)}"
                    ) from None
                out.append(xp.asarray((idx + 0.5) / len(dim.values)))
            else:
                x = columns[name]
                x = xp.asarray(x if xp is jnp else np.asarray(x, dtype=np.float64))
                unit = _numeric_to_unit(dim, x, xp)  # type: ignore[arg-type]
                if name in self.when:  # an inactive entry (NaN) sits at the constant 0.5
                    unit = xp.where(xp.isnan(x), conditions.INACTIVE_UNIT, unit)
                out.append(unit)
        if not out:
            return xp.zeros((*shape, 0))
        return xp.stack(out, axis=-1)

    def from_unit(self, u: ArrayLike, raw: bool = False) -> dict[str, Array]:
        """Maps unit coordinates back to columns (inverse of :meth:`to_unit`).

        Entries of conditional dimensions that their parents make inactive are emptied (NaN /
        None), so every point decoded here respects the space's conditions (``raw=True``: kept).

        Args:
            u: Array of shape ``[..., len(searched)]``; clipped to ``[0, 1]``.

        Returns:
            Columns for every name (``Fixed`` ones filled in) with the batch shape of ``u``.
            jax arrays if ``u`` is a ``jax.Array`` (traceable except categorical choices, which
            are always numpy object arrays); float64 numpy arrays otherwise.

        Raises:
            ValueError: If the last axis of ``u`` does not match ``len(searched)``.
            TypeError: If a categorical choice is decoded from a traced array.
        """
        xp = _xp_of(u)
        u = u if xp is jnp else np.asarray(u, dtype=np.float64)
        if u.ndim < 1 or u.shape[-1] != len(self.searched):
            raise ValueError(
                f"{self.where}: unit array must have last axis {len(self.searched)} "
                f"(one per searched dim), got shape {tuple(u.shape)}"
            )
        u = xp.clip(u, 0.0, 1.0)
        shape = tuple(u.shape[:-1])
        out: dict[str, Array] = {}
        for name in self.names:
            dim = self._dims[name]
            if isinstance(dim, Fixed):
                out[name] = self._fixed_column(dim, shape, xp)
                continue
            ui = u[..., self.searched.index(name)]
            if _is_categorical(dim):
                assert isinstance(dim, Choice)
                if isinstance(ui, jax.core.Tracer):
                    raise TypeError(
                        f"{self._path(name)}: categorical choice cannot be decoded from "
                        "traced values"
                    )
                k = len(dim.values)
                idx = np.clip(np.floor(np.asarray(ui) * k), 0, k - 1).astype(int)
                out[name] = np.asarray(dim.values, dtype=object)[idx]
            else:
                out[name] = _numeric_from_unit(dim, ui, xp)  # type: ignore[arg-type]
        if self.when and not raw:
            if xp is jnp:
                raise TypeError(f"{self.where}: conditional dimensions are decoded on the host")
            out = conditions.deactivate(self, out)
        return out

    def to_unconstrained(self, columns: Mapping[str, ArrayLike]) -> Array:
        """Returns ``logit(to_unit(columns))`` with the unit values clipped to ``[1e-6, 1 - 1e-6]``.

        Args:
            columns: As for :meth:`to_unit`.

        Returns:
            Array of shape ``[..., len(searched)]`` (jax if any input column is jax).
        """
        unit = self.to_unit(columns)
        xp = _xp_of(unit)
        unit = xp.clip(unit, _EPS, 1.0 - _EPS)
        return xp.log(unit) - xp.log1p(-unit)

    def from_unconstrained(self, z: ArrayLike, raw: bool = False) -> dict[str, Array]:
        """Returns ``from_unit(sigmoid(z))``; differentiable in ``z`` for ``Float`` dims under jax.

        Args:
            z: Array of shape ``[..., len(searched)]``.

        Returns:
            Columns as for :meth:`from_unit`.
        """
        if isinstance(z, jax.Array):
            return self.from_unit(jax.nn.sigmoid(z), raw)
        return self.from_unit(scipy.special.expit(np.asarray(z, dtype=np.float64)), raw)

    # -- generators ------------------------------------------------------------------------

    def sample(self, seed: int | np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Draws ``n`` points uniformly in unit coordinates (so log dims are log-uniform).

        Args:
            seed: Integer seed or a numpy ``Generator`` (advanced in place).
            n: Number of points.

        Returns:
            Columns of shape ``(n,)`` (float64, or object for categorical dims).
        """
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return self.from_unit(rng.random((_check_n(n, self.where), len(self.searched))))

    def sobol(self, seed: int, n: int) -> dict[str, np.ndarray]:
        """Draws ``n`` scrambled Sobol points (first ``n`` of the next power of two).

        Args:
            seed: Seed of the scrambling; same seed, same points.
            n: Number of points (need not be a power of two).

        Returns:
            Columns of shape ``(n,)`` (float64, or object for categorical dims).
        """
        n = _check_n(n, self.where)
        d = len(self.searched)
        if d == 0:
            return self.from_unit(np.zeros((n, 0)))
        engine = qmc.Sobol(d=d, scramble=True, seed=seed)
        m = max(0, math.ceil(math.log2(n))) if n > 0 else 0
        return self.from_unit(engine.random_base2(m)[:n])

    def grid(self, points: int | Mapping[str, int] = 3) -> dict[str, np.ndarray]:
        """Returns the full Cartesian product grid (first name varies slowest).

        Floats get ``points`` values (log-spaced if ``log``, endpoints included); ints get every
        value if there are at most ``points`` of them, else ``points`` evenly (log-)spaced rounded
        unique values; choices get all values; fixed dims one value.

        Args:
            points: Points per Float/Int dim (>= 2), or a mapping ``name -> points`` (missing
                names get 3).

        Returns:
            Columns of shape ``(product of per-dim counts,)``.

        Raises:
            ValueError: On a bad ``points`` value or an unknown name in the mapping.
        """
        return space_values.grid(self, points)

    # -- conditional dimensions ------------------------------------------------------------

    def active(self, columns: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
        """Where each dimension is active (bool arrays, the columns' batch shape)."""
        return conditions.active(self, columns)

    def deactivate(self, columns: Mapping[str, ArrayLike]) -> dict[str, Any]:
        """The columns with inactive entries emptied: NaN (None in a categorical column)."""
        return conditions.deactivate(self, columns)

    def complete(
        self, columns: Mapping[str, ArrayLike], seed: int | np.random.Generator
    ) -> dict[str, Any]:
        """The columns consistent with the conditions: inactive entries emptied, an entry a
        changed parent made active drawn from the space (e.g. after PBT's explore)."""
        return conditions.complete(self, columns, seed)

    # -- checking --------------------------------------------------------------------------

    def clip(self, columns: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
        """Moves values into the space.

        Floats are clipped to ``[low, high]``; ints rounded then clipped; numeric choices snap to
        the nearest value; fixed columns are (re)filled with the fixed value.

        Args:
            columns: ``name -> array`` for every searched name.

        Returns:
            Numpy columns for every name.

        Raises:
            ValueError: If a searched column is missing, holds NaN, or a categorical value is not
                one of the choices.
        """
        return space_values.clip(self, columns)

    def validate_values(self, columns: Mapping[str, ArrayLike]) -> None:
        """Checks that columns lie in the space.

        Float bounds allow a relative slack of 1e-6 (float32 round-off); ints must be integer
        valued; choices and fixed values must match exactly.

        Args:
            columns: ``name -> array``; every searched name is required, fixed names optional.

        Raises:
            ValueError: Naming the first offending field (missing, unknown or out-of-space).
        """
        space_values.validate_values(self, columns)


def _check_n(n: int, where: str) -> int:
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 0:
        raise ValueError(f"{where}: n must be a non-negative int, got {n!r}")
    return int(n)
