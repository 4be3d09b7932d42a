"""Evaluation of a population: every member's metrics on a split, the ensemble of the best
members, and the memory a population needs. Part of :class:`jaxhpo.population.Population`
(a base class, so that each module keeps one concern)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo import parallel
from jaxhpo.population.members import PopulationState, _gather, over_members
from jaxhpo.population.step import member_evaluate


class PopulationEvaluation:
    """The evaluation methods of :class:`~jaxhpo.population.Population`."""

    # -- evaluation ------------------------------------------------------------------------
    def _evaluate_impl(self, pop: PopulationState, data, mask, by_fold: bool = False):
        self.trace_counts["evaluate"] += 1
        by_fold = by_fold and self.folds > 1
        fold = pop.fold

        def one(args):
            params, state, on, f, hp = args

            def run(params):
                # k-fold: each member is validated on its own fold's held-out data
                own = jax.tree.map(lambda x: x[f], data) if by_fold else data
                return member_evaluate(self, params, state, own, hp)

            def skip(params):  # NaN metrics carrying the member's own (sharded) type
                zero = jnp.zeros((), jnp.float32) * jax.tree.leaves(params)[0].ravel()[0]
                return {k: zero.astype(jnp.float32) + jnp.nan for k in self.task.metric_names}

            # Under lax.map a member that is not evaluated costs nothing (a stopped member).
            return jax.lax.cond(on, run, skip, params)

        metrics = over_members(one, self.mode, self.chunk_size)(
            (pop.params, pop.model_state, mask, fold, pop.hparams)
        )
        return {k: jnp.where(pop.diverged, jnp.nan, v) for k, v in metrics.items()}

    def evaluate(
        self, pop: PopulationState, data, only_active: bool = False, by_fold: bool = False
    ) -> dict[str, jax.Array]:
        """Metrics of every member on one split (``task.splits.val`` / ``.test``), each [P].

        With ``only_active``, stopped members are not evaluated (NaN; they cost nothing under
        ``lax.map``): the run loop carries their last values forward. With ``by_fold`` (the
        validation split under k-fold cross-validation, leaves ``[k, ...]``), each member is
        evaluated on its own fold; without folds it changes nothing.
        """
        mask = pop.active if only_active else jnp.ones_like(pop.active)
        return self._evaluate(pop, data, mask, by_fold=by_fold and self.folds > 1)

    def ensemble_evaluate(self, pop: PopulationState, slots: Any, data) -> dict[str, float]:
        """Metrics of the ensemble of members ``slots`` on one split: their predicted
        probabilities averaged (a mixture), then cross-entropy and accuracy with the split's
        target weights, as :meth:`Task.eval_sums` does for one member."""
        slots = np.asarray(slots, np.int32)
        if slots.size == 0:
            raise ValueError("train.ensemble_top_k: no finite member to ensemble")
        members = _gather(pop, slots)
        sums = parallel.to_host(
            self._ensemble(members.params, members.model_state, members.hparams, data)
        )
        w = max(float(sums["weight"]), 1.0)
        return {k: float(sums[k]) / w for k in self.task.metric_names}

    @functools.partial(jax.jit, static_argnums=0)
    def _ensemble(self, params_K, state_K, hparams_K, data):
        def batch_sums(carry, batch):
            def logp(args):
                params, state, hp = args
                model = self.model.merge(params, state, jax.random.key(0), train=False)
                logits = self.task.logits(model, batch, hp).astype(jnp.float32)
                return jax.nn.log_softmax(logits)

            # members one after another: [K, ..., V]
            logp_K = jax.lax.map(logp, (params_K, state_K, hparams_K))
            mix = jax.nn.logsumexp(logp_K, axis=0) - jnp.log(logp_K.shape[0])
            targets, weights = batch["targets"], batch["weights"]
            ce = -jnp.take_along_axis(mix, targets[..., None], axis=-1)[..., 0]
            correct = (jnp.argmax(mix, -1) == targets).astype(jnp.float32)
            sums = {
                "loss": (ce * weights).sum(),
                "accuracy": (correct * weights).sum(),
                "weight": weights.sum(),
            }
            return jax.tree.map(jnp.add, carry, sums), None

        zero = {k: jnp.zeros((), jnp.float32) for k in ("loss", "accuracy", "weight")}
        return jax.lax.scan(batch_sums, zero, data)[0]

    # -- memory ----------------------------------------------------------------------------
    def memory_estimate(self, size: int, train_data: Any, num_steps: int) -> dict[str, float]:
        """Bytes a population of ``size`` needs: the state per member (parameters, optimizer
        state) from abstract shapes, and XLA's working memory for one segment program (its
        memory analysis, where the backend gives one; NaN otherwise)."""
        hp = {k: jnp.asarray(v[0]) for k, v in self.full_hparams({}, 1).items()}
        one = jax.eval_shape(lambda: self._init_member(jax.random.key(0), jnp.int32(0), hp))
        state = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(one))
        work = float("nan")
        try:
            ids = np.arange(size)
            pop = jax.eval_shape(
                lambda: self.init(jax.random.key(0), ids, self.full_hparams({}, size))
            )
            valid = jnp.asarray(num_steps, jnp.int32)
            compiled = self._segment.lower(pop, train_data, valid, num_steps=num_steps).compile()
            analysis = compiled.memory_analysis()
            if analysis is not None:
                work = float(analysis.temp_size_in_bytes)
        except Exception:  # noqa: BLE001 - an estimate for an error message; never fail here
            pass
        return {"state_per_member": float(state), "segment_working": work}
