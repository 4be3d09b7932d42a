"""Balanced-brackets classification with a BERT-style encoder.

Each example is ``[CLS] ( ) ( ( ) ) ... [PAD] ...`` of a random even length; the label says whether
the brackets are balanced (a Dyck word). Negatives hold as many ``(`` as ``)`` so that counting is
not enough: the model has to track prefix depth. Classes are balanced; sequences are padded, so the
encoder's padding mask matters. Generated from the data seed; split 80 / 10 / 10.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo.models import TransformerConfig
from jaxhpo.tasks.base import (
    Batch,
    Splits,
    Task,
    check_folds,
    data_key,
    pad_to_batches,
    sample_rows,
    split_rng,
    stack_folds,
    to_device,
)

PAD, CLS, OPEN, CLOSE = 0, 1, 2, 3


def _dyck(rng: np.random.Generator, n_pairs: int) -> list[int]:
    """A random balanced sequence of ``n_pairs`` pairs (random walk kept non-negative)."""
    out, depth, opened = [], 0, 0
    for _ in range(2 * n_pairs):
        can_open, can_close = opened < n_pairs, depth > 0
        if can_open and (not can_close or rng.random() < 0.5):
            out.append(OPEN)
            depth += 1
            opened += 1
        else:
            out.append(CLOSE)
            depth -= 1
    return out


def _balanced(seq: np.ndarray) -> bool:
    depth = np.cumsum(np.where(seq == OPEN, 1, -1))
    return bool(depth.min() >= 0 and depth[-1] == 0)


def make_brackets(num: int, max_len: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``num`` DISTINCT examples (no sequence appears twice, so no split can leak into another):
    tokens [num, max_len] int32, mask [num, max_len] bool, labels [num]; half are balanced.

    Raises:
      ValueError: (naming ``task.num_examples``) if there are not enough distinct sequences.
    """
    rng = split_rng(seed, "brackets")
    max_pairs = (max_len - 1) // 2
    want = {1: (num + 1) // 2, 0: num // 2}
    found: dict[int, dict[tuple, None]] = {1: {}, 0: {}}  # insertion-ordered sets
    for _ in range(50 * num + 1000):
        if all(len(found[c]) >= want[c] for c in (0, 1)):
            break
        label = 1 if len(found[1]) < want[1] else 0
        n_pairs = int(rng.integers(1, max_pairs + 1))
        if label:
            seq = tuple(_dyck(rng, n_pairs))
        else:
            arr = np.array([OPEN] * n_pairs + [CLOSE] * n_pairs)
            while _balanced(arr):
                rng.shuffle(arr)
            seq = tuple(int(x) for x in arr)
        found[label].setdefault(seq, None)
    if any(len(found[c]) < want[c] for c in (0, 1)):
        raise ValueError(
            f"task.num_examples: could not draw {num} distinct bracket sequences of length "
            f"<= {max_len - 1}; lower task.num_examples or raise task.seq_len"
        )
    seqs = [(s, 1) for s in list(found[1])[: want[1]]] + [(s, 0) for s in list(found[0])[: want[0]]]
    tokens = np.full((num, max_len), PAD, np.int32)
    labels = np.zeros(num, np.int32)
    for i, (seq, label) in enumerate(seqs):
        tokens[i, 0] = CLS
        tokens[i, 1 : 1 + len(seq)] = seq
        labels[i] = label
    perm = rng.permutation(num)
    tokens, labels = tokens[perm], labels[perm]
    return tokens, tokens != PAD, labels


class BracketsTask(Task):
    """Binary sequence classification (balanced or not) with a bidirectional encoder."""

    pools = True

    def __init__(
        self,
        *,
        num_examples: int = 4096,
        seq_len: int = 24,
        batch_size: int = 64,
        data_seed: int = 0,
        model: dict | None = None,
    ):
        if seq_len < 3:
            raise ValueError(f"task.seq_len: brackets need seq_len >= 3, got {seq_len}")
        if num_examples < 20:
            raise ValueError(f"task.num_examples: need at least 20, got {num_examples}")
        self.name = "brackets"
        self.batch_size = batch_size
        tokens, mask, labels = make_brackets(num_examples, seq_len, data_seed)
        n_train, n_val = int(0.8 * num_examples), int(0.1 * num_examples)
        model = {"pooling": "first", **(model or {})}
        self.model_config = TransformerConfig(
            vocab_size=4, max_len=seq_len, causal=False, num_classes=2, **model
        )
        self.model_config.validate()
        self.train_data = {
            "tokens": jnp.asarray(tokens[:n_train]),
            "mask": jnp.asarray(mask[:n_train]),
            "labels": jnp.asarray(labels[:n_train]),
            "key": data_key(data_seed),
        }
        sl_val, sl_test = slice(n_train, n_train + n_val), slice(n_train + n_val, None)
        self.splits = Splits(
            val=to_device(self._eval(tokens[sl_val], mask[sl_val], labels[sl_val])),
            test=to_device(self._eval(tokens[sl_test], mask[sl_test], labels[sl_test])),
        )

    def _eval(self, tokens, mask, labels):
        b = pad_to_batches({"tokens": tokens, "mask": mask, "targets": labels}, self.batch_size)
        # padding examples keep one real token so pooling is defined (their weight is 0)
        b["mask"][..., 0] = True
        return b

    def set_folds(self, k: int) -> None:
        tokens, mask, labels = (
            np.asarray(self.train_data[n]) for n in ("tokens", "mask", "labels")
        )
        size = check_folds(k, len(tokens), "training examples")
        if len(tokens) - size < 1:
            raise ValueError(f"task.folds: {k} folds leave no training examples")
        parts = [slice(f * size, (f + 1) * size) for f in range(k)]
        val = [self._eval(tokens[p], mask[p], labels[p]) for p in parts]
        self.splits = Splits(val=stack_folds(val), test=self.splits.test)
        self.folds, self._fold_size = k, size

    def train_batch(self, train_data, step: jax.Array, fold: jax.Array | None = None) -> Batch:
        names = ("tokens", "mask", "labels")
        size = self._fold_size if self.folds > 1 else 0
        rows = sample_rows(train_data, step, self.batch_size, names, fold, size)
        return {
            "tokens": rows["tokens"],
            "mask": rows["mask"],
            "targets": rows["labels"],
            "weights": jnp.ones((self.batch_size,), jnp.float32),
        }

    def describe(self):
        return {"name": self.name, "train_examples": int(self.train_data["tokens"].shape[0])}
