"""Bringing an Optuna study in a database back to a checkpoint (resume after a kill).

A run killed after its last checkpoint may have told, asked or failed trials the checkpoint does not
know, and the restarted process asks trials of its own before it restores the checkpoint. For the
resumed run and the database to end as an uninterrupted run, every trial numbered at or after the
checkpoint's count of finished trials is deleted, in one database transaction (a kill leaves the
study either as it was or cut back, never half cut). Optuna has no public call that deletes a trial;
this uses its SQLAlchemy models (``optuna.storages._rdb.models``), so it applies to
``RDBStorage`` URLs (``sqlite:///``, ``postgresql://``, ``mysql://``). Trial numbers are the
count of earlier trials, so the next trial asked gets the number the uninterrupted run gave it.
:func:`study_for` re-opens (or, in memory, rebuilds) the state's study on resume.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxhpo.strategies import optuna_report


def name_array(name: str) -> np.ndarray:
    """A study name as a uint8 array (a leaf of the strategy state)."""
    return np.frombuffer(name.encode("utf-8"), np.uint8).copy()


def name_of(arr: Any) -> str:
    """The study name of :func:`name_array`."""
    return bytes(np.asarray(arr, np.uint8)).decode("utf-8")


def rdb_of(storage: Any) -> Any:
    """The ``RDBStorage`` behind an Optuna storage URL or object, or ``None``."""
    import optuna

    if storage is None:
        return None
    try:
        backend = optuna.storages.get_storage(storage)
    except Exception:  # noqa: BLE001 - not a database URL Optuna opens: no RDB
        return None
    backend = getattr(backend, "_backend", backend)  # _CachedStorage wraps RDBStorage
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def _in_study(storage: Any, study_name: str, change: Callable[[Any, Any, Any], int]) -> int | None:
    """Runs ``change(session, models, study)`` in one transaction on the database study
    ``study_name``; its result, or ``None`` when the storage is not a database or the study
    does not exist (nothing done)."""
    rdb = rdb_of(storage)
    if rdb is None:
        return None
    from optuna.storages._rdb import models  # optuna is optional (pip install 'jaxhpo[optuna]')

    session = rdb.scoped_session()
    try:
        study = models.StudyModel.find_by_name(study_name, session)
        if study is None:
            session.rollback()
            return None
        out = change(session, models, study)
        session.commit()
        return out
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def truncate_study(storage: Any, study_name: str, keep: int) -> int | None:
    """Deletes the trials numbered ``>= keep`` of ``study_name`` in one transaction.

    Args:
      storage: an Optuna storage URL (``strategy.storage``).
      study_name: the study's name.
      keep: how many trials (numbers ``0 .. keep-1``) stay.

    Returns:
      the number of trials the study holds afterwards; ``None`` when the storage is not a
      database (nothing done) or the study does not exist.
    """

    def change(session, models, study):
        query = session.query(models.TrialModel).filter(
            models.TrialModel.study_id == study.study_id
        )
        for trial in query.filter(models.TrialModel.number >= int(keep)).all():
            session.delete(trial)  # params, values, attributes cascade
        session.flush()
        return query.count()

    return _in_study(storage, study_name, change)


def delete_trials_with(storage: Any, study_name: str, key: str, value: Any) -> int | None:
    """Deletes the trials of ``study_name`` whose user attribute ``key`` is ``value``, in one
    transaction (e.g. a resumed run's trials in the live export, written again on resume).

    Returns:
      how many were deleted; ``None`` when the storage is not a database or the study does not
      exist.
    """

    def change(session, models, study):
        attr = models.TrialUserAttributeModel
        trials = (
            session.query(models.TrialModel)
            .join(attr, attr.trial_id == models.TrialModel.trial_id)
            .filter(models.TrialModel.study_id == study.study_id)
            .filter(attr.key == key, attr.value_json == json.dumps(value))
            .all()
        )
        for trial in trials:
            session.delete(trial)  # params, values, attributes cascade
        return len(trials)

    return _in_study(storage, study_name, change)


def cut_to_start(cfg: Any, run_dir: Any) -> None:
    """Brings an Optuna database study back to where a run killed before its first checkpoint
    found it (``jaxhpo resume`` of a run without a checkpoint starts again from step 0 and its
    strategy asks the first generation again). An unnamed study (``strategy.study: null``,
    its generated name in ``run.json``) was the killed start's own: it is deleted. A named one
    loses its trailing unfinished trials (the killed start's asked or enqueued ones), in one
    transaction; its earlier, finished trials stay. Nothing is done for another
    strategy or a storage that is not a database."""
    import json
    from pathlib import Path

    s = cfg.strategy
    storage, named = s.options.get("storage"), s.options.get("study")
    if getattr(s, "name", None) != "optuna" or rdb_of(storage) is None:
        return
    import optuna

    path = Path(run_dir) / "run.json"
    info = json.loads(path.read_text()) if path.exists() else {}
    name = named or info.get("optuna_study")
    if not name:
        return
    if named is None:
        with contextlib.suppress(KeyError):  # KeyError: not created before the kill
            optuna.delete_study(study_name=name, storage=storage)
        return
    try:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return
    done = [t.number for t in trials if t.state.is_finished()]
    first = max(done, default=-1) + 1  # the trailing unfinished trials: the killed start's
    if first < len(trials):
        truncate_study(storage, name, first)


def study_for(search: Any, state: Any) -> Any:
    """The study of an :class:`~jaxhpo.strategies.optuna_search.OptunaSearch` for ``state``: this
    process's study, or (after a resume) the state's study re-opened and cut back to the
    checkpoint (a database), or rebuilt from the state (memory)."""
    live = search.live  # the process's study and trials (optuna_study.LiveStudy)
    name = name_of(state.study)
    numbers = [int(n) for n in np.asarray(state.trials)]
    keep = int(0 if state.base is None else state.base) + len(np.asarray(state.values))
    if (
        search.study is not None
        and search.study.study_name == name
        and (all(n in live.running for n in numbers) or live.synced == (name, keep))
    ):
        return search.study
    TrialState = search.optuna.trial.TrialState
    mine = search.study
    other = search.config.storage is not None and mine is not None and mine.study_name != name
    if other and not mine.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        search.optuna.delete_study(study_name=mine.study_name, storage=search.config.storage)
    # A database study is cut back to the checkpoint: its earlier trials and the told ones.
    asked = _asked(search, name, numbers)
    left = truncate_study(search.config.storage, name, keep)
    if left is not None and left not in (0, keep):
        raise ValueError(
            f"strategy.storage: study {name!r} holds {left} trials, the checkpoint "
            f"expects {keep} (was it changed by hand?)"
        )
    if left is None and mine is not None and mine.study_name == name:
        for n in live.init_trials:  # asked by the restart, never trained
            if n in live.running:
                mine.tell(n, state=TrialState.FAIL)
    live.running = {}
    values = np.asarray(state.values)
    objectives = values.shape[1] if values.ndim == 2 else 1  # [N, M]: several objectives
    sampler = search._make_sampler(int(state.seed), len(numbers), 0, _has_constraints(state))
    study = search._create_study(name, sampler, objectives)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        told = state.told_pruned
        told_pruned = np.asarray(np.zeros(len(values)) if told is None else told)
        cons = state.told_constraints
        cons = np.zeros((len(values), 0)) if cons is None else np.asarray(cons, np.float64)
        for j, (row, value) in enumerate(zip(np.asarray(state.params), values)):
            reported = optuna_report.archived(state, j)
            trial = search._trial(
                state.space, row, value, reported=reported, pruned=told_pruned[j], cons=cons[j]
            )
            study.add_trial(trial)
    if left is not None:
        _ask_again(search, study, state, numbers, asked)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    by_number = {t.number: t for t in running}
    for n in numbers:  # a persistent study still holds the generation's running trials
        if n in by_number:
            live.running[n] = search.optuna.trial.Trial(study, by_number[n]._trial_id)
    live.study, live.synced = study, (name, keep)
    return study


def _has_constraints(state: Any) -> bool:
    cons = state.told_constraints
    return cons is not None and np.asarray(cons).ndim == 2 and np.asarray(cons).shape[1] > 0


def _asked(search: Any, name: str, numbers: list[int]) -> dict[int, Any]:
    """The generation's trials in a database study, number -> FrozenTrial (before the cut)."""
    if rdb_of(search.config.storage) is None or not numbers:
        return {}
    try:
        study = search.optuna.load_study(study_name=name, storage=search.config.storage)
    except KeyError:
        return {}
    return {t.number: t for t in study.get_trials(deepcopy=False) if t.number in set(numbers)}


def _ask_again(search: Any, study: Any, state: Any, numbers, asked) -> None:
    """The checkpoint's generation again, as running trials with the numbers, parameters, user
    and system attributes (the sampler's, e.g. ``tpe:relative_params:*``) they were asked with,
    and the intermediate values the checkpoint holds; the generation's end tells them as the
    uninterrupted run does. Stops at the first trial the cut study does not give its number
    (those are added as finished when told)."""
    running = search.optuna.trial.TrialState.RUNNING
    for i, n in enumerate(numbers):
        t = asked.get(n)
        if t is None:
            return
        frozen = search.optuna.trial.create_trial(
            state=running,
            params=t.params,
            distributions=t.distributions,
            user_attrs={k: v for k, v in t.user_attrs.items() if k != "member"},
            system_attrs=t.system_attrs,
            intermediate_values=optuna_report.reported(state, i),
        )
        trial_id = study._storage.create_new_trial(study._study_id, frozen)
        if study._storage.get_trial_number_from_id(trial_id) != n:  # not the uninterrupted one
            truncate_study(search.config.storage, study.study_name, n)
            return
        search.live.running[n] = search.optuna.trial.Trial(study, trial_id)


def reopen_with_directions(search: Any, study: Any, state: Any, objectives: int) -> Any:
    """The Optuna strategy ``search``'s study again with ``objectives`` directions (``init``
    made it before the first observation said how many), holding the generation's asked trials
    as running trials with their numbers, parameters and attributes (the sampler's generation
    among them).

    Raises:
      ValueError: naming ``strategy.study`` when it held trials before (a continued
        single-objective study, a warm start's observations).
    """
    if int(state.base or 0) + len(np.asarray(state.values)):
        raise ValueError(
            f"strategy.study: {study.study_name!r} holds single-objective trials (a "
            f"continued study or a warm start's); a study with {objectives} objectives "
            "starts from a new name (strategy.points and warm_start_top still seed it)"
        )
    asked = {t.number: t for t in study.get_trials(deepcopy=False)}
    if search.config.storage is not None:
        search.optuna.delete_study(study_name=study.study_name, storage=search.config.storage)
    new = search._create_study(study.study_name, study.sampler, objectives)
    running = search.optuna.trial.TrialState.RUNNING
    for n in [int(n) for n in np.asarray(state.trials)]:
        t, _ = asked[n], search.live.running.pop(n, None)
        frozen = search.optuna.trial.create_trial(
            state=running,
            params=t.params,
            distributions=t.distributions,
            user_attrs=t.user_attrs,
            system_attrs=t.system_attrs,
        )
        trial_id = new._storage.create_new_trial(new._study_id, frozen)
        search.live.running[n] = search.optuna.trial.Trial(new, trial_id)
    search.live.study, search.live.synced = new, (study.study_name, 0)
    return new
