"""The manifest of a prepared data folder, checked whole before a run builds anything.

:func:`read_manifest` refuses, in one line naming the file or the key: a folder without
``manifest.json``; a manifest that is not JSON; a missing or mistyped key; a split file that is
missing, empty or not the size its token count says; a tokenizer whose vocabulary is larger
than the manifest's ``tokenizer.vocab_size``; a token id at or above it; a split whose bytes do
not match the manifest's sha256.

**Verified once.** Hashing costs about 0.7 s per GB (sha256 on this machine, file in the page
cache; more when it is read from disk). A split that hashed to the manifest's sha256 gets a
stamp beside it, ``train.bin.verified`` (size, mtime and ctime in ns, sha256, largest token
id); a later check reads the stamp and re-hashes only when the file's size or times changed
(a few microseconds: one ``stat``). A read-only folder gets no stamp and is hashed every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
DTYPES = ("uint8", "uint16", "uint32")
TOKENIZER_KINDS = ("bytes", "bpe")
STAMP_SUFFIX = ".verified"
BLOCK_BYTES = 4 << 20
_SHA = re.compile(r"^[0-9a-f]{64}$")
PREPARE = "prepare it again with `jaxhpo data prepare CORPUS --out DIR`"


def _key(manifest: dict, dotted: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``manifest["a"]["b"]`` for ``dotted="a.b"``, of type ``kind``; one line naming the key."""
    value: Any = manifest
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(value, dict) or part not in value:
            missing = ".".join(parts[: i + 1])
            raise ValueError(f"{where}: missing key '{missing}' ({PREPARE})")
        value = value[part]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ValueError(f"{where}: key '{dotted}' must be a {names}, got {value!r}")
    return value


def _load(path: Path, where: str) -> dict:
    try:
        manifest = json.loads(path.read_bytes())
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{where}: {path} is not JSON ({e.msg} at line {e.lineno} column {e.colno}); {PREPARE}"
        ) from None
    except (UnicodeDecodeError, OSError) as e:
        raise ValueError(f"{where}: cannot read {path} as JSON ({e}); {PREPARE}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{where}: {path} is not a JSON object ({PREPARE})")
    return manifest


def check_schema(manifest: dict, where: str) -> None:
    """Every key the runs read, with its type and range."""
    dtype = _key(manifest, "dtype", str, where)
    if dtype not in DTYPES:
        raise ValueError(f"{where}: key 'dtype' must be one of {', '.join(DTYPES)}, got {dtype!r}")
    kind = _key(manifest, "tokenizer.kind", str, where)
    if kind not in TOKENIZER_KINDS:
        raise ValueError(
            f"{where}: key 'tokenizer.kind' must be one of {', '.join(TOKENIZER_KINDS)}, "
            f"got {kind!r}"
        )
    vocab = _key(manifest, "tokenizer.vocab_size", int, where)
    if not 1 <= vocab <= np.iinfo(dtype).max + 1:
        raise ValueError(
            f"{where}: key 'tokenizer.vocab_size' must be in [1, {np.iinfo(dtype).max + 1}] "
            f"for dtype {dtype}, got {vocab}"
        )
    if kind == "bpe":
        _key(manifest, "tokenizer.file", str, where)
    _key(manifest, "corpus.bytes", int, where)
    for s in SPLITS:
        _key(manifest, f"splits.{s}.file", str, where)
        if _key(manifest, f"splits.{s}.tokens", int, where) < 0:
            raise ValueError(f"{where}: key 'splits.{s}.tokens' must be >= 0")
        if not _SHA.match(_key(manifest, f"splits.{s}.sha256", str, where)):
            raise ValueError(f"{where}: key 'splits.{s}.sha256' is not a sha256 hex digest")


def tokenizer_vocab(folder: Path, spec: dict, where: str) -> int:
    """The vocabulary of the folder's tokenizer (256 for bytes; tokenizer.json's for bpe)."""
    if spec["kind"] == "bytes":
        return 256
    path = folder / spec["file"]
    if not path.is_file():
        raise ValueError(f"{where}: no tokenizer file {path} ({PREPARE})")
    try:
        from tokenizers import Tokenizer

        return int(Tokenizer.from_file(str(path)).get_vocab_size())
    except Exception as e:  # noqa: BLE001 - any failure to parse the file: one line naming it
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{where}: {path} is not a tokenizer file ({why})") from None


def scan(path: Path, dtype: np.dtype) -> tuple[str, int]:
    """One pass over a token file: its sha256 and its largest token id."""
    h, top = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(BLOCK_BYTES):
            h.update(chunk)
            top = max(top, int(np.frombuffer(chunk, dtype).max()))
    return h.hexdigest(), top


def _identity(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def write_stamp(path: Path, sha256: str, max_token: int) -> None:
    """Records that ``path`` (as it is now) hashed to ``sha256``; skipped if not writable."""
    stamp = {**_identity(path), "sha256": sha256, "max_token": int(max_token)}
    tmp = path.with_name(path.name + STAMP_SUFFIX + ".tmp")
    try:
        tmp.write_text(json.dumps(stamp))
        os.replace(tmp, path.with_name(path.name + STAMP_SUFFIX))
    except OSError:
        tmp.unlink(missing_ok=True)


def _stamped(path: Path, sha256: str) -> int | None:
    """The largest token id a valid stamp records, or None (no stamp, or the file changed)."""
    try:
        stamp = json.loads(path.with_name(path.name + STAMP_SUFFIX).read_text())
        same = all(stamp[k] == v for k, v in _identity(path).items())
        if same and stamp["sha256"] == sha256:
            return int(stamp["max_token"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def verify_split(path: Path, sha256: str, dtype: np.dtype, where: str) -> int:
    """The split's largest token id, after checking its bytes against ``sha256`` (once: see
    the module docstring)."""
    top = _stamped(path, sha256)
    if top is not None:
        return top
    got, top = scan(path, dtype)
    if got != sha256:
        raise ValueError(
            f"{where}: {path} does not match the manifest's sha256 (it is {got[:12]}..., the "
            f"manifest says {sha256[:12]}...): the file changed after it was prepared; {PREPARE}"
        )
    write_stamp(path, got, top)
    return top


def _check_split(folder: Path, manifest: dict, s: str, where: str, verify: bool) -> None:
    info, dtype = manifest["splits"][s], np.dtype(manifest["dtype"])
    f = folder / info["file"]
    want = info["tokens"] * dtype.itemsize
    if not f.is_file():
        raise ValueError(f"{where}: split file {f} is missing ({PREPARE})")
    size = f.stat().st_size
    if size == 0 or info["tokens"] == 0:
        raise ValueError(f"{where}: split '{s}' ({f}) is empty (0 tokens); {PREPARE}")
    if size != want:
        raise ValueError(f"{where}: {f} is missing or not {want} bytes ({size}); {PREPARE}")
    if not verify:
        return
    top = verify_split(f, info["sha256"], dtype, where)
    vocab = manifest["tokenizer"]["vocab_size"]
    if top >= vocab:
        raise ValueError(
            f"{where}: {f} holds token id {top}, outside the manifest's tokenizer.vocab_size "
            f"{vocab} (every id must be < vocab_size); {PREPARE}"
        )


def read_manifest(folder: str | Path, where: str = "task.data", verify: bool = True) -> dict:
    """The manifest of a prepared data folder, checked (see the module docstring).

    Args:
      folder: the prepared data folder.
      where: the field or argument that named it, first in every error.
      verify: also check each split's sha256 and token ids (once per file version).

    Raises:
      ValueError: one line naming ``where`` and the file or key.
    """
    folder = Path(folder).expanduser()
    path = folder / MANIFEST
    if not path.is_file():
        raise ValueError(
            f"{where}: {folder} is not a prepared data folder (no {MANIFEST}; make one with "
            "`jaxhpo data prepare CORPUS --out DIR`)"
        )
    manifest = _load(path, where)
    check_schema(manifest, f"{where}: {path}")
    vocab = manifest["tokenizer"]["vocab_size"]
    need = tokenizer_vocab(folder, manifest["tokenizer"], where)
    if vocab < need:
        raise ValueError(
            f"{where}: {path}: tokenizer.vocab_size {vocab} is smaller than the tokenizer's "
            f"vocabulary ({need} tokens); {PREPARE}"
        )
    for s in SPLITS:
        _check_split(folder, manifest, s, where, verify)
    return manifest
