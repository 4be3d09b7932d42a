"""Tokenizers: bytes (the default, nothing to train) and byte-level BPE trained offline.

The BPE tokenizer is Hugging Face ``tokenizers``' byte-level BPE (GPT-2 style pre-tokenizer,
no prefix space, no special tokens), trained on the user's corpus with ``vocab_size`` tokens.
Because it works on bytes, every text round-trips: ``decode(encode(text)) == text``. It is
saved as ``tokenizer.json`` beside the token files and reused from there; nothing is
downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

TOKENIZERS = ("bytes", "bpe")
TOKENIZER_FILE = "tokenizer.json"


class ByteTokenizer:
    """Bytes are tokens (vocabulary 256): UTF-8 encoding, no training."""

    kind = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.uint32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def encode_block(self, block: bytes) -> np.ndarray:
        """A block of the corpus's bytes (no decoding: bytes are the tokens)."""
        return np.frombuffer(block, np.uint8)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(np.asarray(ids, np.uint8).tolist()).decode("utf-8", errors="replace")

    def save(self, folder: Path) -> str | None:
        del folder
        return None


class BPETokenizer:
    """Byte-level BPE from Hugging Face ``tokenizers`` (:func:`train_bpe` or :func:`load`)."""

    kind = "bpe"

    def __init__(self, tok):
        self.tok = tok
        self.vocab_size = tok.get_vocab_size()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tok.encode(text).ids, np.uint32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, np.uint32) for e in self.tok.encode_batch(list(texts))]

    def encode_block(self, block: bytes, pieces: int = 64) -> np.ndarray:
        """A block of the corpus (UTF-8, invalid bytes replaced), encoded in ``pieces`` parts
        cut at line ends (encoded in parallel by ``tokenizers``)."""
        lines = block.decode("utf-8", errors="replace").splitlines(keepends=True)
        step = max(1, -(-len(lines) // pieces))
        parts = ["".join(lines[i : i + step]) for i in range(0, len(lines), step)]
        ids = self.encode_batch(parts)
        return np.concatenate(ids) if ids else np.zeros(0, np.uint32)

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, folder: Path) -> str:
        self.tok.save(str(Path(folder) / TOKENIZER_FILE))
        return TOKENIZER_FILE


def train_bpe(texts: Iterable[str], vocab_size: int) -> BPETokenizer:
    """Trains a byte-level BPE tokenizer of ``vocab_size`` tokens on ``texts``.

    Raises:
      ValueError: (naming ``--vocab-size``) when ``vocab_size`` is under 257 (the 256 byte
        symbols plus one merge) or over 2**32.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if not 257 <= vocab_size <= 2**32:
        raise ValueError(f"--vocab-size: must be in [257, 2**32] for bpe, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(tok)


def load(folder: Path, spec: dict) -> ByteTokenizer | BPETokenizer:
    """The tokenizer a manifest's ``tokenizer`` entry describes (saved in ``folder``)."""
    if spec["kind"] == "bytes":
        return ByteTokenizer()
    from tokenizers import Tokenizer

    return BPETokenizer(Tokenizer.from_file(str(Path(folder) / spec["file"])))


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)
