"""The run loop's former home, kept so that ``from jaxhpo.experiment import ...`` keeps working.

The run lives in :mod:`jaxhpo.run`, one module per concern: ``checks`` and ``prepare``,
``loop`` (the host loop), ``update`` (a strategy's decision checked and applied), ``compiled``
(``train.compiled``), ``resume`` (checkpoints), ``book``, ``finish``, ``progress``, ``oom``.
"""

from jaxhpo.run.checks import OPT_DOMAINS, check_space, check_structure
from jaxhpo.run.finish import RunResult
from jaxhpo.run.loop import run
from jaxhpo.run.oom import OutOfMemoryError
from jaxhpo.run.prepare import (
    Prepared,
    make_bucket_task,
    make_strategy,
    make_task,
    opt_names,
    prepare,
)
from jaxhpo.run.resume import config_fingerprint
from jaxhpo.run.resume_dir import resume_run
from jaxhpo.run.update import apply_update, check_update

__all__ = [
    "OPT_DOMAINS",
    "OutOfMemoryError",
    "Prepared",
    "RunResult",
    "apply_update",
    "check_space",
    "check_structure",
    "check_update",
    "config_fingerprint",
    "make_bucket_task",
    "make_strategy",
    "make_task",
    "opt_names",
    "prepare",
    "resume_run",
    "run",
]
