"""Bringing an Optuna study in a database back to a checkpoint (resume after a kill).

A run killed after its last checkpoint may have told, asked or failed trials the checkpoint does not
know, and the restarted process asks trials of its own before it restores the checkpoint. For the
resumed run and the database to end as an uninterrupted run, every trial numbered at or after the
checkpoint's count of finished trials is deleted, in one database transaction (a kill leaves the
study either as it was or cut back, never half cut). Optuna has no public call that deletes a trial;
this uses its SQLAlchemy models (``optuna.storages._rdb.models``), so it applies to
``RDBStorage`` URLs (``sqlite:///``, ``postgresql://``, ``mysql://``). Trial numbers are the
count of earlier trials, so the next trial asked gets the number the uninterrupted run gave it.
"""

from __future__ import annotations

from typing import Any


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


def truncate_study(storage: Any, study_name: str, keep: int) -> int | None:
    """Deletes the trials numbered ``>= keep`` of ``study_name`` in one transaction.

    Args:
      storage: an Optuna storage URL (``strategy.optuna_storage``).
      study_name: the study's name.
      keep: how many trials (numbers ``0 .. keep-1``) stay.

    Returns:
      the number of trials the study holds afterwards; ``None`` when the storage is not a
      database (nothing done) or the study does not exist.
    """
    rdb = rdb_of(storage)
    if rdb is None:
        return None
    from optuna.storages._rdb import models

    session = rdb.scoped_session()
    try:
        study = models.StudyModel.find_by_name(study_name, session)
        if study is None:
            session.rollback()
            return None
        query = session.query(models.TrialModel).filter(
            models.TrialModel.study_id == study.study_id
        )
        for trial in query.filter(models.TrialModel.number >= int(keep)).all():
            session.delete(trial)  # params, values, attributes cascade
        session.commit()
        return query.count()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
