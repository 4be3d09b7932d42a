"""A population of Transformers trained as one program.

One member is written plainly (:meth:`Population._member_step`): a pure function over a member's
parameters, optimizer state (hyperparameters inside, via ``optax.inject_hyperparams``), task
hyperparameters, key and step. The population is a transform around it:

* ``lax.scan`` over the ``K`` steps of a segment,
* the member axis executed as ``vmap``, ``lax.map`` or ``lax.map(..., batch_size=c)`` ("chunked"),
  a setting (:data:`MEMBER_MODES`), because on XLA:CPU ``vmap`` over members is slower than running
  them one after another inside one program, while on accelerators ``vmap`` fills the device,
* ``jax.jit`` around both, so one call trains every member for a whole segment.

Changing a hyperparameter value never recompiles: the values are float32 arrays in the state.
Randomness is addressed: member ``i``'s key is ``fold_in(root_key, member_id)``, its step key is
``fold_in(train_key, step)`` and the data batch at a step depends only on the step, so a member's
trajectory does not depend on the population around it or on the execution mode.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from jaxhpo import parallel
from jaxhpo.models import TransformerConfig
from jaxhpo.optim import resolve as resolve_optimizer
from jaxhpo.population.batches import data_combine, make_member_batch
from jaxhpo.population.editing import MemberEdits
from jaxhpo.population.evaluate import PopulationEvaluation
from jaxhpo.population.initialise import MEMBER_STREAM, MemberInit  # noqa: F401 - re-exported
from jaxhpo.population.member_mode import choose_mode, member_step_flops
from jaxhpo.population.members import (  # noqa: F401 - re-exported: the population's public names
    MEMBER_MODES,
    PopulationState,
    _gather,
    gather,
    over_members,
    resolve_mode,
    scatter,
)
from jaxhpo.population.specialise import resolve_fixed
from jaxhpo.population.step import MemberModel, member_step, no_step
from jaxhpo.tasks.base import Task


def resolve_devices(devices: int, size: int, available: int | None = None) -> int:
    """How many devices the member axis is sharded over.

    ``0`` (auto): the largest device count that divides the population size; an explicit count
    must divide it and not exceed the devices there are.
    """
    available = len(jax.devices()) if available is None else available
    if devices < 0:
        raise ValueError(f"population.devices: must be >= 0 (0 = auto), got {devices}")
    if devices == 0:
        return max(d for d in range(1, min(available, size) + 1) if size % d == 0)
    if devices > available:
        raise ValueError(
            f"population.devices: {devices} requested but only {available} "
            f"{jax.default_backend()} device(s) are visible"
        )
    if size % devices:
        raise ValueError(
            f"population.devices: {size} members do not divide over {devices} devices "
            f"(use a population size that is a multiple of {devices}, or population.devices=0)"
        )
    return devices


class Population(MemberInit, MemberEdits, PopulationEvaluation):
    """Static structure of a population: task, optimizer, member-axis mode.

    Args:
      task: the task (model factory, data, loss).
      optimizer: optimizer name (see :data:`jaxhpo.optim.OPTIMIZERS`), or an optax factory
        (``optax.adamw``, a function returning a ``GradientTransformation``) or its
        ``module:name`` reference (:mod:`jaxhpo.optim.factory`).
      schedule: learning-rate schedule name (see :data:`jaxhpo.optim.SCHEDULES`).
      mode: member-axis execution on each device: ``auto``, ``vmap``, ``map`` or ``chunked``.
      chunk_size: members per vmapped chunk in ``chunked`` mode.
      searched: the hyperparameters that may change, per member or over time (a run passes its
        search space's names). Every task hyperparameter it does not name (dropout, label
        smoothing, init scale, a Transformer's structure, the batch size, ...) is held at its
        default as a constant of the compiled step, so what it switches off costs nothing: a
        dropout of 0 draws no random bits. Writing another value of one is a one-line
        ``ValueError``. Optimizer hyperparameters (``lr``, ``weight_decay``, the schedule's)
        are per-member arrays whether named or not; an optax factory's float arguments become
        per-member hyperparameters when named here.
      fixed: exactly the task hyperparameters to hold, name -> value, instead of those
        ``searched`` leaves out (the run path passes its own: ``population.specialise``).
      specialise: False builds the generic step: every task hyperparameter a per-member array,
        any value may be written (slower: e.g. dropout bits are drawn even at rate 0). Ignored
        when ``fixed`` is given.
      devices: shard the member axis over this many devices (1: no sharding). Each device runs
        its own members with ``mode`` inside ``jax.shard_map``; the population size must be a
        multiple of it (see :func:`resolve_devices`). On a CPU host, virtual devices
        (``--xla_force_host_platform_device_count``) let members use several cores at once.
      data_devices: data parallelism inside each member: the mesh is ``devices x data_devices``
        with axes ``("pop", "data")``; a member's parameters are replicated over its
        ``data_devices`` devices, each computes the gradient of its slice of the batch and the
        slices are combined with ``psum`` into the gradient of the whole batch's loss (weighted
        by each slice's target weights, so it is exact for any task). The batch size must be a
        multiple of it. Evaluation runs replicated over the data axis.
    """

    def __init__(
        self,
        task: Task,
        optimizer: str = "adamw",
        schedule: str = "warmup_cosine",
        mode: str = "auto",
        chunk_size: int = 4,
        devices: int = 1,
        data_devices: int = 1,
        device_offset: int = 0,
        searched: tuple[str, ...] = (),
        fixed: Mapping[str, float] | None = None,
        specialise: bool = True,
    ):
        self.task = task
        self._args = (task, optimizer, schedule, mode, chunk_size)
        self._searched = tuple(searched)
        self.optimizer, self.schedule = optimizer, schedule
        self.mode = resolve_mode(mode)
        if chunk_size < 1:
            raise ValueError(f"population.chunk_size: must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        #: The optimizer (built-in or an optax factory): names, defaults, template, chain.
        self.opt = resolve_optimizer(optimizer, schedule, self._searched)
        self.tx = self.opt.template()
        self.opt_names, self.opt_defaults = self.opt.names, dict(self.opt.defaults)
        self._read_task(task)
        self.hparam_names = self.opt_names + self.task_names + self.member_fields
        #: Task hyperparameters held at one value (not searched): the step reads them as Python
        #: constants, so what they switch off costs nothing (a dropout of 0 draws no random
        #: bits, a full-size structure or batch masks nothing). Writing another value is an
        #: error (:meth:`init`, :meth:`set_hparams`); :mod:`jaxhpo.population.specialise`.
        self.specialise = specialise
        self.fixed = resolve_fixed(
            {k: v for k, v in self.task_defaults(task).items() if k in self.task_names},
            self._searched,
            fixed,
            specialise,
            self.hparam_names,
        )
        #: How the task's module splits into parameters, carried state and RNG streams.
        self.model = MemberModel(task)
        self.graphdef = self.model.graphdef
        #: How many times each program was traced (a retrace means a recompile).
        self.trace_counts: dict[str, int] = {"init": 0, "segment": 0, "evaluate": 0}
        #: the devices it was built with (a re-packed population that grows again gets them back)
        self.full_devices = devices
        self._build_programs(devices, data_devices, device_offset)
        #: How the member mode was chosen (``auto``: :mod:`jaxhpo.population.member_mode`);
        #: written to run.json.
        self.mode_reason = f"population.mode={self.mode}"
        if mode == "auto":
            flops = member_step_flops(self, getattr(task, "train_data", None))
            c = choose_mode(jax.default_backend(), flops, chunk_size)
            self.mode, self.chunk_size, self.mode_reason = c.mode, c.chunk_size, c.reason

    def _read_task(self, task: Task) -> None:
        """What the population reads of its task: folds, per-member batch sizes, epochs, the
        masked super-model's structure and the task's hyperparameter names."""
        #: k of k-fold cross-validation (``task.set_folds``): each member carries its fold
        #: (``PopulationState.fold``, the column ``fold``), trains without it and is validated
        #: on it.
        self.folds = int(getattr(task, "folds", 1))
        #: Integer member fields that the interface shows as hyperparameter columns.
        self.member_fields = ("fold",) if self.folds > 1 else ()
        #: Per-member batch size ``batch_size`` (<= the task's batch): a member trains on the
        #: first ``batch_size`` rows of each batch, the others weigh zero (they are computed).
        self.max_batch = getattr(task, "batch_size", None)
        #: Epochs per member (a task with a fixed training set, ``epoch_size`` examples, and the
        #: hyperparameters ``epochs`` / ``warmup_frac``): a member takes
        #: ``ceil(epochs * epoch_size / batch_size)`` steps, then stops; its schedule's
        #: ``decay_steps`` is that limit and ``warmup_steps`` is ``warmup_frac`` of it.
        self.epoch_size = (
            int(task.epoch_size)
            if getattr(task, "epoch_size", None) and "epochs" in task.hparam_names
            else None
        )
        #: Masked super-model: ``depth`` / ``heads`` / ``ff_width`` per member (the model config
        #: gives the largest); defaults are the full model, which computes exactly as unmasked.
        mc = getattr(task, "model_config", None)
        self.structure = (
            {"depth": mc.num_layers, "heads": mc.num_heads, "ff_width": mc.d_ff}
            if isinstance(mc, TransformerConfig)
            else {}
        )
        self.task_names = (
            tuple(task.hparam_names)
            + (("batch_size",) if self.max_batch else ())
            + tuple(self.structure)
        )

    def _build_programs(self, devices: int, data_devices: int, device_offset: int) -> None:
        """The mesh of the member axis and the jitted programs on it."""
        parallel.check_member_mesh(devices, data_devices, device_offset, self.task.batch_size)
        self.devices = devices
        self.data_devices = data_devices
        #: The population's devices start here (shape buckets side by side: one bucket's
        #: members on their own devices while other buckets run on others).
        self.device_offset = device_offset
        self.mesh = parallel.member_mesh(devices, data_devices, device_offset)
        self.sharding = NamedSharding(self.mesh, PartitionSpec("pop"))
        M, R = PartitionSpec("pop"), PartitionSpec()  # member-sharded, replicated
        self._init = jax.jit(self._sharded(self._init_impl, (R, M, M), M))
        self._segment = jax.jit(
            self._sharded(self._segment_impl, (M, R, R), (M, M)), static_argnames="num_steps"
        )
        self._evaluate = jax.jit(
            self._sharded(self._evaluate_impl, (M, R, M), M), static_argnames="by_fold"
        )
        self._member_batch = make_member_batch(self)
        place_out = {"out_shardings": self.sharding} if self._meshed else {}
        self._where = jax.jit(self._where_impl, **place_out)
        self._copy = jax.jit(self._copy_impl, **place_out)

    def _sharded(self, fn: Callable, in_specs, out_specs) -> Callable:
        """``fn`` over each device's block of members (``jax.shard_map``), or ``fn`` itself."""
        if not self._meshed:
            return fn

        @functools.wraps(fn)
        def wrapped(*args, **static):
            # check_vma=False: vmapped PRNG calls inside shard_map trip the varying-axis checker
            # in this JAX version (pvary on an already varying key); members never communicate.
            f = jax.shard_map(
                functools.partial(fn, **static),
                mesh=self.mesh,
                in_specs=in_specs,
                out_specs=out_specs,
                check_vma=False,
            )
            return f(*args)

        return wrapped

    @property
    def _meshed(self) -> bool:
        """More than one device: programs run under ``shard_map`` over the mesh."""
        return self.devices * self.data_devices > 1 or self.device_offset > 0

    def _check_names(self, names) -> None:
        unknown = sorted(set(names) - set(self.hparam_names))
        if unknown:
            raise ValueError(
                f"hparams: unknown name(s) {unknown} (known: {', '.join(self.hparam_names)})"
            )

    def replicate(self, tree: Any) -> Any:
        """Puts data every member reads (training data, evaluation splits) on every device
        once, so that no call copies it again."""
        if not self._meshed:
            return tree
        return parallel.put(tree, NamedSharding(self.mesh, PartitionSpec()))

    def place(self, pop: PopulationState) -> PopulationState:
        """Puts a population on its devices (member axis sharded); a no-op when it is there."""
        return parallel.put(pop, self.sharding) if self._meshed else pop

    #: Structural hyperparameters a strategy must not change in a trained member (none: the
    #: masked super-model lets PBT explore structure); see :mod:`jaxhpo.population.buckets`.
    frozen: tuple[str, ...] = ()
    bucketed = False

    def run_data(self) -> tuple[Any, Any, Any]:
        """The task's training data and validation / test splits, on the population's devices
        (what :meth:`train_segment` and :meth:`evaluate` take)."""
        val, test = self.replicate((self.task.splits.val, self.task.splits.test))
        return self.replicate(self.task.train_data), val, test

    def groups(self, pop: PopulationState) -> None:
        """Which members may copy each other (None: all of them)."""
        del pop
        return None

    def set_active(self, pop: PopulationState, active: Any) -> PopulationState:
        return self.place(pop.replace(active=np.asarray(active, bool)))

    def layout(self, pop: PopulationState) -> dict[str, Any]:
        """What a checkpoint records of the population's shape."""
        return {"size": pop.size}

    def from_layout(self, layout: Mapping[str, Any]) -> Population:
        return self.for_size(int(layout["size"]))

    def abstract(self, layout: Mapping[str, Any], root_key: jax.Array) -> PopulationState:
        """The shapes of a population with this layout (to restore a checkpoint into)."""
        ids = np.arange(int(layout["size"]))
        hp = self.full_hparams({}, len(ids))
        return jax.eval_shape(lambda: self.init(root_key, ids, hp))

    def step_hparams(self, hp: Mapping[str, Any]) -> dict[str, Any]:
        """A member's task hyperparameters as its step reads them: the :attr:`fixed` ones as
        Python floats (constants of the program), the others as the member's arrays."""
        return {**hp, **self.fixed} if self.fixed else dict(hp)

    # -- training --------------------------------------------------------------------------
    def member_batch(self, m: PopulationState, train_data) -> tuple[dict, jax.Array]:
        """ONE member's training batch and dropout key at its step: its fold's draws (k-fold),
        its first ``batch_size`` rows weighted, and this device's slice on the ``data`` axis
        (:func:`jaxhpo.population.batches.make_member_batch`)."""
        return self._member_batch(m, train_data)

    def differentiable_chain(self, hp: Mapping[str, jax.Array]) -> optax.GradientTransformation:
        """The optimizer chain with explicit (differentiable) hyperparameter values; its state is
        the ``inner_state`` of the population's optimizer state (hypergradients)."""
        return self.opt.chain(hp, differentiable=True)

    def _member_step(self, m: PopulationState, train_data) -> tuple[PopulationState, jax.Array]:
        """One optimizer step of ONE member: :func:`jaxhpo.population.step.member_step`."""
        return member_step(self, m, train_data)

    def combine_data(self, grads, reported, state, batch):
        """The gradient, reported loss and carried state of the whole batch from the data
        slices' (inside ``shard_map`` over ``data``): :func:`_data_combine`, with floating
        carried state (batch statistics) averaged over the slices."""
        grads, aux = data_combine(grads, {"loss": reported}, batch)
        state = jax.tree.map(
            lambda x: jax.lax.pmean(x, "data") if jnp.issubdtype(x.dtype, jnp.floating) else x,
            state,
        )
        return grads, aux["loss"], state

    def _segment_impl(self, pop: PopulationState, train_data, valid, num_steps: int):
        self.trace_counts["segment"] += 1

        def body(m, t):
            # `t < valid` is the same for every member (not batched): a real branch even under
            # vmap, so a short last segment costs no work and needs no second program.
            return jax.lax.cond(t < valid, lambda m: self._member_step(m, train_data), no_step, m)

        def member_segment(m):
            return jax.lax.scan(body, m, jnp.arange(num_steps, dtype=jnp.int32))

        pop, losses_PxK = over_members(member_segment, self.mode, self.chunk_size)(pop)
        return pop, losses_PxK

    def train_segment(
        self, pop: PopulationState, train_data: Any, num_steps: int, valid_steps: int | None = None
    ) -> tuple[PopulationState, jax.Array]:
        """Trains every member for ``num_steps`` steps in one jitted call.

        Args:
          pop: the population.
          train_data: ``task.train_data``.
          num_steps: the segment length K (static: one compiled program per K).
          valid_steps: run only the first ``valid_steps`` of the K steps (the rest are no-ops),
            so a shorter last segment reuses the same program. Defaults to ``num_steps``.

        Returns:
          The new state and the per-step unsmoothed training loss, float32 [P, num_steps]
          (NaN where a member did not step: stopped, diverged or past ``valid_steps``).
        """
        valid = num_steps if valid_steps is None else valid_steps
        return self._segment(pop, train_data, jnp.asarray(valid, jnp.int32), num_steps=num_steps)
