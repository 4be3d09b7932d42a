"""JAX's persistent compilation cache, on by default for runs.

A second ``jaxhpo run`` of the same model and settings loads its compiled programs from disk
instead of compiling them again (changing hyperparameter *values* never changes a program). The
cache lives in ``$XDG_CACHE_HOME/jaxhpo/xla`` (``~/.cache/jaxhpo/xla``).

* ``train.compile_cache=false`` turns it off for a run;
* ``JAXHPO_COMPILE_CACHE=off`` (or ``0``, ``false``) turns it off for the process, and
  ``JAXHPO_COMPILE_CACHE=/some/dir`` moves it.

JAX's own ``jax_compilation_cache_dir``, when the user set it, wins.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

OFF = ("0", "off", "false", "no")


def cache_dir() -> Path | None:
    """Where compiled programs are cached; ``None`` when ``JAXHPO_COMPILE_CACHE`` turns it off."""
    env = os.environ.get("JAXHPO_COMPILE_CACHE", "").strip()
    if env.lower() in OFF:
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxhpo" / "xla"


def enable(setting: bool = True) -> str | None:
    """Turns the cache on (every program, however fast it compiled); returns its folder, or
    ``None`` when it is off. A cache folder that cannot be created leaves it off."""
    current = jax.config.jax_compilation_cache_dir
    if current:
        return str(current)
    path = cache_dir() if setting else None
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    # JAX decides at its first compile whether a persistent cache is used; this process may
    # have compiled already (building the task), so let it decide again.
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()
    return str(path)
