"""The strategy interface.

A strategy is a small ``init`` / ``update`` pair over a typed state, in the spirit of optax's
``GradientTransformation`` and evosax's ``init / ask / tell``:

* ``init(seed, space, size)`` returns the strategy state and the first population's
  hyperparameters (columns: name -> [P]).
* ``update(state, obs)`` reads what the population did in the last segment (:class:`Observation`)
  and returns a new state and a :class:`PopulationUpdate`: which members copy which (exploit), which
  are re-initialised as new members, their new hyperparameters, which keep training, and whether
  the study is done.

The run loop applies a :class:`PopulationUpdate` the same way for every strategy
(:func:`jaxhpo.run.update.apply_update`); it never branches on the strategy's type. Strategies
run on the host between segments (NumPy); a strategy that lives inside a compiled loop
(``train.compiled``) gets its state carried through ``lax.scan``.

**State.** Each strategy declares its state type (``State = PBTState``): a
:class:`StrategyState`, i.e. a ``flax.struct`` dataclass, updated with ``.replace(...)`` (as
evosax's ``State``; evosax moved there from dict state in v0.2). It was chosen over a
``NamedTuple`` (optax's choice) because a state must carry *structure* beside its arrays: the
search space it was made for is a static field (``struct.field(pytree_node=False)``: part of the
tree's definition, hashable, never traced, never written to a checkpoint), so ``update(state,
obs)`` needs nothing kept on the strategy object. A NamedTuple would make the space a leaf.
``init`` and ``update`` are pure: their results depend only on the strategy's settings (its
frozen :attr:`Strategy.Config` and constructor arguments), the state and the observation.

Checkpoints hold the state's arrays (:func:`jaxhpo.checkpoint.pack_tree`, through
``flax.serialization.to_state_dict``: a dict keyed by field name, the keys the untyped dict
states had, so older checkpoints restore); :meth:`Strategy.restore_state` turns the restored
dict back into the strategy's ``State``, taking the static fields from the fresh state the
resumed run's ``init`` made.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import jax
import numpy as np
from flax import struct

from jaxhpo.space import Space
from jaxhpo.strategies.decision import (  # noqa: F401  (re-exported: the interface)
    Observation,
    PopulationUpdate,
    lineage_events,
)


class StrategyState(struct.PyTreeNode):
    """Base of every strategy's typed state (a ``flax.struct`` dataclass; see the module
    docstring for why). Fields are arrays (or dicts of arrays); structure is a static field."""

    @classmethod
    def restore(cls, tree: Any, like: Any = None):
        """A state of this type from ``tree`` (what :func:`jaxhpo.checkpoint.unpack_tree` gives:
        a dict keyed by field name, or ``None`` for a state with no fields). Static fields come
        from ``like`` (a state of the same run, e.g. a fresh ``init``'s); fields missing from
        ``tree`` (an older checkpoint) take their declared default.

        Raises:
          ValueError: naming the checkpoint, for a field it lacks that has no default.
        """
        if isinstance(tree, cls):
            return tree
        if like is not None and not isinstance(like, cls):
            raise TypeError(f"checkpoint: restoring a {cls.__name__} from a {type(like).__name__}")
        tree = {} if tree is None else tree
        values = {}
        for f in dataclasses.fields(cls):
            if not f.metadata.get("pytree_node", True):
                if like is None:
                    raise ValueError(
                        f"checkpoint: restoring a {cls.__name__} needs the run's fresh state "
                        f"(its static field {f.name!r})"
                    )
                values[f.name] = getattr(like, f.name)
            elif f.name in tree:
                values[f.name] = tree[f.name]
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(
                    f"checkpoint: the strategy state has no {f.name!r} (a {cls.__name__} needs "
                    f"{', '.join(x.name for x in dataclasses.fields(cls))}); was it written by "
                    "another strategy or version?"
                )
        return cls(**values)


class EmptyState(StrategyState):
    """The state of a strategy that keeps none (grid, random and Sobol search, replay)."""


def static(**kwargs: Any) -> Any:
    """A static (non-pytree) state field: structure, not an array (the search space)."""
    return struct.field(pytree_node=False, **kwargs)


@dataclasses.dataclass(frozen=True)
class NoConfig:
    """The settings of a strategy that has none of its own (``strategy: {name: random}``)."""


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a strategy can do, declared by the class (never guessed from its methods).

    Attributes:
      compiled: its decision has a pure ``jax.numpy`` form (:meth:`Strategy.device_update`), so
        ``train.compiled`` can run the whole study as one program.
      own_segments: it trains the population's segments itself (:meth:`Strategy.train_segment`:
        hypergradients, PES), through one population program.
      decides_size: it picks the population size (``population.size`` may be null).
      no_buckets: why it cannot drive shape buckets (``None``: it can).
      objectives: it optimises several objectives (``strategy.objectives``) in its own
        multi-objective form (:mod:`jaxhpo.objectives`, :mod:`jaxhpo.pareto`).
    """

    compiled: bool = False
    own_segments: bool = False
    decides_size: bool = False
    no_buckets: str | None = None
    objectives: bool = False


class Strategy(abc.ABC):
    """Base class of every strategy (grid/random/Sobol here; PBT, halving, ES, BO elsewhere).

    A strategy's settings are one frozen dataclass, its :attr:`Config`, written once in the
    strategy's own file: each field's type, default, doc line and check (``__post_init__``,
    errors naming ``strategy.FIELD``). In a config file they sit in the ``strategy:`` section
    beside ``name`` and ``metric``. The object holds them as :attr:`config`::

        PBT(ready_steps=4, fraction=0.25)   # or PBT(PBT.Config(ready_steps=4, fraction=0.25))
    """

    name: str = "strategy"
    #: The strategy's settings (a frozen dataclass; :class:`NoConfig`: none).
    Config: ClassVar[type] = NoConfig
    #: The strategy's state (a :class:`StrategyState`; every built-in strategy declares one).
    #: ``None``: an untyped pytree (a user's strategy), restored as the checkpoint holds it.
    State: ClassVar[type[StrategyState] | None] = None
    #: What the strategy can do; read by the run's checks, never guessed.
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: The study's objectives when there are several (:meth:`for_study`; empty: one metric).
    objectives: tuple = ()

    def __init__(self, config: Any = None, /, **fields: Any):
        if config is None:
            config = self.Config()
        elif not isinstance(config, self.Config):
            raise TypeError(
                f"strategy: {type(self).__name__} takes a {type(self).__name__}.Config, got "
                f"{type(config).__name__}"
            )
        if fields:
            known = [f.name for f in dataclasses.fields(self.Config)]
            for key in fields:
                if key not in known:
                    raise TypeError(
                        f"strategy.{key}: not a setting of strategy '{self.name}' "
                        f"(its settings: {', '.join(known) or 'none'})"
                    )
            config = dataclasses.replace(config, **fields)  # its checks run again
        self.config = config

    @property
    def decides_size(self) -> bool:
        return self.capabilities.decides_size

    @classmethod
    def restart_from_scratch(cls, cfg: Any, run_dir: Path) -> None:
        """Before a run killed ahead of its first checkpoint starts again from step 0: bring
        back to their start what the killed start wrote outside the run directory (the Optuna
        strategy's database study). Default: nothing."""
        del cfg, run_dir

    @classmethod
    def check_objectives(cls, config: Any, objectives: tuple, constraints: tuple) -> None:
        """Raises ``ValueError`` naming the setting that cannot serve these ``objectives`` and
        ``constraints`` (:mod:`jaxhpo.objectives`; checked with the config, before anything is
        built). Default: nothing."""
        del config, objectives, constraints

    def for_study(self, objectives: tuple) -> Strategy:
        """This strategy for a study of several ``objectives``: a shallow copy that knows them
        (:attr:`objectives`), for a strategy that needs them before its first observation
        (hypergradients descend their weighted sum). The user's object is left alone."""
        if not objectives or tuple(objectives) == self.objectives:
            return self
        out = copy.copy(self)
        out.objectives = tuple(objectives)
        return out

    @classmethod
    def from_config(cls, config: Any, train: Any, metric: str = "loss") -> Strategy:
        """Builds the strategy from its typed :attr:`Config`, the run's ``TrainConfig`` and the
        metric the study optimises. Default: ``cls(config)``; a strategy whose defaults depend
        on the training length (e.g. ``ready_steps``: one segment) fills them here."""
        del train, metric
        return cls(config)

    @abc.abstractmethod
    def init(self, seed: int, space: Space, size: int | None) -> tuple[Any, dict[str, np.ndarray]]:
        """Returns ``(state, hparams)`` for the first population: the state an instance of
        :attr:`State`, a pure function of the settings and the arguments.

        ``size`` may be ``None`` when the strategy decides the population size (a full grid).
        """

    def restore_state(self, tree: Any, like: Any = None) -> Any:
        """The strategy's :attr:`State` from a checkpoint's tree (``unpack_tree`` of what
        :func:`jaxhpo.checkpoint.pack_tree` wrote), its static fields (the space) from ``like``,
        a state of the same run (the fresh one ``init`` made). The one place a restored dict
        becomes a typed state again."""
        if self.State is None:
            return tree
        return self.State.restore(tree, like)

    def train_segment(
        self,
        state: Any,
        population: Any,
        pop: Any,
        data: tuple[Any, Any],
        num_steps: int,
        valid_steps: int,
    ) -> tuple[Any, Any, jax.Array]:
        """Trains the population for one segment; returns ``(state, pop, losses [P, K])``.

        The default is ``population.train_segment`` and leaves the state alone. A strategy that
        learns hyperparameters *while* training (hypergradients) overrides it: the segment is its
        truncation window. ``data`` is ``(train_data, val_data)``.
        """
        pop, losses = population.train_segment(pop, data[0], num_steps, valid_steps=valid_steps)
        return state, pop, losses

    def update(self, state: Any, obs: Observation) -> tuple[Any, PopulationUpdate]:
        """Default: change nothing (members train to the end with fixed hyperparameters)."""
        return state, PopulationUpdate()

    def device_update(self, state: Any, step: jax.Array, fitness_P: jax.Array, hparams: Any):
        """The update as a pure ``jax.numpy`` function, for runs compiled as one program
        (``train.compiled``): returns ``(state, parents [P], copied [P], explored [P],
        hparams)``. The default is "change nothing", valid only for strategies that keep the
        default :meth:`update` (``Capabilities(compiled=True)`` declares either)."""
        if not self.capabilities.compiled:
            raise ValueError(
                f"train.compiled: strategy '{self.name}' has no compiled form (it decides on the "
                "host between segments); set train.compiled=false"
            )
        P = fitness_P.shape[0]
        slots = jax.numpy.arange(P, dtype=jax.numpy.int32)
        none = jax.numpy.zeros((P,), bool)
        return state, slots, none, none, hparams

    def member_steps(self, train_steps: int, segment_steps: int) -> int:
        """The most steps one member trains before it is replaced by a fresh one: the horizon
        over which learning-rate schedules decay (``decay_steps``, ``cycle_steps``) unless the
        space sets them. Default: the whole run; generation-based searchers: one generation."""
        del segment_steps
        return train_steps

    def attach(self, state: Any, run_dir: Path) -> dict[str, Any]:
        """Called once the run directory exists, with the state the first segment starts from
        (a resumed run's restored one), before it trains; returns fields for ``run.json``.
        Default: nothing (the Optuna strategy links its study to the run here)."""
        del state, run_dir
        return {}

    def check_population(self, population: Any) -> None:
        """Raises ``ValueError`` naming ``strategy.name`` when the strategy cannot drive this
        population: a strategy that trains its own segments through one population program
        (hypergradients, PES) cannot drive shape buckets (:mod:`jaxhpo.population.buckets`)."""
        if not getattr(population, "bucketed", False):
            return
        reason = self.capabilities.no_buckets
        if self.capabilities.own_segments:
            reason = "it trains through one population program"
        if reason:
            raise ValueError(
                f"strategy.name: '{self.name}' cannot run shape buckets ({reason}); use "
                "population.structure=masked (depth/heads/ff_width) or drop the structural "
                "dimensions"
            )

    def check(self, train_steps: int, segment_steps: int) -> None:
        """Raises ``ValueError`` naming the config field when the strategy cannot run with this
        training length (e.g. rungs that do not fall on segment boundaries). Default: nothing."""


def check_between_segments(field: str, every: int, segment_steps: int, why: str) -> None:
    """A strategy acts between segments: ``field`` (``every`` steps) must be a multiple of
    ``train.segment_steps``; a one-line ``ValueError`` naming it otherwise."""
    if every % segment_steps:
        raise ValueError(
            f"strategy.{field}: {every} is not a multiple of train.segment_steps={segment_steps} "
            f"({why})"
        )


def has_compiled_form(strategy: Strategy) -> bool:
    """True when ``strategy.device_update`` is its decision (declared by its capabilities)."""
    caps = strategy.capabilities
    return caps.compiled and not caps.own_segments


def config_names(strategy_cls: type[Strategy]) -> tuple[str, ...]:
    """The settings of ``strategy_cls`` (its :attr:`Strategy.Config`'s fields)."""
    return tuple(f.name for f in dataclasses.fields(strategy_cls.Config))


def fill_points(
    space: Space, cols: Mapping[str, np.ndarray], points: Sequence[Mapping[str, float]]
) -> dict[str, np.ndarray]:
    """``cols`` with row ``i`` set from ``points[i]`` (``strategy.points``: explicit members,
    each a full or partial assignment of the searched dimensions), checked against the space.

    Raises:
      ValueError: naming ``strategy.points``, for an unknown name or a value outside the space.
    """
    cols = {k: np.asarray(v).copy() for k, v in cols.items()}
    for i, point in enumerate(points):
        for name, value in point.items():
            if name not in space.searched:
                raise ValueError(
                    f"strategy.points[{i}].{name}: not a searched dimension "
                    f"(searched: {', '.join(space.searched)})"
                )
            cols[name][i] = value
    try:
        space.validate_values(cols)
    except ValueError as e:
        raise ValueError(f"strategy.points: {e}") from None
    return cols
