"""Running a study, one module per concern.

::

    checks.py     config checks that need nothing built (space, structure, strategy.* fields)
    prepare.py    config -> task, space, strategy, population; every check before a compile
    loop.py       the host loop: segments -> evaluate -> strategy -> log
    update.py     a strategy's decision checked and applied (host, compiled loop, simulate)
    compiled.py   train.compiled: the whole run as one lax.scan program
    resume.py     checkpoints: save, restore, what a resumed loop starts from
    resume_dir.py ``jaxhpo resume RUN_DIR``: the checks, then the loop from a checkpoint
    validate.py   every name of a config resolved against the registries, in one pass
    book.py       what the loop carries and records; members.csv's rows
    finish.py     test evaluation, ensemble, members.csv, report
    progress.py   the progress bar and notices
    oom.py        out-of-memory errors that say what to change

Names are imported on first use, so that importing one module (``jaxhpo.run.update`` from
:mod:`jaxhpo.simulate`) does not import the others.
"""

from __future__ import annotations

from jaxhpo._lazy import lazy_exports

_EXPORTS = {
    "OutOfMemoryError": "jaxhpo.run.oom",
    "Prepared": "jaxhpo.run.prepare",
    "RunResult": "jaxhpo.run.finish",
    "apply_update": "jaxhpo.run.update",
    "check_update": "jaxhpo.run.update",
    "config_fingerprint": "jaxhpo.run.resume",
    "prepare": "jaxhpo.run.prepare",
    "resume_run": "jaxhpo.run.resume_dir",
    "run": "jaxhpo.run.loop",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("jaxhpo.run", _EXPORTS, globals())
