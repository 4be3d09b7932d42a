"""Modular arithmetic ``a ∘ b mod p`` — the grokking setting.

Power et al. 2022, "Grokking: Generalization beyond overfitting on small algorithmic datasets",
arXiv:2201.02177. Every pair ``(a, b)`` with ``0 <= a, b < p`` (``b != 0`` for division) is one
example ``[a, op, b, =]`` whose answer ``c`` is predicted at the ``=`` position by a causal
Transformer. A seeded permutation puts ``train_frac`` of the table in the training split; the rest
is halved into validation and test.
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

OPERATIONS = ("+", "-", "*", "/")


def modular_table(p: int, op: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ``(a, b, a op b mod p)`` triples as int arrays."""
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    if op == "+":
        c = (a + b) % p
    elif op == "-":
        c = (a - b) % p
    elif op == "*":
        c = (a * b) % p
    elif op == "/":
        keep = b != 0
        a, b = a[keep], b[keep]
        c = (a * np.array([pow(int(x), p - 2, p) for x in b])) % p
    else:
        raise ValueError(f"task.operation: unknown '{op}' (choose from {', '.join(OPERATIONS)})")
    return a, b, c


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, int(n**0.5) + 1))


class ModularArithmeticTask(Task):
    """``a op b = c (mod p)``, loss and accuracy on the answer token only."""

    def __init__(
        self,
        *,
        modulus: int = 97,
        operation: str = "+",
        train_frac: float = 0.5,
        batch_size: int = 256,
        data_seed: int = 0,
        model: dict | None = None,
    ):
        if modulus < 2:
            raise ValueError(f"task.modulus: must be >= 2, got {modulus}")
        if operation == "/" and not _is_prime(modulus):
            raise ValueError(f"task.modulus: division needs a prime modulus, got {modulus}")
        if not 0.0 < train_frac < 1.0:
            raise ValueError(f"task.train_frac: must lie in (0, 1), got {train_frac}")
        self.name = "modular"
        self.modulus, self.operation, self.batch_size = modulus, operation, batch_size
        a, b, c = modular_table(modulus, operation)
        op_tok, eq_tok = modulus, modulus + 1
        tokens = np.stack([a, np.full_like(a, op_tok), b, np.full_like(a, eq_tok)], 1)
        perm = split_rng(data_seed, "modular").permutation(len(a))
        n_train = max(1, int(round(train_frac * len(a))))
        n_val = (len(a) - n_train) // 2
        if n_val < 1:
            raise ValueError(f"task.train_frac: {train_frac} leaves no validation examples")
        tr, va, te = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
        self.num_train = n_train
        self.model_config = TransformerConfig(
            vocab_size=modulus + 2, max_len=4, causal=True, num_classes=None, **(model or {})
        )
        self.model_config.validate()
        self.train_data = {
            "tokens": jnp.asarray(tokens[tr], jnp.int32),
            "answers": jnp.asarray(c[tr], jnp.int32),
            "key": data_key(data_seed),
        }
        self.splits = Splits(
            val=to_device(self._eval_batches(tokens[va], c[va])),
            test=to_device(self._eval_batches(tokens[te], c[te])),
        )

    def _eval_batches(self, tokens: np.ndarray, answers: np.ndarray) -> dict[str, np.ndarray]:
        b = pad_to_batches(
            {"tokens": tokens.astype(np.int32), "answers": answers.astype(np.int32)},
            self.batch_size,
        )
        return self._as_lm(b["tokens"], b["answers"], b["weights"])

    @staticmethod
    def _as_lm(tokens, answers, weights):
        """Targets at the ``=`` position only (index 3), weights zero elsewhere."""
        xp = jnp if isinstance(tokens, jax.Array) else np
        targets = xp.concatenate([tokens[..., 1:], answers[..., None]], -1)
        w = xp.concatenate([xp.zeros(weights.shape + (3,), xp.float32), weights[..., None]], -1)
        return {"tokens": tokens, "targets": targets, "weights": w}

    def set_folds(self, k: int) -> None:
        tokens, answers = (np.asarray(self.train_data[n]) for n in ("tokens", "answers"))
        size = check_folds(k, len(tokens), "training examples")
        if len(tokens) - size < 1:
            raise ValueError(f"task.folds: {k} folds leave no training examples")
        parts = [slice(f * size, (f + 1) * size) for f in range(k)]
        val = [self._eval_batches(tokens[p], answers[p]) for p in parts]
        self.splits = Splits(val=stack_folds(val), test=self.splits.test)
        self.folds, self._fold_size = k, size

    def train_batch(self, train_data, step: jax.Array, fold: jax.Array | None = None) -> Batch:
        size = self._fold_size if self.folds > 1 else 0
        rows = sample_rows(train_data, step, self.batch_size, ("tokens", "answers"), fold, size)
        ones = jnp.ones((self.batch_size,), jnp.float32)
        return self._as_lm(rows["tokens"], rows["answers"], ones)

    def describe(self):
        return {
            "name": self.name,
            "modulus": self.modulus,
            "operation": self.operation,
            "train_examples": self.num_train,
        }
