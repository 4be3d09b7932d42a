"""Program choices per member: the learning-rate schedule and the optimizer as traced codes.

Choosing a schedule or an optimizer changes the program, not just a number in it. Here the
choice is a float32 code in the optimizer state (``opt_state.hyperparams["schedule"]`` /
``["optimizer"]``, an index into the run's tuple of choices) and the program holds every choice
behind a ``jax.lax.switch``, as ``init_scheme`` does for initialisation
(:func:`jaxhpo.models.mup.kernel_init`). A strategy changes a member's schedule or optimizer
between segments by writing its code, which never recompiles; PBT may explore it.

:func:`resolve` is the one entry point for a run's optimizer (``jaxhpo.optim.resolve``): a
tuple of optimizers is a per-member choice (:func:`resolve_choice`), anything else one optimizer
(:func:`jaxhpo.optim.factory.resolve_one`).

* **Schedules** (:func:`jaxhpo.optim.schedules.switch_schedule_value`, re-exported here):
  ``schedule=("warmup_cosine", "constant")``
  anywhere a schedule name is taken (:func:`jaxhpo.optim.make_optimizer`,
  :func:`resolve`, :class:`jaxhpo.population.Population`). The hyperparameters are
  the union of the schedules' (each branch reads its own) plus ``schedule``.
* **Optimizers** (:class:`ChoiceSpec`, from :func:`resolve` given a tuple of
  built-in names and/or optax factories): one program with a switch over the choices' updates
  and a state holding every choice's state (a tuple, one entry per choice; a member updates only
  its own entry). A member with code ``i`` therefore computes exactly what choice ``i`` alone
  computes. The per-member names are the union of the choices' (the peak rate is ``lr`` for
  every choice, built-in or factory) plus ``optimizer``.

Under ``lax.map`` over members (the CPU default) a switch on a per-member code runs one branch;
under ``vmap`` it runs every branch and selects (the cost of a mixed population is measured in
``scripts/bench_choices.py``). Why one program rather than one per optimizer (shape buckets):
the buckets would give every optimizer its own compiled program and forbid copying members across
them; the switch keeps one population, one program and PBT's exploit across optimizers, at the
price of every member carrying every choice's optimizer state.

A value of NaN means *inactive* (a conditional dimension of the search space,
:mod:`jaxhpo.space`): every branch reads its own default in its place, so an inactive
dimension takes the default of the choice the member made.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxhpo import refs
from jaxhpo.optim.base import check_choices, code_index, or_default
from jaxhpo.optim.factory import Factory, OptimizerSpec, factory_arguments, resolve_one
from jaxhpo.optim.mup import with_lr_multipliers
from jaxhpo.optim.schedules import LR, schedule_choice_names, switch_schedule_value
from jaxhpo.optim.table import DEFAULTS, OPTIMIZER_CODE, SCHEDULE_CODE

#: Hyperparameter names of the two codes.
SCHEDULE = SCHEDULE_CODE
OPTIMIZER = OPTIMIZER_CODE

__all__ = [
    "OPTIMIZER",
    "SCHEDULE",
    "ChoiceSpec",
    "code_index",
    "optional_names",
    "resolve",
    "resolve_choice",
    "schedule_choice_names",
    "switch_schedule_value",
    "switch_transform",
]


def switch_transform(
    txs: Sequence[optax.GradientTransformation], code: jax.Array
) -> optax.GradientTransformationExtraArgs:
    """One transform over ``txs``: the state is the tuple of their states; ``update`` runs the
    transform ``code`` picks (``lax.switch``) on its own entry and leaves the others as they are.
    """
    txs = tuple(txs)

    def init(params):
        return tuple(tx.init(params) for tx in txs)

    def branch(i: int):
        def update(operands):
            updates, state, params = operands
            new_updates, new_state = txs[i].update(updates, state[i], params)
            new_updates = jax.tree.map(lambda n, u: n.astype(u.dtype), new_updates, updates)
            return new_updates, (*state[:i], new_state, *state[i + 1 :])

        return update

    def update(updates, state, params=None, **extra):
        del extra
        branches = [branch(i) for i in range(len(txs))]
        return jax.lax.switch(code_index(code, len(txs)), branches, (updates, state, params))

    return optax.GradientTransformationExtraArgs(init, update)


@dataclasses.dataclass(frozen=True)
class ChoiceSpec(OptimizerSpec):
    """A per-member choice among optimizers (from :func:`resolve_choice`).

    :attr:`optimizer` is the tuple of the choices' :class:`OptimizerSpec`; :attr:`names` the
    union of theirs (the peak rate ``lr`` first) plus ``optimizer``; :attr:`defaults` a
    choice's default where the choices agree, NaN (each choice its own) where they do not.
    """

    @property
    def builtin(self) -> bool:
        return False

    @property
    def choices(self) -> tuple[OptimizerSpec, ...]:
        return self.optimizer  # type: ignore[return-value]

    def labels(self) -> tuple[str, ...]:
        """The choices' labels, in code order."""
        return tuple(s.label for s in self.choices)

    def _member_values(self, i: int, hp: Mapping[str, Any]) -> dict[str, jax.Array]:
        """Choice ``i``'s hyperparameters from the union's (NaN: choice ``i``'s default)."""
        spec = self.choices[i]
        return {
            n: or_default(hp[n] if n in hp else self.defaults[n], spec.defaults[n])
            for n in spec.names
        }

    def _switch(self, hp: Mapping[str, Any], differentiable: bool, mup: bool):
        txs = []
        for i, spec in enumerate(self.choices):
            tx = spec.chain(self._member_values(i, hp), differentiable=differentiable)
            if mup and spec.builtin:  # as make_optimizer: µP's per-layer rates
                tx = with_lr_multipliers(tx, spec.optimizer)
            txs.append(tx)
        return switch_transform(txs, hp.get(OPTIMIZER, 0.0))

    def template(self) -> optax.GradientTransformation:
        """``optax.inject_hyperparams`` over :attr:`names`: every choice's chain behind a
        switch on ``optimizer``; a built-in choice carries µP's multipliers as
        :func:`jaxhpo.optim.make_optimizer` does."""

        def factory(**hp: jax.Array) -> optax.GradientTransformation:
            return self._switch(hp, differentiable=False, mup=True)

        factory.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in self.names]
        )
        factory.__name__ = "choice"
        injected = optax.inject_hyperparams(factory, hyperparam_dtype=jnp.float32)
        return injected(**self.defaults)

    def chain(
        self, hp: Mapping[str, Any], *, differentiable: bool = False
    ) -> optax.GradientTransformation:
        """The switch with explicit values; its state is :meth:`template`'s ``inner_state``."""
        values = {n: hp[n] if n in hp else self.defaults[n] for n in self.names}
        return self._switch(values, differentiable=differentiable, mup=True)


def resolve(
    optimizer: str | Factory | Sequence[str | Factory],
    schedule: str | Sequence[str] = "constant",
    searched: Iterable[str] = (),
    *,
    mask: Callable[..., Any] | Any | None = "default",
) -> OptimizerSpec:
    """The optimizer of a run: one :class:`~jaxhpo.optim.factory.OptimizerSpec`, or a
    :class:`ChoiceSpec` for a per-member choice among optimizers.

    Args:
      optimizer: a built-in name (:data:`jaxhpo.optim.OPTIMIZERS`), an optax factory or a
        function of yours returning a ``GradientTransformation`` (taking ``learning_rate``), or
        its ``module:name`` reference (:func:`jaxhpo.optim.factory.resolve_one`); or a tuple
        of them, a per-member choice (:func:`resolve_choice`, the code ``optimizer`` per
        member).
      schedule: the learning-rate schedule (:data:`jaxhpo.optim.SCHEDULES`), or a tuple of
        them, a per-member choice (the code ``schedule`` per member).
      searched: the search space's names (see :func:`~jaxhpo.optim.factory.resolve_one`).
      mask: a factory's weight-decay mask (see :func:`~jaxhpo.optim.factory.resolve_one`).

    Returns:
      The spec: ``names`` (the peak learning rate is ``lr`` for every optimizer),
      ``defaults``, ``label``, ``template()``, ``chain(hp)``.

    Raises:
      ValueError: one line naming the field (:func:`~jaxhpo.optim.factory.resolve_one`,
        :func:`resolve_choice`).
    """
    if isinstance(schedule, list | tuple):
        schedule = tuple(schedule)
    if isinstance(optimizer, list | tuple):
        return resolve_choice(optimizer, schedule, searched, mask)
    return resolve_one(optimizer, schedule, searched, mask=mask)


def resolve_choice(
    optimizers: Sequence[Any], schedule: Any, searched: Any = (), mask: Any = "default"
) -> ChoiceSpec:
    """A :class:`ChoiceSpec` over ``optimizers`` (built-in names, optax factories or
    ``module:name`` references), each resolved by :func:`jaxhpo.optim.factory.resolve_one`."""
    check_choices(OPTIMIZER, list(optimizers), None)
    searched = tuple(searched)
    known = dict(DEFAULTS)  # every built-in optimizer's and schedule's name
    specs = []
    for o in optimizers:
        if isinstance(o, str) and not refs.is_reference(o):
            specs.append(resolve_one(o, schedule))
            continue
        factory = refs.resolve(o, "optim.optimizer") if isinstance(o, str) else o
        # another choice's names (optimizer names this factory does not take) are not its
        own = set(factory_arguments(factory)) if callable(factory) else set()
        mine = [n for n in searched if n in own or n not in known]
        specs.append(resolve_one(factory, schedule, mine, mask=mask))
    read = {n for s in specs for n in s.names} | {LR, OPTIMIZER}
    unread = [n for n in searched if n in known and n not in read]
    if unread:
        raise ValueError(
            f"space.{unread[0]}: read by none of the optimizers "
            + ", ".join(s.label for s in specs)
        )
    names: list[str] = [LR]
    for s in specs:
        names += [n for n in s.names if n not in names]
    defaults: dict[str, float] = {}
    for n in names:
        seen = {float(s.defaults[n]) for s in specs if n in s.names}
        defaults[n] = seen.pop() if len(seen) == 1 else float("nan")
    names.append(OPTIMIZER)
    defaults[OPTIMIZER] = 0.0
    return ChoiceSpec(
        names=tuple(names),
        defaults=defaults,
        label="choice(" + ", ".join(s.label for s in specs) + ")",
        optimizer=tuple(specs),
        schedule=schedule,
    )


def optional_names(population: Any) -> tuple[str, ...]:
    """The hyperparameters a strategy may leave empty (NaN: an inactive conditional dimension,
    the default read in its place): those of a per-member choice of optimizer or schedule
    except the peak rate and the codes; every name of learning curves
    (:mod:`jaxhpo.simulate`, ``population.optional_names``); none otherwise."""
    own = getattr(population, "optional_names", None)
    if own is not None:
        return tuple(own)
    spec = getattr(population, "opt", None)
    if isinstance(spec, ChoiceSpec):
        return tuple(n for n in spec.names[1:] if n not in (OPTIMIZER, SCHEDULE))
    if spec is not None and not isinstance(spec.schedule, str):
        return schedule_choice_names(spec.schedule)[:-1]
    return ()
