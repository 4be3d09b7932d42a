"""Masked-language-model pretraining (BERT) of a byte-level encoder on a text corpus.

Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding", arXiv:1810.04805, section 3.1 "Task #1: Masked LM": 15% of the positions of each
sequence are selected; a selected position's input becomes ``[MASK]`` with probability 0.8, a
random token with probability 0.1 and stays unchanged with probability 0.1; the loss is the
cross-entropy of the original token at the selected positions only (``weights`` 1 there, 0
elsewhere).

Vocabulary: the 256 bytes plus two special tokens, ``[MASK]`` (256) and ``[CLS]`` (257):
:data:`VOCAB_SIZE`. Every sequence is ``[CLS]`` followed by ``seq_len - 1`` bytes (the ``[CLS]``
position is never selected), the same layout as :mod:`jaxhpo.tasks.finetune`, so the fine-tuning
task can start from these weights. The corpus is read and split as in :mod:`jaxhpo.tasks.lm`
(contiguous 90 / 5 / 5 %). Training windows and masks are addressed by the step (a pure function
of the data seed and the step); validation and test use fixed windows with fixed masks.
"""

from __future__ import annotations

import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo.models import TransformerConfig
from jaxhpo.tasks.base import Batch, Splits, Task, data_key
from jaxhpo.tasks.lm import load_corpus

MASK, CLS = 256, 257
#: 256 bytes + [MASK] + [CLS]; shared with the fine-tuning task.
VOCAB_SIZE = 258
#: BERT's split of the selected positions: [MASK] / random token / unchanged.
MASK_SPLIT = (0.8, 0.1, 0.1)
#: Stream tag of the fixed validation/test masks (apart from the training data key).
EVAL_STREAM = 0xE7A1


def bert_mask(
    key: jax.Array, tokens_BxL: jax.Array, mask_prob: float, special_BxL: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """BERT's masking of a batch (pure; traceable).

    Args:
      key: the batch's masking key.
      tokens_BxL: int32 original tokens.
      mask_prob: probability that a position is selected (0.15 in BERT).
      special_BxL: bool, positions that are never selected (``[CLS]``).

    Returns:
      ``(inputs_BxL, selected_BxL)``: the corrupted inputs (int32) and the selected positions
      (float32 1/0: the loss weights; the targets are ``tokens_BxL``).
    """
    k_sel, k_kind, k_rand = jax.random.split(key, 3)
    shape = tokens_BxL.shape
    selected = jax.random.bernoulli(k_sel, mask_prob, shape) & ~special_BxL
    u = jax.random.uniform(k_kind, shape)
    random_bytes = jax.random.randint(k_rand, shape, 0, 256, dtype=jnp.int32)
    inputs = jnp.where(selected & (u < MASK_SPLIT[0]), MASK, tokens_BxL)
    to_random = selected & (u >= MASK_SPLIT[0]) & (u < MASK_SPLIT[0] + MASK_SPLIT[1])
    inputs = jnp.where(to_random, random_bytes, inputs)
    return inputs.astype(jnp.int32), selected.astype(jnp.float32)


def with_cls(windows_BxW: jax.Array | np.ndarray):
    """``[CLS]`` prepended to each row of byte windows (int32 [B, W + 1])."""
    xp = jnp if isinstance(windows_BxW, jax.Array) else np
    cls = xp.full((windows_BxW.shape[0], 1), CLS, dtype=xp.int32)
    return xp.concatenate([cls, windows_BxW.astype(xp.int32)], axis=1)


class MaskedLanguageModelTask(Task):
    """BERT masked-LM pretraining of a bidirectional byte-level encoder (LM head)."""

    metric_names = ("loss", "accuracy")

    def __init__(
        self,
        *,
        corpus: str | None = None,
        max_bytes: int = 2_000_000,
        seq_len: int = 64,
        batch_size: int = 32,
        eval_batches: int = 8,
        mask_prob: float = 0.15,
        data_seed: int = 0,
        model: dict | None = None,
    ):
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"task.mask_prob: must lie in (0, 1), got {mask_prob}")
        if seq_len < 2:
            raise ValueError(
                f"task.seq_len: masked LM needs seq_len >= 2 ([CLS] + bytes), got {seq_len}"
            )
        self.name = "mlm"
        data = load_corpus(corpus, max_bytes)
        n = len(data)
        n_train, n_val = int(n * 0.9), int(n * 0.05)
        W = seq_len - 1  # bytes per window after [CLS]
        if n_val < 2 * W:
            raise ValueError(
                f"task.corpus: corpus has {n} bytes, too small for seq_len={seq_len} "
                f"(needs at least {math.ceil(2 * W / 0.05)} bytes)"
            )
        self.corpus_path = corpus or "<python stdlib>"
        self.corpus_bytes = n
        self.corpus_sha1 = hashlib.sha1(data.tobytes()).hexdigest()[:12]
        self.seq_len, self.batch_size, self.mask_prob = seq_len, batch_size, float(mask_prob)
        self.model_config = TransformerConfig(
            vocab_size=VOCAB_SIZE, max_len=seq_len, causal=False, num_classes=None, **(model or {})
        )
        self.model_config.validate()
        self.train_data = {"corpus": jnp.asarray(data[:n_train]), "key": data_key(data_seed)}
        val, test = data[n_train : n_train + n_val], data[n_train + n_val :]
        eval_key = jax.random.fold_in(jax.random.key(data_seed), EVAL_STREAM)
        self.splits = Splits(
            val=self._fixed(val, eval_batches, jax.random.fold_in(eval_key, 0)),
            test=self._fixed(test, eval_batches, jax.random.fold_in(eval_key, 1)),
        )

    def _masked(self, key: jax.Array, windows_BxW) -> Batch:
        tokens = with_cls(windows_BxW)
        special = jnp.zeros(tokens.shape, bool).at[:, 0].set(True)
        inputs, weights = bert_mask(key, tokens, self.mask_prob, special)
        return {"tokens": inputs, "targets": tokens, "weights": weights}

    def _fixed(self, data: np.ndarray, num_batches: int, key: jax.Array) -> Batch:
        """Evenly spaced windows with fixed masks, ``[num_batches, batch, L]``."""
        W, B = self.seq_len - 1, self.batch_size
        starts = np.linspace(0, len(data) - W, num_batches * B).astype(np.int64)
        win = data[starts[:, None] + np.arange(W)[None, :]]
        batch = self._masked(key, jnp.asarray(win))
        return {k: v.reshape(num_batches, B, *v.shape[1:]) for k, v in batch.items()}

    def train_batch(self, train_data, step: jax.Array, fold: jax.Array | None = None) -> Batch:
        corpus = train_data["corpus"]
        W = self.seq_len - 1
        k_win, k_mask = jax.random.split(jax.random.fold_in(train_data["key"], step))
        starts = jax.random.randint(k_win, (self.batch_size,), 0, corpus.shape[0] - W)
        win = jax.vmap(lambda s: jax.lax.dynamic_slice(corpus, (s,), (W,)))(starts)
        return self._masked(k_mask, win.astype(jnp.int32))

    def describe(self):
        return {
            "name": self.name,
            "corpus": self.corpus_path,
            "corpus_bytes": self.corpus_bytes,
            "corpus_sha1": self.corpus_sha1,
            "mask_prob": self.mask_prob,
        }
