"""Building a population's members: every hyperparameter as a per-member array with its default,
each member's parameters and optimizer state from its own key, and the hyperparameters derived
from a member's others (its step limit under ``epochs``, the schedule's horizon). A mixin of
:class:`jaxhpo.population.Population`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo import optim
from jaxhpo.models import TransformerConfig
from jaxhpo.population.members import PopulationState, over_members
from jaxhpo.population.specialise import check_fixed_values

#: Stream tag of member keys: member i's key is fold_in(fold_in(root, MEMBER_STREAM), id_i).
MEMBER_STREAM = 0x3E3B


class MemberInit:
    """Construction of a :class:`~jaxhpo.population.Population`'s members."""

    @staticmethod
    def task_defaults(task: Any) -> dict[str, float]:
        """Every task hyperparameter of a population of ``task`` with its default: the task's
        own, ``batch_size`` (the task's batch) and a Transformer's structure (the full model)."""
        out = {k: float(v) for k, v in task.hparam_defaults.items()}
        if getattr(task, "batch_size", None):
            out["batch_size"] = float(task.batch_size)
        mc = getattr(task, "model_config", None)
        if isinstance(mc, TransformerConfig):
            out.update(depth=mc.num_layers, heads=mc.num_heads, ff_width=mc.d_ff)
        return {k: float(v) for k, v in out.items()}

    def full_hparams(self, hparams: Mapping[str, Any], size: int) -> dict[str, np.ndarray]:
        """All hyperparameters as float32 [size] arrays; missing ones get their defaults."""
        self._check_names(hparams)
        defaults = {**self.opt_defaults, **self.task.hparam_defaults, "fold": 0.0}
        defaults["batch_size"] = float(self.max_batch or 0)
        defaults.update({k: float(v) for k, v in self.structure.items()})
        out = {}
        for name in self.hparam_names:
            v = np.asarray(hparams.get(name, defaults[name]), np.float32)
            out[name] = np.broadcast_to(v, (size,)).copy()
        return out

    def init(self, key: jax.Array, member_ids: Any, hparams: Mapping[str, Any]) -> PopulationState:
        """Builds ``P = len(member_ids)`` independently initialised members.

        Args:
          key: the run's root key; member ``i``'s key is derived from it and ``member_ids[i]``.
          member_ids: int [P] stable ids.
          hparams: name -> scalar or [P] values (missing names take defaults).
        """
        ids = jnp.asarray(np.asarray(member_ids, np.int32))
        check_fixed_values(self.fixed, hparams)
        hp = {k: jnp.asarray(v) for k, v in self.full_hparams(hparams, ids.shape[0]).items()}
        if ids.shape[0] % self.devices:
            raise ValueError(
                f"population.size: {ids.shape[0]} members do not divide over {self.devices} devices"
            )
        return self._init(key, ids, hp)

    def _init_member(self, root_key, member_id, hp):
        member_key = jax.random.fold_in(jax.random.fold_in(root_key, MEMBER_STREAM), member_id)
        init_key, train_key = jax.random.split(member_key)
        # the task's hyperparameters reach the model: init_scheme / init_scale per member
        module = self.task.init(init_key, {k: hp[k] for k in self.task_names})
        params, model_state = self.model.split(module)
        opt_hp = self._derived({k: hp[k] for k in self.opt_names}, hp)
        opt_state = optim.init_opt_state(self.tx, params, opt_hp)
        return PopulationState(
            params=params,
            model_state=model_state,
            opt_state=opt_state,
            hparams={k: hp[k] for k in self.task_names},
            member_id=member_id,
            fold=hp["fold"].astype(jnp.int32) if self.member_fields else jnp.zeros((), jnp.int32),
            key=jax.random.key_data(train_key),
            step=jnp.zeros((), jnp.int32),
            active=jnp.ones((), bool),
            diverged=jnp.zeros((), bool),
        )

    def _init_impl(self, root_key, ids, hp):
        self.trace_counts["init"] += 1
        f = over_members(lambda a: self._init_member(root_key, *a), self.mode, self.chunk_size)
        return f((ids, hp))

    def member_batch_size(self, hp: Mapping[str, jax.Array]) -> jax.Array:
        b = hp["batch_size"] if self.max_batch and "batch_size" in hp else self.task.batch_size
        return jnp.asarray(b, jnp.float32)

    def member_limit(self, hp: Mapping[str, jax.Array]) -> jax.Array:
        """The most steps a member takes: ``ceil(epochs * epoch_size / batch_size)`` under
        epochs (int32; a large number without)."""
        if self.epoch_size is None:
            return jnp.asarray(np.iinfo(np.int32).max, jnp.int32)
        steps = jnp.ceil(hp["epochs"] * self.epoch_size / self.member_batch_size(hp))
        return jnp.maximum(steps, 1.0).astype(jnp.int32)

    def _derived(self, opt_hp: Mapping[str, jax.Array], hp: Mapping[str, jax.Array]) -> dict:
        """Optimizer hyperparameters with the schedule's horizon derived from the member's
        epochs (``decay_steps`` = its step limit, ``warmup_steps`` = ``warmup_frac`` of it)."""
        out = dict(opt_hp)
        if self.epoch_size is None:
            return out
        limit = self.member_limit(hp).astype(jnp.float32)
        if "decay_steps" in out:
            out["decay_steps"] = limit
        if "warmup_steps" in out:
            out["warmup_steps"] = hp["warmup_frac"] * limit
        return out
