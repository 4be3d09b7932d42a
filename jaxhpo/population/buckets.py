"""Shape buckets: structural hyperparameters as separate compiled programs.

Structural hyperparameters -- ``depth`` (layers), ``heads``, ``ff_width`` (d_ff), ``d_model`` and
``seq_len`` -- change the shapes of a member's parameters or data, so they cannot be arrays in one
program's state. Two ways to search them:

* **masked** (the default, :class:`jaxhpo.population.Population`): one super-model of the largest
  shape; each member masks layers, heads and hidden units. One program, every strategy unchanged
  (PBT may explore structure), but every member pays for the largest shape; ``d_model`` and
  ``seq_len`` cannot be masked.
* **buckets** (this module, ``population.structure=buckets``): members that share a structure share
  one :class:`~jaxhpo.population.Population` (one compiled program per bucket and bucket size);
  the buckets of one study are dispatched back to back in each segment (JAX's dispatch is
  asynchronous, so the host does not wait between them): one after another over all devices
  (``population.bucket_placement=shared``) or side by side, each bucket on a device of its own
  (``split``). The strategy sees ONE population:
  slot ``i`` of the study is always the same member, whichever bucket holds it.

What strategies can do with bucketed structure:

* a member's structure is fixed once it has trained: setting a structural value of a member with
  ``step > 0`` is an error (its weights have no meaning in another shape). A member that has not
  trained (a fresh or re-initialised one) moves to the bucket of its new structure; its state is a
  pure function of the run's key, its id and its hyperparameters, so moving it changes nothing.
  Generation-based searchers (evo, bo, rl, optuna, random generations) re-initialise members
  each generation, so they resample structure at generation boundaries;
* copying a member into a slot of another bucket is an error. PBT receives the buckets as
  ``Observation.groups`` and exploits within a bucket; it explores the other dimensions, never the
  structural ones (``Observation.frozen``);
* successive halving stops and re-packs members across buckets freely;
* strategies that train their own segments through one program (hypergradients, PES) and the
  compiled run loop (``train.compiled``) refuse buckets with a one-line error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo import parallel
from jaxhpo.population.bucket_state import BucketedState, Key
from jaxhpo.population.members import PopulationState, _gather
from jaxhpo.population.trainer import Population
from jaxhpo.tasks.base import STRUCTURE_HPARAMS, Task

#: Structural hyperparameters a bucket can fix: the masked ones and the unmaskable ones.
BUCKET_HPARAMS: tuple[str, ...] = (*STRUCTURE_HPARAMS, "d_model", "seq_len")

PLACEMENTS = ("shared", "split")


class BucketedPopulation:
    """The :class:`~jaxhpo.population.Population` interface over shape buckets.

    Args:
      make_task: builds the task of one structure (``{name: int}`` for ``bucket_names``); called
        once per distinct structure (cached).
      base_task: the task of the configured structure (metric names, defaults).
      bucket_names: the structural hyperparameters the study searches (a subset of
        :data:`BUCKET_HPARAMS`).
      optimizer, schedule, mode, chunk_size, data_devices: as for ``Population``.
      devices: the most devices one bucket's members are sharded over (each bucket uses the most
        devices up to this that divide its size).
      placement: ``shared``: every bucket spreads over the devices (above) and the buckets run
        one after another; ``split``: each bucket runs on ONE device of its own (round robin in
        the order the structures first appear), so buckets on different devices run at the same
        time (the host dispatches them back to back without waiting).
    """

    bucketed = True

    def __init__(
        self,
        make_task: Callable[[Mapping[str, int]], Task],
        base_task: Task,
        bucket_names: Sequence[str],
        optimizer: str = "adamw",
        schedule: str = "warmup_cosine",
        mode: str = "auto",
        chunk_size: int = 4,
        devices: int = 1,
        data_devices: int = 1,
        placement: str = "shared",
    ):
        if jax.process_count() > 1:
            raise ValueError(
                "population.structure: shape buckets run in one process (a bucket smaller than "
                "the processes' devices would leave processes without members); use "
                "population.structure=masked in a multi-process run"
            )
        if placement not in PLACEMENTS:
            raise ValueError(
                f"population.bucket_placement: unknown '{placement}' ({' | '.join(PLACEMENTS)})"
            )
        unknown = sorted(set(bucket_names) - set(BUCKET_HPARAMS))
        if unknown or not bucket_names:
            raise ValueError(
                f"population.structure: buckets need structural dimensions "
                f"({', '.join(BUCKET_HPARAMS)}); got {list(bucket_names)}"
            )
        self.task = base_task
        self._make_task = make_task
        self.bucket_names = tuple(n for n in BUCKET_HPARAMS if n in bucket_names)
        self._args = (optimizer, schedule, mode, chunk_size)
        # generic steps: a bucket's strategy may write any task hyperparameter (no search space)
        self.base = Population(
            base_task, optimizer, schedule, mode, chunk_size, 1, data_devices, specialise=False
        )
        self.devices, self.data_devices = devices, data_devices
        self.placement = placement
        self._seen: dict[Key, int] = {}  # structure -> order of first appearance (split)
        self.mode, self.chunk_size = self.base.mode, self.base.chunk_size
        self.optimizer, self.schedule = optimizer, schedule
        self.opt_names = self.base.opt_names
        extra = tuple(n for n in self.bucket_names if n not in self.base.task_names)
        self.task_names = self.base.task_names + extra
        self.hparam_names = self.opt_names + self.task_names + self.base.member_fields
        self.folds, self.max_batch = self.base.folds, self.base.max_batch
        self.frozen = self.bucket_names
        self.trace_counts = self.base.trace_counts
        self._tasks: dict[Key, Task] = {}
        self._pops: dict[tuple[Key, int], Population] = {}
        self._data: dict[tuple[Key, int], tuple[Any, Any, Any]] = {}
        self._root_key: jax.Array | None = None
        self.base_key = self.key_of({n: self._default(n) for n in self.bucket_names})

    # -- structures ------------------------------------------------------------------------
    def _default(self, name: str) -> int:
        cfg = self.task.model_config
        return {
            "depth": cfg.num_layers,
            "heads": cfg.num_heads,
            "ff_width": cfg.d_ff,
            "d_model": cfg.d_model,
            "seq_len": getattr(self.task, "seq_len", cfg.max_len),
        }[name]

    def key_of(self, values: Mapping[str, Any]) -> Key:
        return tuple(int(round(float(values[n]))) for n in self.bucket_names)

    def task_for(self, key: Key) -> Task:
        if key not in self._tasks:
            self._tasks[key] = self._make_task(dict(zip(self.bucket_names, key, strict=True)))
        return self._tasks[key]

    def pop_for(self, key: Key, size: int) -> Population:
        """The population program of one bucket of ``size`` members."""
        if self.placement == "split":
            devices = 1
            groups = max(1, len(jax.devices()) // self.data_devices)
            offset = self._seen.setdefault(key, len(self._seen)) % groups * self.data_devices
        else:
            devices = max(d for d in range(1, min(self.devices, size) + 1) if size % d == 0)
            offset = 0
        if (key, devices, offset) not in self._pops:
            p = Population(
                self.task_for(key),
                *self._args,
                devices=devices,
                data_devices=self.data_devices,
                device_offset=offset,
                specialise=False,
            )
            p.trace_counts = self.trace_counts  # one count for the whole study
            self._pops[(key, devices, offset)] = p
        return self._pops[(key, devices, offset)]

    def _bucket_pops(self, pop: BucketedState) -> list[Population]:
        return [self.pop_for(k, len(s)) for k, s in zip(pop.keys, pop.slots, strict=True)]

    def _data_for(self, p: Population, key: Key) -> tuple[Any, Any, Any]:
        where = (key, p.devices, p.device_offset)
        if where not in self._data:
            self._data[where] = p.run_data()
        return self._data[where]

    def run_data(self) -> tuple[str, str, str]:
        """Names of the splits: each bucket trains and evaluates on its own task's data (a
        bucket's ``seq_len`` changes the data's shapes)."""
        return ("train", "val", "test")

    @staticmethod
    def _split(data: Any) -> int:
        names = {"train": 0, "val": 1, "test": 2}
        if data not in names:
            raise ValueError(
                "population.structure=buckets: pass the split names of run_data() "
                "('train', 'val', 'test'), not data arrays"
            )
        return names[data]

    # -- construction ----------------------------------------------------------------------
    def full_hparams(self, hparams: Mapping[str, Any], size: int) -> dict[str, np.ndarray]:
        self._check_names(hparams)
        own = self.base.task_names
        extra = {n: float(self._default(n)) for n in self.task_names if n not in own}
        base = self.base.full_hparams(
            {k: v for k, v in hparams.items() if k in self.base.hparam_names}, size
        )
        for n, d in extra.items():
            base[n] = np.broadcast_to(np.asarray(hparams.get(n, d), np.float32), (size,)).copy()
        return base

    def _check_names(self, names) -> None:
        unknown = sorted(set(names) - set(self.hparam_names))
        if unknown:
            raise ValueError(
                f"hparams: unknown name(s) {unknown} (known: {', '.join(self.hparam_names)})"
            )

    def _layout(self, full: Mapping[str, np.ndarray]) -> dict[Key, list[int]]:
        groups: dict[Key, list[int]] = {}
        size = len(next(iter(full.values())))
        for i in range(size):
            groups.setdefault(self.key_of({n: full[n][i] for n in self.bucket_names}), []).append(i)
        return dict(sorted(groups.items()))

    def _bucket_hparams(self, p: Population, full, slots) -> dict[str, np.ndarray]:
        idx = np.asarray(slots)
        return {k: np.asarray(full[k])[idx] for k in p.hparam_names}

    def init(self, key: jax.Array, member_ids: Any, hparams: Mapping[str, Any]) -> BucketedState:
        ids = np.asarray(member_ids, np.int32)
        full = self.full_hparams(hparams, len(ids))
        self._root_key = key
        keys, slots, states = [], [], []
        for k, s in self._layout(full).items():
            p = self.pop_for(k, len(s))
            states.append(p.init(key, ids[s], self._bucket_hparams(p, full, s)))
            keys.append(k)
            slots.append(tuple(s))
        return BucketedState(tuple(states), tuple(keys), tuple(slots))

    def place(self, pop: BucketedState) -> BucketedState:
        parts = [p.place(b) for p, b in zip(self._bucket_pops(pop), pop.buckets, strict=True)]
        return pop.replace(buckets=tuple(parts))

    def replicate(self, tree: Any) -> Any:
        return tree

    # -- training and evaluation -----------------------------------------------------------
    def train_segment(self, pop: BucketedState, train_data: Any, num_steps: int, valid_steps=None):
        """Each bucket's segment (dispatched back to back); losses [P, K] in slot order."""
        self._split(train_data)
        new, losses = [], []
        for p, k, b in zip(self._bucket_pops(pop), pop.keys, pop.buckets, strict=True):
            b, loss = p.train_segment(b, self._data_for(p, k)[0], num_steps, valid_steps)
            new.append(b)
            losses.append(loss)
        return pop.replace(buckets=tuple(new)), pop.to_study(parallel.to_host(losses))

    def evaluate(self, pop: BucketedState, data: Any, only_active=False, by_fold=False):
        split = self._split(data)
        parts = [
            p.evaluate(b, self._data_for(p, k)[split], only_active=only_active, by_fold=by_fold)
            for p, k, b in zip(self._bucket_pops(pop), pop.keys, pop.buckets, strict=True)
        ]
        parts = parallel.to_host(parts)
        return {m: pop.to_study([d[m] for d in parts]) for m in self.task.metric_names}

    # -- hyperparameters -------------------------------------------------------------------
    def get_hparams(self, pop: BucketedState) -> dict[str, np.ndarray]:
        parts = parallel.to_host([p.get_hparams(b) for p, b in self._zip(pop)])
        out = {}
        for name in self.hparam_names:
            cols = []
            for k, s, d in zip(pop.keys, pop.slots, parts, strict=True):
                if name in d:
                    cols.append(np.asarray(d[name], np.float32))
                else:  # an unmasked structural value: the bucket's
                    v = k[self.bucket_names.index(name)]
                    cols.append(np.full(len(s), v, np.float32))
            out[name] = pop.to_study(cols)
        return out

    def _zip(self, pop):
        return list(zip(self._bucket_pops(pop), pop.buckets, strict=True))

    def set_hparams(self, pop: BucketedState, values: Mapping[str, Any]) -> BucketedState:
        """Writes new values; a member whose structure changes moves to that bucket, which is
        allowed only before it has trained (``step == 0``)."""
        self._check_names(values)
        P = pop.size
        current = self.get_hparams(pop)
        full = {
            k: np.broadcast_to(np.asarray(values.get(k, v), np.float32), (P,)).copy()
            for k, v in current.items()
        }
        old_key = pop.bucket_of()
        new_keys = [self.key_of({n: full[n][i] for n in self.bucket_names}) for i in range(P)]
        moved = np.array([new_keys[i] != pop.keys[old_key[i]] for i in range(P)], bool)
        steps = pop.step
        if np.any(moved & (steps > 0)):
            i = int(np.flatnonzero(moved & (steps > 0))[0])
            names = [
                n
                for n in self.bucket_names
                if float(full[n][i]) != pop.keys[old_key[i]][self.bucket_names.index(n)]
            ]
            raise ValueError(
                f"population.structure=buckets: slot {i} has trained {int(steps[i])} steps; its "
                f"structure ({', '.join(names)}) cannot change (its weights have no meaning in "
                "another shape). Change structure only in fresh members, or use "
                "population.structure=masked"
            )
        # the members that stay: their new values, bucket by bucket
        parts = []
        for p, b, s in zip(self._bucket_pops(pop), pop.buckets, pop.slots, strict=True):
            vals = {k: full[k][list(s)] for k in values if k in p.hparam_names}
            parts.append(p.set_hparams(b, vals) if vals else b)
        pop = pop.replace(buckets=tuple(parts))
        if not moved.any():
            return pop
        return self._rebucket(pop, full, new_keys, moved)

    def _rebucket(self, pop: BucketedState, full, new_keys, moved) -> BucketedState:
        """A new layout where the ``moved`` (untrained) members are built afresh in the bucket
        of their new structure, exactly as ``init`` would build them."""
        ids = pop.member_id
        old_bucket = pop.bucket_of()
        local = pop.local_index()
        groups: dict[Key, list[int]] = {}
        for i, k in enumerate(new_keys):
            groups.setdefault(k, []).append(i)
        keys, slots, states = [], [], []
        for k, s in sorted(groups.items()):
            stay = [i for i in s if not moved[i]]
            fresh = [i for i in s if moved[i]]
            chunks = []
            if stay:
                b = int(old_bucket[stay[0]])
                chunks.append(_gather(pop.buckets[b], np.asarray(local[stay], np.int32)))
            if fresh:
                p = self.pop_for(k, len(fresh))
                chunks.append(
                    p.init(self._root_key, ids[fresh], self._bucket_hparams(p, full, fresh))
                )
            state = chunks[0] if len(chunks) == 1 else _concat(parallel.to_host(chunks))
            order = stay + fresh
            p = self.pop_for(k, len(order))
            keys.append(k)
            slots.append(tuple(order))
            states.append(p.place(state))
        return BucketedState(tuple(states), tuple(keys), tuple(slots))

    # -- moving members --------------------------------------------------------------------
    def groups(self, pop: BucketedState) -> np.ndarray:
        """The bucket of each slot: members may copy each other only within one."""
        return pop.bucket_of()

    def copy_members(self, pop: BucketedState, parents: Any) -> BucketedState:
        parents = np.asarray(parents, np.int64)
        bucket = pop.bucket_of()
        across = np.flatnonzero(bucket[parents] != bucket)
        if across.size:
            i = int(across[0])
            raise ValueError(
                f"population.structure=buckets: slot {i} cannot copy slot {int(parents[i])}, a "
                "member of another shape bucket (exploit within a bucket: Observation.groups)"
            )
        local = pop.local_index()
        parts = [
            p.copy_members(b, local[parents[list(s)]]) if np.any(parents[list(s)] != s) else b
            for (p, b), s in zip(self._zip(pop), pop.slots, strict=True)
        ]
        return pop.replace(buckets=tuple(parts))

    def reinit_members(self, pop: BucketedState, root_key, mask: Any, member_ids: Any):
        mask, ids = np.asarray(mask, bool), np.asarray(member_ids)
        parts = [
            p.reinit_members(b, root_key, mask[list(s)], ids[list(s)]) if mask[list(s)].any() else b
            for (p, b), s in zip(self._zip(pop), pop.slots, strict=True)
        ]
        return pop.replace(buckets=tuple(parts))

    def set_active(self, pop: BucketedState, active: Any) -> BucketedState:
        active = np.asarray(active, bool)
        parts = [
            p.set_active(b, active[list(s)])
            for (p, b), s in zip(self._zip(pop), pop.slots, strict=True)
        ]
        return pop.replace(buckets=tuple(parts))

    def keep_members(self, pop: BucketedState, keep: Any) -> BucketedState:
        """Slot ``j`` of the new population is slot ``keep[j]``; emptied buckets go."""
        keep = np.asarray(keep, np.int64)
        if len(set(keep.tolist())) != keep.size:  # PopulationUpdate.grow: one shape only
            raise ValueError("strategy update: grow is not possible with shape buckets")
        new_pos = {int(s): j for j, s in enumerate(keep)}
        keys, slots, states = [], [], []
        for k, s, b in zip(pop.keys, pop.slots, pop.buckets, strict=True):
            mine = sorted((new_pos[x], j) for j, x in enumerate(s) if x in new_pos)
            if not mine:
                continue
            p = self.pop_for(k, len(mine))
            states.append(p.place(_gather(b, np.asarray([j for _, j in mine], np.int32))))
            keys.append(k)
            slots.append(tuple(pos for pos, _ in mine))
        return BucketedState(tuple(states), tuple(keys), tuple(slots))

    def for_size(self, size: int) -> BucketedPopulation:
        del size
        return self

    # -- checkpoints -----------------------------------------------------------------------
    def layout(self, pop: BucketedState) -> dict[str, Any]:
        return {
            "size": pop.size,
            "buckets": [[list(k), list(s)] for k, s in zip(pop.keys, pop.slots, strict=True)],
        }

    def from_layout(self, layout: Mapping[str, Any]) -> BucketedPopulation:
        del layout
        return self

    def abstract(self, layout: Mapping[str, Any], root_key: jax.Array) -> BucketedState:
        """The shapes of a population with this layout (to restore a checkpoint into)."""
        self._root_key = root_key
        keys, slots, states = [], [], []
        for k, s in layout["buckets"]:
            k, s = tuple(int(x) for x in k), tuple(int(x) for x in s)
            p = self.pop_for(k, len(s))
            ids = np.arange(len(s))
            hp = p.full_hparams({}, len(s))
            states.append(jax.eval_shape(lambda p=p, ids=ids, hp=hp: p.init(root_key, ids, hp)))
            keys.append(k)
            slots.append(s)
        return BucketedState(tuple(states), tuple(keys), tuple(slots))

    def memory_estimate(self, size: int, train_data: Any, num_steps: int) -> dict[str, float]:
        del train_data
        return self.base.memory_estimate(size, self.task.train_data, num_steps)

    def ensemble_evaluate(self, pop, slots, data):
        raise ValueError(
            "train.ensemble_top_k: not available with population.structure=buckets (the "
            "members' programs differ); use population.structure=masked"
        )


def _concat(states: Sequence[PopulationState]) -> PopulationState:
    return jax.tree.map(lambda *xs: jnp.asarray(np.concatenate(xs)), *states)
