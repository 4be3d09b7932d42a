"""Editing a population between segments: its hyperparameters (read from and written to the
optimizer state and the member fields, the fixed ones checked) and its members (copy, re-init,
keep). A mixin of :class:`jaxhpo.population.Population`; every edit is one jitted gather or
select, so nothing recompiles."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo import optim, parallel
from jaxhpo.population.members import PopulationState, _gather
from jaxhpo.population.specialise import check_fixed_values


class MemberEdits:
    """Hyperparameters and member moves of a :class:`~jaxhpo.population.Population`."""

    # -- hyperparameters -------------------------------------------------------------------
    def get_hparams(self, pop: PopulationState) -> dict[str, jax.Array]:
        """All hyperparameters, name -> float32 [P] (optimizer ones read from the opt state)."""
        opt = optim.get_hparams(pop.opt_state)
        fields = {k: getattr(pop, k).astype(jnp.float32) for k in self.member_fields}
        return {**{k: opt[k] for k in self.opt_names}, **pop.hparams, **fields}

    def set_hparams(self, pop: PopulationState, values: Mapping[str, Any]) -> PopulationState:
        """Writes new values (scalars or [P]); shapes and dtypes stay, so nothing recompiles.

        Raises:
          ValueError: a name is unknown, or a :attr:`fixed` one gets another value.
        """
        self._check_names(values)
        check_fixed_values(self.fixed, values)
        P = pop.size
        cast = {
            k: jnp.asarray(np.broadcast_to(np.asarray(v, np.float32), (P,)))
            for k, v in values.items()
        }
        return self.place(self._set_hparams_impl(pop, cast))

    def _set_hparams_impl(self, pop: PopulationState, values: Mapping[str, jax.Array]):
        opt_vals = {k: v for k, v in values.items() if k in self.opt_names}
        task_vals = {k: v for k, v in values.items() if k in self.task_names}
        if self.epoch_size is not None:  # the horizon follows epochs / batch size / warmup_frac
            hp = {**pop.hparams, **task_vals}
            current = optim.get_hparams(pop.opt_state)
            opt_vals = self._derived({k: opt_vals.get(k, current[k]) for k in self.opt_names}, hp)
        opt_state = optim.set_hparams(pop.opt_state, opt_vals) if opt_vals else pop.opt_state
        fields = {k: values[k].astype(jnp.int32) for k in self.member_fields if k in values}
        return pop.replace(opt_state=opt_state, hparams={**pop.hparams, **task_vals}, **fields)

    # -- moving members --------------------------------------------------------------------
    def _copy_impl(self, pop: PopulationState, parents):
        moved = jax.tree.map(lambda x: x[parents], pop)
        # A copied member keeps its own id and key (its own randomness from here on).
        return moved.replace(member_id=pop.member_id, key=pop.key)

    def reinit_members(
        self, pop: PopulationState, root_key: jax.Array, mask: Any, member_ids: Any
    ) -> PopulationState:
        """Slots where ``mask`` is True become freshly initialised members with the given ids
        (their current hyperparameters kept); the others are unchanged."""
        hp = parallel.to_host(self.get_hparams(pop))
        fresh = self.init(root_key, member_ids, hp)
        return self._where(np.asarray(mask, bool), fresh, pop)

    def _where_impl(self, mask_P, new: PopulationState, old: PopulationState):
        return jax.tree.map(
            lambda a, b: jnp.where(mask_P.reshape((-1,) + (1,) * (b.ndim - 1)), a, b), new, old
        )

    def for_size(self, size: int) -> Any:
        """This population's structure for ``size`` members: over the most of the devices it
        was built with that divide ``size`` (itself when that is its own number): a compacted
        population in successive halving, or one that grows back (``bohb``'s next iteration)."""
        full = self.full_devices
        devices = max(d for d in range(1, full + 1) if size % d == 0)
        if devices == self.devices:
            return self
        if jax.process_count() > 1:
            # A mesh on fewer devices would leave processes without devices of the population.
            raise ValueError(
                f"strategy.mode: {size} re-packed members do not divide over the "
                f"{self.devices} devices of this {jax.process_count()}-process run; use "
                "strategy.mode=masked there, or population sizes whose rungs divide"
            )
        other = type(self)(
            *self._args,
            devices=devices,
            data_devices=self.data_devices,
            device_offset=self.device_offset,
            searched=self._searched,
            fixed=self.fixed,
        )
        other.trace_counts = self.trace_counts  # one count for the whole run
        other.full_devices = full  # a population that grows again gets its devices back
        return other

    def keep_members(self, pop: PopulationState, keep: Any) -> PopulationState:
        """The population of slots ``keep`` (in that order; a slot listed again is a copy, as
        ``PopulationUpdate.grow`` adds), placed on its devices."""
        # gather inside jit: an eager index of an array spread over processes is not allowed
        return self.for_size(len(keep)).place(_gather(pop, np.asarray(keep, np.int32)))

    def copy_members(self, pop: PopulationState, parents: Any) -> PopulationState:
        """Slot ``i`` receives the whole member ``parents[i]``: parameters, optimizer state
        (moments and hyperparameters), task hyperparameters, step, flags. One gather in jit."""
        return self._copy(pop, np.asarray(parents, np.int32))
