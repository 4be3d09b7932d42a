"""One population member's training step and validation loss as differentiable functions of its
hyperparameters, for unrolled hypergradients on a :class:`jaxhpo.population.Population`.

The step IS the population's own (:func:`jaxhpo.population.step.member_step`: same batch
at each step, same dropout key, same epoch limit, same divergence handling); only the
hyperparameters are *arguments*: the task's are passed to the loss, and the optimizer chain is
rebuilt from them with :func:`jaxhpo.optim.make_chain` (``differentiable=True``) and run on the
``inner_state`` of the member's injected optimizer state, so gradients flow to them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from jaxhpo import optim
from jaxhpo.objectives import scalarise
from jaxhpo.population.step import member_evaluate, member_step, no_step


def member_hparams(population: Any, m: Any) -> dict[str, jax.Array]:
    """All hyperparameters of ONE member (no member axis), name -> scalar."""
    opt = optim.get_hparams(m.opt_state)
    return {**{k: opt[k] for k in population.opt_names}, **m.hparams}


def make_step(
    population: Any, train_data: Any, valid: jax.Array
) -> Callable[[Any, Mapping[str, jax.Array], jax.Array], tuple[Any, jax.Array]]:
    """``step_fn(m, hp, t) -> (m, loss)`` for ONE member state ``m``; steps ``t >= valid`` and
    stopped, diverged or finished members are no-ops with a NaN loss (as in the population
    segment). The population's :attr:`~jaxhpo.population.Population.fixed` task
    hyperparameters are constants of the step, as in its segment: differentiate only searched
    ones (a fixed one's gradient is zero)."""
    if population.data_devices > 1:
        raise ValueError(
            "population.data_devices: unrolled hypergradients do not split a member's batch "
            "over devices; use population.data_devices=1"
        )

    def step_fn(m, hp, t):
        chain = population.differentiable_chain({k: hp[k] for k in population.opt_names})

        def update(grads, opt_state, params):
            updates, inner = chain.update(grads, opt_state.inner_state, params)
            return updates, opt_state._replace(inner_state=inner, count=opt_state.count + 1)

        # the population's fixed task hyperparameters stay constants of the step (its fast
        # path: no dropout bits at rate 0); only the others are differentiable arguments
        task_hp = population.step_hparams({k: hp[k] for k in population.task_names})

        def go(m):
            return member_step(population, m, train_data, task_hp=task_hp, update=update)

        return jax.lax.cond(t < valid, go, no_step, m)

    return step_fn


def make_val(population: Any, val_data: Any, objectives: Sequence[Any] = ()) -> Callable[..., Any]:
    """``val_fn(m, hp, weights=None) -> scalar``: the member's mean validation loss (the task's
    metric); with several ``objectives`` (:class:`jaxhpo.objectives.Objective`) and the
    member's ``weights`` [M], their :func:`jaxhpo.objectives.scalarise` instead."""

    def val_fn(m, hp, weights=None):
        del hp
        data = val_data
        if population.folds > 1:  # k-fold: the member's own held-out fold
            data = jax.tree.map(lambda x: x[m.fold], val_data)
        metrics = member_evaluate(population, m.params, m.model_state, data, m.hparams)
        if objectives and weights is not None:
            return scalarise(metrics, objectives, weights)
        return metrics["loss"]

    return val_fn
