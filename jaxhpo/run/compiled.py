"""``train.compiled``: the whole run as one program.

Segments, evaluation and the strategy's decision run in one ``lax.scan`` over segments (PBT's
exploit is a gather inside it); the decision is checked and applied by
:func:`jaxhpo.run.update.apply_device_update`, the device-side twin of the host loop's
``apply_update``. The host writes the rows and lineage events afterwards, from the program's
per-segment outputs.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxhpo import parallel
from jaxhpo.objectives import pareto_fitness
from jaxhpo.population.specialise import check_fixed_names
from jaxhpo.run.oom import explain_oom
from jaxhpo.run.update import DeviceUpdate, apply_device_update, check_device_update
from jaxhpo.strategies.base import lineage_events

if TYPE_CHECKING:
    from jaxhpo.run.book import Loop
    from jaxhpo.run.progress import ProgressLine


def compiled_program(
    population: Any,
    update_fn: Callable,
    *,
    num_segments: int,
    segment_steps: int,
    total_steps: int,
    objective: str,
    maximize: bool,
    searched: tuple[str, ...],
    progress: Callable | None = None,
    objectives: tuple = (),
    constraints: tuple = (),
) -> Callable:
    """Segments, evaluation and the strategy's decision as ONE compiled program.

    Args:
      population: the :class:`~jaxhpo.population.Population` (one shape: not shape buckets).
      update_fn: ``(state, step, fitness [P], hparams) -> (state, parents, copied,
        explored, hparams)``, a strategy's :meth:`~jaxhpo.strategies.Strategy.device_update`.
      num_segments, segment_steps, total_steps: the run's length (the last segment may be
        shorter: its extra steps are no-ops).
      objective, maximize: the validation metric the strategy ranks by.
      searched: hyperparameter names the strategy reads and writes.
      progress: optional host callback ``(segment, best_fitness)`` (``jax.debug.callback``).

    Returns:
      A jitted ``f(pop, train_data, val_data, strategy_state) -> (pop, state, outputs)``;
      ``outputs`` hold one entry per segment (leading axis S): ``step``, ``metrics``,
      ``hparams`` (all names, as trained in that segment), ``member_id``, ``diverged``,
      ``active``, ``train_loss``, and the decision ``parents``, ``copied``, ``explored``,
      ``new_hparams``. No decision is applied after the last segment.
    """
    check_fixed_names(getattr(population, "fixed", {}), searched, "train.compiled")
    M, R = PartitionSpec("pop"), PartitionSpec()
    segment = population._sharded(population._segment_impl, (M, R, R), (M, M))
    evaluate = functools.partial(
        population._sharded(population._evaluate_impl, (M, R, M), M), by_fold=population.folds > 1
    )
    K, S = segment_steps, num_segments

    def body(carry, s, train_data, val_data):
        pop, state = carry
        valid = jnp.minimum(K, total_steps - s * K).astype(jnp.int32)
        pop, losses_PxK = segment(pop, train_data, valid, num_steps=K)
        metrics = evaluate(pop, val_data, pop.active)
        step = s * K + valid
        fit = _fitness(metrics, pop.diverged, objective, maximize, objectives, constraints)
        hp = population.get_hparams(pop)
        state, *decision = update_fn(state, step, fit, {k: hp[k] for k in searched})
        upd = DeviceUpdate(*decision)
        check_device_update(upd, pop.size, population.hparam_names)  # while tracing
        upd = upd.unless(s == S - 1, hp)  # no decision is applied after the last segment
        if progress is not None:
            jax.debug.callback(progress, s, jnp.min(fit))
        t_ok = jnp.arange(K) < valid
        out = {
            "step": step,
            "metrics": metrics,
            "hparams": hp,
            "member_id": pop.member_id,
            "diverged": pop.diverged,
            "active": pop.active,
            "train_loss": jnp.nanmean(jnp.where(t_ok, losses_PxK, jnp.nan), axis=1),
            "parents": upd.parents,
            "copied": upd.copied,
            "explored": upd.explored,
            "new_hparams": upd.hparams,
        }
        return (apply_device_update(population, pop, upd), state), out

    def program(pop, train_data, val_data, state):
        step_fn = functools.partial(body, train_data=train_data, val_data=val_data)
        (pop, state), outs = jax.lax.scan(step_fn, (pop, state), jnp.arange(S))
        return pop, state, outs

    return jax.jit(program)


def _fitness(metrics, diverged, objective, maximize, objectives, constraints):
    """The minimised fitness the strategy's compiled decision reads, as
    :meth:`~jaxhpo.strategies.base.Observation.fitness` computes it on the host."""
    if objectives:  # several: each member's place in the Pareto order
        return pareto_fitness(metrics, objectives, constraints, diverged)
    fit = metrics[objective].astype(jnp.float32)
    fit = -fit if maximize else fit
    return jnp.where(jnp.isfinite(fit) & ~diverged, fit, jnp.inf)


def run_compiled(loop: Loop, show: ProgressLine) -> None:
    """Runs every segment and every strategy decision as one program (:func:`compiled_program`),
    then writes the rows and lineage events from its per-segment outputs; ``loop`` ends at the
    final population and its last observation."""
    prep = loop.prep
    metric, maximize = loop.metric, loop.maximize

    def tick(segment, best_fitness):
        best = float(best_fitness)
        shown = -best if maximize else best
        show.show(int(segment) + 1, f"best val {metric} {shown:.4f} (compiled loop)")

    n_segments, seg = show.n_segments, show.segment_steps
    program = compiled_program(
        loop.population,
        prep.strategy.device_update,
        num_segments=n_segments,
        segment_steps=seg,
        total_steps=show.total,
        objective=metric,
        maximize=maximize,
        searched=tuple(prep.space.searched),
        objectives=loop.objectives if len(loop.objectives) > 1 or loop.constraints else (),
        constraints=loop.constraints,
        progress=tick,
    )
    ts = time.perf_counter()
    steps_before = int(np.sum(parallel.to_host(loop.pop.step)))
    train_data, val_data, _ = loop.data
    with explain_oom(loop.population, loop.pop.size, train_data, seg):
        loop.pop, loop.state, outs = program(loop.pop, train_data, val_data, loop.state)
    outs = parallel.to_host(outs)
    loop.timings["train_s"] = time.perf_counter() - ts
    loop.book.member_steps = int(np.sum(parallel.to_host(loop.pop.step))) - steps_before
    for s in range(n_segments):
        o = jax.tree.map(lambda x, s=s: x[s], outs)
        steps = np.full(len(o["member_id"]), int(o["step"]))  # per-member counts: final only
        loop.obs = loop.log(
            int(o["step"]),
            s + 1,
            o["train_loss"],
            o["metrics"],
            o["hparams"],
            o["member_id"],
            o["diverged"],
            o["active"],
            steps,
        )
        fit = loop.obs.fitness()
        events = lineage_events(
            loop.obs, fit, o["parents"], o["copied"], o["explored"], o["new_hparams"]
        )
        for ev in events:
            loop.writer.event({"step": int(o["step"]), **ev})
    loop.step = int(outs["step"][-1])
    loop.segment = n_segments
