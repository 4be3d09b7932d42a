"""Importable references to user objects (``module:Name`` or ``path/to/file.py:Name``).

A run of a user's task or optimizer factory records such a reference in its ``config.yaml`` so
that ``jaxhpo run RUN_DIR/config.yaml`` and ``jaxhpo resume RUN_DIR`` can build it again; a file
moved since, next to the run directory, is found there (:func:`looking_in`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Set to 1 (or ``jaxhpo --debug``) to see the traceback behind a one-line error of user code.
DEBUG_ENV = "JAXHPO_DEBUG"

#: Where a missing file of a reference is looked for by its name (:func:`looking_in`).
_FOLDERS: tuple[Path, ...] = ()


@contextlib.contextmanager
def looking_in(*folders: str | Path) -> Iterator[None]:
    """While open, a ``file.py:Name`` reference whose file is missing (a task file moved next
    to its run directory) names the file of the same name in the first of ``folders`` that
    holds one: :func:`resolve` imports it, :func:`absolute` names it. ``jaxhpo resume RUN_DIR``
    looks in ``RUN_DIR`` and its parent, ``jaxhpo run RUN_DIR/config.yaml`` in the config
    file's folder and its parent."""
    global _FOLDERS
    before = _FOLDERS
    _FOLDERS = tuple(Path(f).expanduser().resolve() for f in folders) + before
    try:
        yield
    finally:
        _FOLDERS = before


def _candidates(path: Path) -> list[Path]:
    """``path``, then a file of its name in each folder of :func:`looking_in`."""
    return [path, *(folder / path.name for folder in _FOLDERS if folder / path.name != path)]


def _found(path: Path) -> Path | None:
    return next((p for p in _candidates(path) if p.is_file()), None)


def is_reference(text: str) -> bool:
    """Whether ``text`` looks like ``module:Name`` (registry names have no colon)."""
    return isinstance(text, str) and ":" in text


def reference(obj: Any) -> str:
    """The reference of a class or function: ``module:qualname``; for one defined in a script
    run as ``__main__``, ``/absolute/path/script.py:qualname``.

    Raises:
      ValueError: for objects defined inside a function (no importable name).
    """
    qual = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    module = getattr(obj, "__module__", None) or type(obj).__module__
    if "<locals>" in qual or "<lambda>" in qual:
        raise ValueError(
            f"{qual}: defined inside a function or a lambda, so a run cannot name it in its "
            "config.yaml; define it at module level"
        )
    top = module.split(".")[0]
    if top != module and getattr(sys.modules.get(top), qual, None) is obj:
        module = top  # optax._src.alias:adamw -> optax:adamw
    file = getattr(sys.modules.get(module), "__file__", None)
    if (
        module != "__main__"
        and file
        and not any(part in ("site-packages", "dist-packages") for part in Path(file).parts)
    ):
        module = "__main__"  # a module of the user's own: name its file, importable anywhere
    if module == "__main__":
        path = file if file else getattr(sys.modules["__main__"], "__file__", None)
        if not path:
            raise ValueError(
                f"{qual}: defined in an interactive session, so a run cannot name it in its "
                "config.yaml; define it in a module or script file"
            )
        module = str(Path(path).resolve())
    return f"{module}:{qual}"


def absolute(text: Any) -> Any:
    """A ``path/to/file.py:Name`` reference with its file made absolute (from the current
    folder, ``~`` expanded), so that a run directory names it from anywhere (``jaxhpo resume
    RUN_DIR`` in another folder); a missing file found by :func:`looking_in` is named where it
    was found. ``module:Name`` and anything else unchanged."""
    if not is_reference(text):
        return text
    module_name, _, qual = text.rpartition(":")
    if not module_name.endswith(".py"):
        return text
    path = Path(module_name).expanduser()
    return f"{(_found(path) or path).resolve()}:{qual}"


def resolve(text: str, where: str) -> Any:
    """The object a reference names; errors are one line naming ``where`` (a config field)."""
    module_name, _, qual = text.rpartition(":")
    if not module_name or not qual:
        raise ValueError(f"{where}: '{text}' is not of the form module:Name or file.py:Name")
    try:
        if module_name.endswith(".py"):
            path = _found(Path(module_name).expanduser())
            if path is None:
                tried = [str(p) for p in _candidates(Path(module_name).expanduser())]
                tried = ", ".join(tried[:-1]) + " or " + tried[-1] if len(tried) > 1 else tried[0]
                raise ValueError(f"{where}: no file {tried} (from '{text}')")
            name = f"jaxhpo_user_{abs(hash(str(path.resolve())))}"
            module = sys.modules.get(name)
            if module is None:
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - any import failure is the user's file: one line
        why = f"{type(e).__name__}: {e}"
        raise ValueError(f"{where}: cannot import '{module_name}' ({why})") from None
    obj = module
    for part in qual.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{where}: '{module_name}' has no '{qual}'")
        obj = getattr(obj, part)
    return obj


def debug() -> bool:
    """Whether tracebacks of user code are wanted (``JAXHPO_DEBUG=1`` or ``jaxhpo --debug``)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _where_defined(fn: Any) -> tuple[str, int]:
    """The file and first line of a function (or of a class's code), ``("?", 0)`` if unknown."""
    fn = inspect.unwrap(getattr(fn, "__func__", fn))
    try:
        return inspect.getsourcefile(fn) or "?", inspect.getsourcelines(fn)[1]
    except (TypeError, OSError):
        return "?", 0


def user_error(where: str, fn: Any, error: BaseException) -> ValueError:
    """A one-line error for an exception raised by the user's ``fn``: the field, the function,
    the file and line where it raised (the deepest frame in ``fn``'s file), the exception."""
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    file, line = _where_defined(fn)
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == file:
            line = frame.lineno or line
    text = str(error).strip().splitlines()
    why = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    hint = "" if debug() else f" (the traceback: {DEBUG_ENV}=1 or jaxhpo --debug)"
    return ValueError(f"{where}: {name} ({file}:{line}) raised {why}{hint}")


def call_user(where: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; anything it raises becomes :func:`user_error` (the original
    chained under :func:`debug`)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - user code: any exception is one line naming it
        raise user_error(where, fn, e) from (e if debug() else None)
