"""A strategy's decision, checked and applied: the one place that does it.

::

    PopulationUpdate (host, NumPy)  ──check_update──> apply_update         host loop, simulate
    device_update's decision (traced) ──check_device_update──> apply_device_update   compiled loop

Both apply in the order :class:`~jaxhpo.strategies.base.PopulationUpdate` documents: copy
(``parents``), re-initialise (``reinit``), set ``hparams``, set ``active``, re-pack (``keep``). A
compiled strategy may decide only the first and third (a shape change cannot happen inside one
program).

``apply_update`` works on any population that offers ``copy_members``, ``reinit_members``,
``set_hparams``, ``set_active``, ``keep_members`` (which ``grow`` uses too, with slot 0 listed
again), ``for_size``, ``place`` and ``hparam_names``: the trainer
(:class:`~jaxhpo.population.Population`), shape buckets (:mod:`jaxhpo.population.buckets`) and
the learning curves of :mod:`jaxhpo.simulate`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo import parallel
from jaxhpo.optim import choices
from jaxhpo.population.specialise import check_fixed_names
from jaxhpo.strategies.base import PopulationUpdate


def check_update(
    upd: PopulationUpdate, size: int, names: tuple[str, ...], optional: tuple[str, ...] = ()
) -> None:
    """A strategy's update must fit the population's shape (``size`` slots, plus ``grow``) and
    name real members; NaN (an inactive conditional dimension) is allowed only in the
    ``optional`` names.

    Raises:
      ValueError: naming the field (``strategy update: parents must ...``).
    """

    def shape_ok(field: str, value: Any) -> np.ndarray:
        arr = np.asarray(value)
        if arr.shape != (size,):
            raise ValueError(f"strategy update: {field} must have shape ({size},), got {arr.shape}")
        return arr

    def slots_ok(field: str, arr: np.ndarray) -> None:
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"strategy update: {field} must be integers, got {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= size):
            raise ValueError(
                f"strategy update: {field} must lie in [0, {size}), got {arr.min()}..{arr.max()}"
            )

    grow = upd.grow
    if isinstance(grow, bool) or not isinstance(grow, int | np.integer) or grow < 0:
        raise ValueError(f"strategy update: grow must be an integer >= 0, got {grow!r}")
    if grow:
        added = np.zeros(size + grow, bool)
        added[size:] = True
        if upd.reinit is None or np.asarray(upd.reinit).shape != added.shape:
            raise ValueError(f"strategy update: grow needs reinit of shape ({size + grow},)")
        if not np.all(np.asarray(upd.reinit, bool)[added]):
            raise ValueError("strategy update: every slot that grow adds must be re-initialised")
        size += int(grow)
    if upd.parents is not None:
        slots_ok("parents", shape_ok("parents", upd.parents))
    if upd.keep is not None:
        keep = np.asarray(upd.keep)
        if keep.ndim != 1 or keep.size == 0:
            raise ValueError(f"strategy update: keep must be a non-empty 1-D array, got {keep}")
        slots_ok("keep", keep)
        if len(np.unique(keep)) != keep.size:
            raise ValueError("strategy update: keep lists a slot twice")
    for field in ("reinit", "active"):
        value = getattr(upd, field)
        if value is not None and shape_ok(field, value).dtype != bool:
            raise ValueError(f"strategy update: {field} must be booleans")
    for name, value in (upd.hparams or {}).items():
        if name not in names:
            raise ValueError(f"strategy update: unknown hyperparameter '{name}'")
        arr = np.asarray(value, np.float64)
        if arr.shape not in ((), (size,)):
            raise ValueError(f"strategy update: hparams.{name} must be a scalar or ({size},)")
        if not np.all(np.isfinite(arr) | (np.isnan(arr) & (name in optional))):
            raise ValueError(f"strategy update: hparams.{name} has non-finite values")


def apply_update(
    population: Any,
    pop: Any,
    upd: PopulationUpdate,
    root_key: jax.Array | None,
    next_id: int,
) -> tuple[Any, Any, int]:
    """Checks and applies a strategy's decision; the same code for every strategy.

    Args:
      population: the population's structure (see the module docstring).
      pop: its state.
      upd: the decision.
      root_key: the run's root key (a re-initialised member's key derives from it and its id).
      next_id: the next free member id (re-initialised slots take new ids, in slot order).

    Returns:
      The population structure (a new one when ``keep`` re-packs the members onto fewer
      devices), the new state and the next free member id.

    Raises:
      ValueError: if the update does not fit the population (wrong shape, parent index out of
        range, unknown or non-finite hyperparameter), before anything is changed.
    """
    check_update(upd, pop.size, population.hparam_names, choices.optional_names(population))
    if upd.grow:  # the new slots start as copies of slot 0; reinit replaces them below
        slots = np.concatenate([np.arange(pop.size), np.zeros(int(upd.grow), np.int64)])
        pop = population.keep_members(pop, slots)
        population = population.for_size(len(slots))
    if upd.parents is not None:
        pop = population.copy_members(pop, upd.parents)
    if upd.reinit is not None and np.any(upd.reinit):
        reinit = np.asarray(upd.reinit, bool)
        ids = parallel.to_host(pop.member_id).copy()
        n_new = int(reinit.sum())
        ids[reinit] = np.arange(next_id, next_id + n_new)
        next_id += n_new
        pop = population.reinit_members(pop, root_key, reinit, ids)
    if upd.hparams:
        pop = population.set_hparams(pop, upd.hparams)
    if upd.active is not None:
        pop = population.set_active(pop, upd.active)
    if upd.keep is not None:
        pop = population.keep_members(pop, upd.keep)
        population = population.for_size(len(upd.keep))
    # Keep every leaf on the population's devices, so the next segment does not recompile.
    return population, population.place(pop), next_id


class DeviceUpdate(NamedTuple):
    """A compiled strategy's decision (what :meth:`~jaxhpo.strategies.Strategy.device_update`
    returns after its state), as traced arrays."""

    parents: jax.Array  # int32 [P]: slot i receives the whole member parents[i]
    copied: jax.Array  # bool [P]: slot i copied its parent (an ``exploit`` event)
    explored: jax.Array  # bool [P]: slot i's hyperparameters changed (an ``explore`` event)
    hparams: dict[str, jax.Array]  # name -> float [P], the new values (a subset of names)

    def unless(self, skip: jax.Array, hparams: dict[str, jax.Array]) -> DeviceUpdate:
        """This decision, or none where ``skip`` (a traced bool): every slot its own parent,
        nothing copied or explored, ``hparams`` (the current values) kept."""
        slots = jnp.arange(self.parents.shape[0], dtype=jnp.int32)
        return DeviceUpdate(
            parents=jnp.where(skip, slots, self.parents).astype(jnp.int32),
            copied=self.copied & ~skip,
            explored=self.explored & ~skip,
            hparams={k: jnp.where(skip, hparams[k], v) for k, v in self.hparams.items()},
        )


def check_device_update(upd: DeviceUpdate, size: int, names: tuple[str, ...]) -> None:
    """:func:`check_update` for a traced decision: shapes, dtypes and names, checked while the
    program is traced (values are not known then).

    Raises:
      ValueError: naming the field (``strategy update: parents must ...``).
    """
    for field in ("parents", "copied", "explored"):
        shape = jnp.shape(getattr(upd, field))
        if shape != (size,):
            raise ValueError(f"strategy update: {field} must have shape ({size},), got {shape}")
    if not jnp.issubdtype(jnp.result_type(upd.parents), jnp.integer):
        raise ValueError(f"strategy update: parents must be integers, got {upd.parents.dtype}")
    for name, value in upd.hparams.items():
        if name not in names:
            raise ValueError(f"strategy update: unknown hyperparameter '{name}'")
        if jnp.shape(value) not in ((), (size,)):
            raise ValueError(f"strategy update: hparams.{name} must be a scalar or ({size},)")


def apply_device_update(population: Any, pop: Any, upd: DeviceUpdate) -> Any:
    """:func:`apply_update` inside a compiled program, for the fields a compiled strategy may
    return: checks the decision (:func:`check_device_update`, at trace time), then copies (slot
    ``i`` receives member ``upd.parents[i]``) and sets ``upd.hparams``.

    Args:
      population: a :class:`~jaxhpo.population.Population` (its traceable ``_copy_impl`` and
        ``_set_hparams_impl``).
      pop: its traced state.
      upd: the decision (``copied`` and ``explored`` are the lineage's; applying needs only
        ``parents`` and ``hparams``).

    Returns:
      The new traced state.

    Raises:
      ValueError: while tracing, if the decision does not fit the population.
    """
    size = pop.size
    check_device_update(upd, size, population.hparam_names)
    check_fixed_names(getattr(population, "fixed", {}), upd.hparams, "strategy update")
    values = {k: jnp.broadcast_to(jnp.asarray(v), (size,)) for k, v in upd.hparams.items()}
    return population._set_hparams_impl(population._copy_impl(pop, upd.parents), values)
