"""The one check of an Optuna storage URL, before anything is built or written.

Every place that takes a storage URL -- ``report.optuna_storage``, ``strategy.storage``,
``jaxhpo report --to-optuna URL`` -- calls :func:`check_storage_url`. Optuna opens a URL string
as an SQLAlchemy database (``optuna.storages.get_storage``), so the URL is parsed with
``sqlalchemy.engine.make_url``, its dialect loaded and the dialect's database driver imported;
for SQLite the folder must exist and an existing file must be an SQLite database (its 16-byte
header is ``SQLite format 3\\0``; an empty file is a new database). A journal file
(``optuna.storages.JournalStorage``) is not a URL: given as an ``sqlite:///`` path it is refused
with that said. Errors are one line naming ``where``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SQLITE_HEADER = b"SQLite format 3\x00"
EXAMPLE = "e.g. sqlite:///study.db or postgresql+psycopg2://user@host/db"


def _url(url: Any, where: str) -> Any:
    """The parsed URL (``sqlalchemy.engine.URL``)."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"{where}: {url!r} is not a storage URL ({EXAMPLE})")
    try:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError
    except ImportError:  # pragma: no cover - sqlalchemy comes with optuna
        raise ValueError(
            f"{where}: needs sqlalchemy to open '{url}' (pip install optuna)"
        ) from None
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as e:
        raise ValueError(f"{where}: '{url}' is not a storage URL ({e}; {EXAMPLE})") from None


def _driver(parsed: Any, url: str, where: str) -> None:
    """Loads the URL's dialect and imports its database driver."""
    from sqlalchemy.exc import NoSuchModuleError

    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(
            f"{where}: unknown database '{parsed.drivername}' in '{url}' (SQLAlchemy has no "
            f"such dialect; {EXAMPLE})"
        ) from None
    load = getattr(dialect, "import_dbapi", None) or dialect.dbapi
    try:
        load()
    except ImportError as e:
        module = getattr(e, "name", None) or str(e)
        raise ValueError(
            f"{where}: the database driver of '{parsed.drivername}' is not installed (no module "
            f"{module!r}; pip install it, or name another driver as dialect+driver://)"
        ) from None


def _sqlite_file(database: str | None, url: str, where: str) -> None:
    """An SQLite database path: its folder exists; an existing file is a database."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return  # in memory, or an SQLite URI (its own parameters)
    path = Path(database)
    if path.is_dir():
        raise ValueError(f"{where}: {path} is a folder, not a database file (from '{url}')")
    if not path.parent.is_dir():
        raise ValueError(f"{where}: folder {path.parent} does not exist (from '{url}')")
    if not path.exists() or path.stat().st_size == 0:
        return  # a new database (SQLite writes its header on the first write)
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError as e:
        raise ValueError(f"{where}: cannot read {path} ({e.strerror})") from None
    if head != SQLITE_HEADER:
        what = "an Optuna journal file" if head.lstrip().startswith(b"{") else "not an SQLite file"
        raise ValueError(
            f"{where}: {path} is {what} (no 'SQLite format 3' header), not a database; name a "
            "new file or an SQLite database (a journal storage is not a URL)"
        )


def check_storage_url(url: Any, where: str) -> None:
    """Refuses a storage URL that Optuna could not open, before anything is built or written.

    Args:
      url: an Optuna storage URL (an SQLAlchemy database URL).
      where: the field or option it came from (``report.optuna_storage``, ``--to-optuna``).

    Raises:
      ValueError: one line naming ``where``: not a URL, an unknown dialect, a database driver
        that is not installed, an SQLite path whose folder is missing, that is a folder or that
        is a file but not an SQLite database.
    """
    parsed = _url(url, where)
    _driver(parsed, url, where)
    if parsed.get_backend_name() == "sqlite":
        _sqlite_file(parsed.database, url, where)


def check_optuna(where: str) -> None:
    """Refuses a storage option when optuna itself is not installed."""
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise ValueError(f"{where}: needs optuna (pip install 'jaxhpo[optuna]')")
