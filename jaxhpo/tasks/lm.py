"""Byte-level language modelling over a text corpus.

The corpus is any text file (or folder of ``*.txt``/``*.py``/``*.md`` files) the user names; by
default it is the Python standard library's own top-level ``*.py`` source files, which exist
offline on every machine with Python (their exact bytes depend on the Python version; the run
directory records the corpus size and a hash). Bytes are tokens (vocabulary 256). The corpus is
split contiguously into train / validation / test (90 / 5 / 5 %); training windows start at random
offsets drawn from the data seed and the step, validation and test use fixed, evenly spaced
windows.
"""

from __future__ import annotations

import hashlib
import math
import sysconfig
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo.models import TransformerConfig
from jaxhpo.notices import notice
from jaxhpo.tasks.base import (
    Batch,
    Splits,
    Task,
    check_folds,
    data_key,
    stack_folds,
    to_device,
)

TEXT_SUFFIXES = (".txt", ".py", ".md", ".rst", ".tex", ".json", ".csv", ".html")


def default_corpus_files() -> list[Path]:
    """The Python standard library's top-level source files, sorted by name."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(stdlib.glob("*.py"))


#: Bytes of the default corpus (the stdlib sources) read when ``task.max_bytes`` is unset.
DEFAULT_CORPUS_BYTES = 2_000_000
#: Bytes of a named corpus read when ``task.max_bytes`` is unset: the whole corpus up to this
#: (256 MiB of uint8 on the device; a 24 MB corpus is read whole).
NAMED_CORPUS_CAP = 256 * 1024**2


def corpus_limit(path: str | None, max_bytes: int | None) -> int:
    """The bytes :func:`load_corpus` reads at most: ``max_bytes`` when given, else the first
    :data:`DEFAULT_CORPUS_BYTES` of the default corpus or a named corpus whole up to
    :data:`NAMED_CORPUS_CAP`."""
    if max_bytes is not None:
        return int(max_bytes)
    return DEFAULT_CORPUS_BYTES if path is None or path == "" else NAMED_CORPUS_CAP


def load_corpus(
    path: str | None, max_bytes: int | None = None, *, where: str = "task.corpus"
) -> np.ndarray:
    """Reads the corpus as uint8 bytes (at most :func:`corpus_limit` of them: with
    ``max_bytes=None`` a named corpus is read whole when it fits; one cut short says so on
    stderr, with the bytes used and the corpus's size).

    Raises:
      ValueError: (one line, naming ``where``) if the path does not exist or holds no text.
    """
    files = corpus_files(path, where)
    limit = corpus_limit(path, max_bytes)
    chunks, total = [], 0
    for f in files:
        try:
            with open(f, "rb") as fh:  # never more than needed: the file may be huge
                data = fh.read(limit - total)
        except OSError as e:
            raise ValueError(f"{where}: cannot read {f}: {e.strerror}") from None
        chunks.append(data)
        total += len(data)
        if total >= limit:
            break
    raw = b"".join(chunks)[:limit]
    if len(raw) == 0:
        raise ValueError(f"{where}: corpus is empty: {path}")
    size = corpus_size(path, where) if path else len(raw)
    if size > len(raw):
        why = (
            f"task.max_bytes={max_bytes:,}"
            if max_bytes is not None
            else f"task.max_bytes unset: a named corpus is read up to {limit:,} bytes"
        )
        notice(
            f"{where}: training on the first {len(raw):,} of the corpus's {size:,} bytes "
            f"({why}; raise task.max_bytes to read more)"
        )
    return np.frombuffer(raw, dtype=np.uint8).copy()


def corpus_size(path: str | None, where: str = "task.corpus") -> int:
    """Bytes of the whole corpus (every file :func:`load_corpus` would read)."""
    return sum(f.stat().st_size for f in corpus_files(path, where))


def corpus_files(path: str | None, where: str = "task.corpus") -> list[Path]:
    """The files of a corpus (a file, a folder's text files, or the default corpus)."""
    if path is None or path == "":
        files = default_corpus_files()
        if not files:
            raise ValueError(f"{where}: no default corpus found (Python stdlib sources missing)")
    else:
        p = Path(path).expanduser()
        if not p.exists():
            raise ValueError(f"{where}: path does not exist: {p}")
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
            if not files:
                raise ValueError(
                    f"{where}: folder has no text files ({', '.join(TEXT_SUFFIXES)}): {p}"
                )
        else:
            files = [p]
    return [Path(f) for f in files]


class LanguageModelTask(Task):
    """Next-byte prediction with a decoder-only Transformer."""

    metric_names = ("loss", "accuracy")

    def __init__(
        self,
        *,
        corpus: str | None = None,
        max_bytes: int | None = None,
        seq_len: int = 64,
        batch_size: int = 16,
        eval_batches: int = 8,
        data_seed: int = 0,
        model: dict | None = None,
    ):
        self.name = "lm"
        data = load_corpus(corpus, max_bytes)
        n = len(data)
        n_train, n_val = int(n * 0.9), int(n * 0.05)
        need = (seq_len + 1) * 2
        if n_val < need:
            raise ValueError(
                f"task.corpus: corpus has {n} bytes, too small for seq_len={seq_len} "
                f"(needs at least {math.ceil(need / 0.05)} bytes)"
            )
        self.corpus_path = corpus or "<python stdlib>"
        self.corpus_bytes = n  # the bytes used: at most corpus_limit(corpus, max_bytes)
        self.corpus_total_bytes = corpus_size(corpus)  # the whole corpus
        self.corpus_sha1 = hashlib.sha1(data.tobytes()).hexdigest()[:12]
        self.seq_len, self.batch_size, self.data_seed = seq_len, batch_size, data_seed
        self._eval_batches = eval_batches
        self.model_config = TransformerConfig(
            vocab_size=256, max_len=seq_len, causal=True, num_classes=None, **(model or {})
        )
        self.model_config.validate()
        self.train_data = {"corpus": jnp.asarray(data[:n_train]), "key": data_key(data_seed)}
        val = data[n_train : n_train + n_val]
        test = data[n_train + n_val :]
        self.splits = Splits(
            val=to_device(self._fixed_windows(val, eval_batches)),
            test=to_device(self._fixed_windows(test, eval_batches)),
        )

    def _fixed_windows(self, data: np.ndarray, num_batches: int) -> dict[str, np.ndarray]:
        count = num_batches * self.batch_size
        L = self.seq_len
        starts = np.linspace(0, len(data) - L - 1, count).astype(np.int64)
        idx = starts[:, None] + np.arange(L + 1)[None, :]
        win = data[idx].astype(np.int32)
        shape = (num_batches, self.batch_size, L)
        return {
            "tokens": win[:, :-1].reshape(shape),
            "targets": win[:, 1:].reshape(shape),
            "weights": np.ones(shape, np.float32),
        }

    def set_folds(self, k: int) -> None:
        corpus = np.asarray(self.train_data["corpus"])
        size = check_folds(k, len(corpus), "training bytes")
        if size < 2 * (self.seq_len + 1) or len(corpus) - size - 2 * (self.seq_len + 1) < 1:
            raise ValueError(
                f"task.folds: {k} folds of {len(corpus)} training bytes are too small or leave "
                f"too little to train on for seq_len={self.seq_len}"
            )
        per_fold = max(1, self._eval_batches // k)
        self.splits = Splits(
            val=stack_folds(
                [self._fixed_windows(corpus[f * size : (f + 1) * size], per_fold) for f in range(k)]
            ),
            test=self.splits.test,
        )
        self.folds, self._fold_size = k, size

    def train_batch(self, train_data, step: jax.Array, fold: jax.Array | None = None) -> Batch:
        corpus = train_data["corpus"]
        L = self.seq_len
        key = jax.random.fold_in(train_data["key"], step)
        if fold is None:
            starts = jax.random.randint(key, (self.batch_size,), 0, corpus.shape[0] - L - 1)
        else:
            # Windows that overlap the held-out bytes [a, a + m) start in (a - L - 1, a + m):
            # draw from the other starts only (m + L of them are excluded).
            m = self._fold_size
            a = fold * m
            u = jax.random.randint(key, (self.batch_size,), 0, corpus.shape[0] - L - 1 - m - L)
            starts = jnp.where(u <= a - L - 1, u, u + m + L)
        win = jax.vmap(lambda s: jax.lax.dynamic_slice(corpus, (s,), (L + 1,)))(starts)
        win = win.astype(jnp.int32)
        return {
            "tokens": win[:, :-1],
            "targets": win[:, 1:],
            "weights": jnp.ones((self.batch_size, L), jnp.float32),
        }

    def describe(self):
        return {
            "name": self.name,
            "corpus": self.corpus_path,
            "corpus_bytes": self.corpus_bytes,
            "corpus_total_bytes": self.corpus_total_bytes,
            "corpus_sha1": self.corpus_sha1,
        }
