"""JAX's persistent compilation cache for runs (jaxhpo/compile_cache.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import pytest

from jaxhpo import compile_cache

PROGRAM = textwrap.dedent(
    """
    import jax, jax.numpy as jnp
    from jaxhpo import compile_cache
    jax.jit(lambda x: x + 1)(jnp.ones(2))  # a compile before the cache is on
    print(compile_cache.enable())
    f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
    f(jnp.ones((8, 8))).block_until_ready()
    """
)


def _run(env: dict) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_second_process_compiles_nothing_new(tmp_path):
    folder = tmp_path / "xla"
    assert _run({"JAXHPO_COMPILE_CACHE": str(folder)}) == str(folder)
    first = sorted(p.name for p in folder.iterdir())
    assert first  # the program was written to the cache
    _run({"JAXHPO_COMPILE_CACHE": str(folder)})
    assert sorted(p.name for p in folder.iterdir()) == first  # loaded, not compiled again


@pytest.mark.parametrize("value", ["off", "0", "false"])
def test_the_environment_turns_it_off(monkeypatch, value):
    monkeypatch.setenv("JAXHPO_COMPILE_CACHE", value)
    assert compile_cache.cache_dir() is None


def test_default_folder_is_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXHPO_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.cache_dir() == tmp_path / "jaxhpo" / "xla"


def test_the_setting_turns_it_off():
    if jax.config.jax_compilation_cache_dir:  # set by an earlier run in this process
        pytest.skip("the cache is already on in this process")
    assert compile_cache.enable(False) is None
    assert not jax.config.jax_compilation_cache_dir


def _maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="Linux memory maps")
def test_suite_frees_compiled_programs_so_the_process_keeps_its_memory_maps():
    """tests/conftest.py frees jax's compiled programs after each test module: the whole suite
    in one process once ran out of Linux's 65,530 memory maps and crashed inside XLA."""
    from conftest import free_compiled_programs

    free_compiled_programs()
    before = _maps()
    for i in range(100):
        jax.jit(lambda x, i=i: x * i + i)(jax.numpy.ones(i + 1)).block_until_ready()
    peak = _maps()
    assert peak > before + 100  # each program holds maps of its own
    free_compiled_programs()
    assert _maps() - before < (peak - before) / 3  # most of them given back
