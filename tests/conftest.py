"""Shared tiny fixtures: small models and tasks so the default suite stays fast on 2 CPU cores."""

from __future__ import annotations

import gc
import os
import tempfile

# XLA:CPU spends most of a small test's time in LLVM optimisation of the compiled program
# (22 s -> 3 s for a tiny population segment). Tests compile many small programs and run them
# for a few steps, so they use the fastest backend optimisation level. Runs and benchmarks keep
# XLA's default. Set XLA_FLAGS yourself to override.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
# Runs cache compiled programs (jaxhpo/compile_cache.py); the tests keep theirs in a folder of
# their own, never in the user's cache.
os.environ.setdefault(
    "JAXHPO_COMPILE_CACHE",
    os.path.join(tempfile.gettempdir(), f"jaxhpo-test-xla-cache-{os.getuid()}"),
)

import jax  # noqa: E402
import pytest  # noqa: E402

from jaxhpo.tasks import LanguageModelTask

jax.config.update("jax_numpy_rank_promotion", "raise")

TINY_MODEL = {"num_layers": 1, "num_heads": 2, "d_model": 16, "d_ff": 32}
#: The same tiny LM as config overrides, for runs through the CLI / run loop.
TINY_LM_OVERRIDES = [
    "task.seq_len=16",
    "task.batch_size=4",
    "task.eval_batches=2",
    "task.max_bytes=200000",
    *(f"model.{k}={v}" for k, v in TINY_MODEL.items()),
]


def free_compiled_programs() -> None:
    """Drops every compiled program jax holds in this process. Each XLA:CPU executable keeps
    about three memory maps, and Linux allows a process 65,530 (vm.max_map_count): one process
    of the whole suite ran out of them at 74% and crashed inside XLA (a segmentation fault or
    an abort in test_population.py, while compiling or caching)."""
    jax.clear_caches()
    gc.collect()


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs_after_each_module():
    yield
    free_compiled_programs()


@pytest.fixture(scope="session")
def lm_task() -> LanguageModelTask:
    return LanguageModelTask(
        corpus=None, max_bytes=200_000, seq_len=16, batch_size=4, eval_batches=2, model=TINY_MODEL
    )


@pytest.fixture
def no_compile(monkeypatch):
    """Fails the test if a population is ever initialised or trained (the first compile):
    the error under test must come before anything is built."""
    from jaxhpo.population import Population

    def boom(*args, **kwargs):
        raise AssertionError("a population was built/compiled before the error")

    monkeypatch.setattr(Population, "init", boom)
    monkeypatch.setattr(Population, "train_segment", boom)
