"""``jaxhpo data prepare``: a corpus of any size, tokenized once into memory-mappable files.

::

    DATA_DIR/
      train.bin  val.bin  test.bin   token ids, uint16 (vocabulary <= 65536) or uint32, raw
      tokenizer.json                 the BPE tokenizer (none for bytes)
      manifest.json                  tokenizer, dtype, tokens and sha256 of each split, corpus
      train.bin.verified ...         stamps: each split hashed once (jaxhpo.data.manifest)

The corpus (a file, or a folder's text files, sorted) is read in blocks cut at a line end, so
memory stays bounded; tokens are appended to one file, then the last ``val_frac`` and
``test_frac`` of them are copied to ``val.bin`` / ``test.bin`` and the rest becomes
``train.bin`` (a contiguous split, as the byte-level ``lm`` task does). A BPE tokenizer is
trained on the first ``sample_bytes`` of the corpus. Progress lines go to ``log``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from jaxhpo.data import tokenizer as tokenizers
from jaxhpo.data.manifest import BLOCK_BYTES, MANIFEST, SPLITS, read_manifest, scan, write_stamp
from jaxhpo.tasks.lm import TEXT_SUFFIXES, default_corpus_files

__all__ = ["MANIFEST", "SPLITS", "check_arguments", "prepare_data", "read_manifest"]

#: The largest BPE vocabulary ``--vocab-size`` takes. ``tokenizers`` sizes its trainer by the
#: vocabulary up front (``--vocab-size 1000000000`` aborted allocating 71 GB), and a vocabulary
#: over a million tokens is beyond what a corpus sample can fill or a model's embedding holds.
MAX_BPE_VOCAB = 2**20


def corpus_files(corpus: str | None) -> list[Path]:
    """The corpus's files: one file, a folder's text files (sorted), or the stdlib sources."""
    if not corpus:
        return default_corpus_files()
    p = Path(corpus).expanduser()
    if not p.exists():
        raise ValueError(f"CORPUS: path does not exist: {p}")
    if p.is_file():
        return [p]
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
    if not files:
        raise ValueError(f"CORPUS: folder has no text files ({', '.join(TEXT_SUFFIXES)}): {p}")
    return files


def read_blocks(files: list[Path], block: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The corpus as blocks of about ``block`` bytes, each cut after a newline (or whole)."""
    for f in files:
        rest = b""
        with open(f, "rb") as fh:
            while True:
                data = fh.read(block)
                if not data:
                    break
                data = rest + data
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    rest = data
                    continue
                rest = data[cut:]
                yield data[:cut]
        if rest:
            yield rest


def _lines(block: bytes) -> list[str]:
    return block.decode("utf-8", errors="replace").splitlines(keepends=True)


def _sample(files: list[Path], sample_bytes: int) -> Iterator[str]:
    seen = 0
    for block in read_blocks(files):
        yield from _lines(block)
        seen += len(block)
        if seen >= sample_bytes:
            return


def _writable_parent(out: Path) -> None:
    """``--out``: a folder (or a path whose nearest existing parent is a writable folder)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} exists and is not a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(f"--out: cannot write into {parent}")


def check_arguments(
    corpus: str | None,
    out: str | Path,
    tokenizer: str,
    vocab_size: int,
    val_frac: float,
    test_frac: float,
    sample_bytes: int,
) -> list[Path]:
    """Every argument of :func:`prepare_data`, checked before anything is created; returns the
    corpus's files.

    Raises:
      ValueError: one line naming the argument.
    """
    if tokenizer not in tokenizers.TOKENIZERS:
        raise ValueError(f"--tokenizer: unknown '{tokenizer}' (choose from bytes, bpe)")
    low = 257 if tokenizer == "bpe" else 1  # bytes: ignored (its vocabulary is 256)
    if not (isinstance(vocab_size, int) and low <= vocab_size <= MAX_BPE_VOCAB):
        raise ValueError(
            f"--vocab-size: must be in [{low}, 2**20] for {tokenizer} (bpe: the 256 byte "
            f"symbols plus at least one merge; the tokenizer sizes its trainer by the "
            f"vocabulary, and more than 2**20 tokens is beyond what a corpus sample fills), "
            f"got {vocab_size}"
        )
    for name, frac in (("--val-frac", val_frac), ("--test-frac", test_frac)):
        if not (isinstance(frac, int | float) and 0 < frac < 0.5):
            raise ValueError(f"{name}: must be in (0, 0.5), got {frac}")
    if tokenizer == "bpe" and not (math.isfinite(sample_bytes) and sample_bytes > 0):
        raise ValueError(f"--sample-mb: must be > 0, got {sample_bytes / 2**20:g}")
    files = corpus_files(corpus)
    total = sum(f.stat().st_size for f in files)
    if total == 0:
        raise ValueError(f"CORPUS: {corpus} holds no bytes")
    if tokenizer == "bytes":  # a byte is a token: the split is known before reading
        _split_sizes(total, val_frac, test_frac)
    _writable_parent(Path(out).expanduser())
    return files


def prepare_data(
    corpus: str | None,
    out: str | Path,
    *,
    tokenizer: str = "bytes",
    vocab_size: int = 8192,
    val_frac: float = 0.05,
    test_frac: float = 0.05,
    sample_bytes: int = 64 << 20,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Tokenizes ``corpus`` into ``out`` (see the module docstring); returns the manifest.

    Every argument is checked before ``out`` is created or anything is printed; on a refusal
    after that (too few tokens), ``tokens.tmp`` is removed, and ``out`` too if this call made it.

    Raises:
      ValueError: one line naming the argument (CORPUS, --tokenizer, --vocab-size, --out, ...).
    """
    args = (corpus, out, tokenizer, vocab_size, val_frac, test_frac, sample_bytes)
    files = check_arguments(*args)
    out = Path(out).expanduser()
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    ok = False
    try:
        manifest = _prepare(
            files,
            corpus,
            out,
            tokenizer,
            vocab_size,
            val_frac,
            test_frac,
            sample_bytes,
            log or (lambda s: None),
        )
        ok = True
    finally:
        (out / "tokens.tmp").unlink(missing_ok=True)
        if not ok and made:
            shutil.rmtree(out, ignore_errors=True)
    return manifest


def _prepare(files, corpus, out, tokenizer, vocab_size, val_frac, test_frac, sample_bytes, say):
    total = sum(f.stat().st_size for f in files)
    say(f"prepare: {len(files)} file(s), {total / 1e6:,.1f} MB -> {out}")
    t0 = time.perf_counter()
    if tokenizer == "bpe":
        tok = tokenizers.train_bpe(_sample(files, sample_bytes), vocab_size)
        say(f"prepare: BPE of {tok.vocab_size} tokens trained in {time.perf_counter() - t0:.1f}s")
    else:
        tok = tokenizers.ByteTokenizer()
    dtype = tokenizers.token_dtype(tok.vocab_size)
    n, done, corpus_hash = _encode_all(files, tok, dtype, out / "tokens.tmp", total, say)
    manifest = _split(out, n, dtype, val_frac, test_frac)
    manifest.update(
        format=1,
        dtype=dtype.name,
        tokenizer={"kind": tok.kind, "vocab_size": tok.vocab_size, "file": tok.save(out)},
        corpus={
            "path": str(corpus or "<python stdlib>"),
            "files": len(files),
            "bytes": done,
            "sha256": corpus_hash,
        },
        seconds=round(time.perf_counter() - t0, 2),
    )
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    counts = ", ".join(f"{s} {manifest['splits'][s]['tokens']:,}" for s in SPLITS)
    say(f"prepare: {done:,} bytes -> {n:,} tokens ({counts}) in {manifest['seconds']}s")
    return manifest


def _encode_all(files, tok, dtype, path: Path, total: int, say) -> tuple[int, int, str]:
    """Appends the corpus's tokens to ``path``; returns (tokens, bytes read, corpus sha256)."""
    n = done = 0
    corpus_hash = hashlib.sha256()
    t0 = last = time.perf_counter()
    with open(path, "wb") as fh:
        for block in read_blocks(files):
            corpus_hash.update(block)
            arr = tok.encode_block(block).astype(dtype)
            fh.write(arr.tobytes())
            n += len(arr)
            done += len(block)
            now = time.perf_counter()
            if now - last > 2.0:
                rate = done / 1e6 / (now - t0)
                mb = f"{done / 1e6:,.1f}/{total / 1e6:,.1f} MB"
                say(f"prepare: {mb}, {n:,} tokens, {rate:.1f} MB/s")
                last = now
    return n, done, corpus_hash.hexdigest()


def _copy_out(src: np.memmap, lo: int, hi: int, path: Path) -> None:
    """Writes ``src[lo:hi]`` to ``path`` in blocks."""
    with open(path, "wb") as fh:
        for a in range(lo, hi, BLOCK_BYTES):
            fh.write(np.asarray(src[a : min(hi, a + BLOCK_BYTES)]).tobytes())


def _split_sizes(n: int, val_frac: float, test_frac: float) -> tuple[int, int, int]:
    """Tokens of train, val and test; at least 2 each."""
    n_val, n_test = int(n * val_frac), int(n * test_frac)
    n_train = n - n_val - n_test
    if min(n_train, n_val, n_test) < 2:
        raise ValueError(f"CORPUS: {n} tokens are too few to split into train/val/test")
    return n_train, n_val, n_test


def _split(out: Path, n: int, dtype: np.dtype, val_frac: float, test_frac: float) -> dict:
    """Cuts ``tokens.tmp`` into train/val/test files (val and test copied from its end, train
    the file itself, truncated)."""
    n_train, n_val, n_test = _split_sizes(n, val_frac, test_frac)
    tmp = out / "tokens.tmp"
    src = np.memmap(tmp, dtype=dtype, mode="r", shape=(n,))
    _copy_out(src, n_train, n_train + n_val, out / "val.bin")
    _copy_out(src, n_train + n_val, n, out / "test.bin")
    del src
    os.truncate(tmp, n_train * dtype.itemsize)
    os.replace(tmp, out / "train.bin")
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    shas = {}
    for s in SPLITS:  # hashed once, and stamped: a run's check of the folder re-reads nothing
        shas[s], top = scan(out / f"{s}.bin", dtype)
        write_stamp(out / f"{s}.bin", shas[s], top)
    return {
        "splits": {s: {"file": f"{s}.bin", "tokens": sizes[s], "sha256": shas[s]} for s in SPLITS}
    }
