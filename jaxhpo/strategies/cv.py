"""k-fold cross-validation around any strategy: members x folds trained as one population.

With ``task.folds = k`` every trial the strategy proposes becomes ``k`` members, one per fold,
laid out trial-major (slot ``t * k + f`` is trial ``t``'s fold ``f``) on the one member axis that
``vmap`` / ``lax.map`` / sharding already handle, so the folds train in the same program as the
trials. Each member carries its fold as the hyperparameter ``fold``: it trains without that fold's
part of the training data and is validated on it (see :meth:`jaxhpo.tasks.Task.set_folds`).

:class:`CrossValidated` shows the wrapped strategy one member per trial, whose metrics are the
mean over its folds (a trial diverges if any fold does), and expands the strategy's decision back
onto the folds: a trial copied from another copies fold by fold (PBT), a stopped trial stops all
its folds (halving), a re-packed population keeps whole trials. So every strategy works with
cross-validation unchanged; the run loop knows nothing of it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxhpo.space import Space
from jaxhpo.strategies.base import Observation, PopulationUpdate, Strategy


class CrossValidated(Strategy):
    """``inner`` over trials, each trained on ``folds`` folds; fitness = mean over folds."""

    def __init__(self, inner: Strategy, folds: int):
        if folds < 2:
            raise ValueError(f"task.folds: k-fold cross-validation needs k >= 2, got {folds}")
        self.inner, self.folds = inner, folds
        self.name = inner.name
        self.config = inner.config
        self.State = inner.State  # the state is the inner strategy's, over trials
        # it decides on the host between segments (no compiled form); the rest is the inner's
        self.capabilities = dataclasses.replace(inner.capabilities, compiled=False)

    def check(self, train_steps: int, segment_steps: int) -> None:
        self.inner.check(train_steps, segment_steps)

    def member_steps(self, train_steps: int, segment_steps: int) -> int:
        return self.inner.member_steps(train_steps, segment_steps)

    def init(self, seed: int, space: Space, size: int | None):
        if size is not None and size % self.folds:
            raise ValueError(
                f"population.size: with task.folds={self.folds} the population holds "
                f"trials x folds members; {size} is not a multiple of {self.folds}"
            )
        trials = None if size is None else size // self.folds
        state, cols = self.inner.init(seed, space, trials)
        n = len(next(iter(cols.values()))) if cols else trials
        out = {k: np.repeat(np.asarray(v), self.folds) for k, v in cols.items()}
        out["fold"] = np.tile(np.arange(self.folds, dtype=np.float64), n)
        return state, out

    def trial_ids(self, member_id: np.ndarray) -> np.ndarray:
        """The id of each trial as the wrapped strategy sees it (int [P/k]): its first fold's
        member id.

        The folds of a trial have consecutive ids (the first population is numbered in slot
        order, a copy keeps the slot's id, a re-initialised trial takes ``k`` new ids in slot
        order: :func:`jaxhpo.run.update.apply_update`), so fold ``f`` of the trial seen as ``m``
        is member ``m + f``; :meth:`fold_events` relies on it.

        Raises:
          ValueError: if the member ids do not follow that layout.
        """
        k = self.folds
        ids_TxK = np.asarray(member_id, np.int64).reshape(-1, k)
        if not np.array_equal(ids_TxK, ids_TxK[:, :1] + np.arange(k)[None, :]):
            raise ValueError(
                f"task.folds: member ids {ids_TxK.ravel()[:8].tolist()} are not laid out trial by "
                f"trial ({k} consecutive ids each)"
            )
        return ids_TxK[:, 0]

    def trial_observation(self, obs: Observation) -> Observation:
        """One row per trial: the mean metrics over its folds (slots ``t * k .. t * k + k-1``)."""
        k = self.folds

        def per_trial(x: np.ndarray) -> np.ndarray:
            return np.asarray(x).reshape(-1, k)

        metrics = {
            name: per_trial(np.asarray(v, np.float64)).mean(axis=1)
            for name, v in obs.metrics.items()
        }
        return dataclasses.replace(
            obs,
            member_id=self.trial_ids(obs.member_id),
            hparams={n: per_trial(v)[:, 0] for n, v in obs.hparams.items() if n != "fold"},
            metrics=metrics,
            diverged=per_trial(obs.diverged).any(axis=1),
            active=per_trial(obs.active).any(axis=1),
            groups=None if obs.groups is None else per_trial(obs.groups)[:, 0],
        )

    def expand(self, upd: PopulationUpdate) -> PopulationUpdate:
        """The trials' decision applied to every fold of each trial."""
        k = self.folds

        def rows(x):
            return None if x is None else np.repeat(np.asarray(x), k)

        def slots(trials):
            t = np.asarray(trials, np.int64)
            return (t[:, None] * k + np.arange(k)[None, :]).ravel()

        return dataclasses.replace(
            upd,
            parents=None if upd.parents is None else slots(upd.parents),
            reinit=rows(upd.reinit),
            hparams=None if upd.hparams is None else {n: rows(v) for n, v in upd.hparams.items()},
            active=rows(upd.active),
            keep=None if upd.keep is None else slots(upd.keep),
            grow=upd.grow * k,
            events=[e for ev in upd.events for e in self.fold_events(ev)],
        )

    def fold_events(self, ev: dict[str, Any]) -> list[dict[str, Any]]:
        """A lineage event of the wrapped strategy (which names trials by their first fold's
        member id, and trial slots) as events about every fold: one per fold for an event about
        one trial (``stop``, ``explore``, ``exploit``), and a ``compact`` event's ``keep``
        listing every fold."""
        k = self.folds
        ev = dict(ev)
        if "keep" in ev:
            ev["keep"] = [int(t) + f for t in ev["keep"] for f in range(k)]
        ids = [n for n in ("member", "child", "parent") if n in ev]
        slots = [n for n in ("child_slot", "parent_slot") if n in ev]
        if not ids and not slots:
            return [ev]
        return [
            {**ev, **{n: int(ev[n]) + f for n in ids}, **{n: int(ev[n]) * k + f for n in slots}}
            for f in range(k)
        ]

    def update(self, state: Any, obs: Observation) -> tuple[Any, PopulationUpdate]:
        state, upd = self.inner.update(state, self.trial_observation(obs))
        return state, self.expand(upd)

    def attach(self, state, run_dir):
        return self.inner.attach(state, run_dir)

    def check_population(self, population) -> None:
        self.inner.check_population(population)

    def train_segment(self, state, population, pop, data, num_steps, valid_steps):
        return self.inner.train_segment(state, population, pop, data, num_steps, valid_steps)
