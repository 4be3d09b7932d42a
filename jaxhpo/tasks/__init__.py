"""Tasks: a model factory + a deterministic data source + loss + metrics."""

from jaxhpo.tasks.base import TASK_DEFAULTS, TASK_DOMAINS, TASK_HPARAMS, Task
from jaxhpo.tasks.brackets import BracketsTask
from jaxhpo.tasks.finetune import FinetuneTask
from jaxhpo.tasks.lm import LanguageModelTask
from jaxhpo.tasks.mlm import MaskedLanguageModelTask
from jaxhpo.tasks.modular import ModularArithmeticTask
from jaxhpo.tasks.toy import ToyQuadraticTask

TASKS = {
    "lm": LanguageModelTask,
    "modular": ModularArithmeticTask,
    "brackets": BracketsTask,
    "pbt_toy": ToyQuadraticTask,
    "mlm": MaskedLanguageModelTask,
    "finetune": FinetuneTask,
}

__all__ = [
    "TASKS",
    "TASK_DEFAULTS",
    "TASK_DOMAINS",
    "TASK_HPARAMS",
    "BracketsTask",
    "FinetuneTask",
    "LanguageModelTask",
    "MaskedLanguageModelTask",
    "ModularArithmeticTask",
    "ToyQuadraticTask",
    "Task",
]
