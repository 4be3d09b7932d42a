"""Fine-tuning a (pretrained) byte-level encoder on a sequence classification task.

The downstream task: **is this window of text real, or were a few of its bytes replaced?** Each
example is ``[CLS]`` followed by ``seq_len - 1`` bytes of the corpus; in half of the examples
(label 1, "corrupted") ``max(1, round(corrupt_frac * (seq_len - 1)))`` positions hold a byte drawn
from the corpus's own byte distribution (a byte at a random corpus position, never the original
one), so a replaced byte is a common byte (a space, an ``e``) and the classifier must know which
bytes fit their context; counting rare bytes does not solve it. This is what masked-LM pretraining
(:mod:`jaxhpo.tasks.mlm`, which also trains on 10% randomly replaced positions) teaches, so
pretraining helps measurably, while a model trained from scratch on the small labelled set sees
too few examples to learn the corpus's byte statistics. Classes are balanced. With the defaults
(``seq_len`` 64, ``corrupt_frac`` 0.15: 9 of 63 bytes) a 2-layer encoder from ``mlm-pretrain``
reaches about 0.70 validation accuracy in 3 epochs of 1,024 examples and the same model from
scratch stays at chance (0.50); with 3 replaced bytes (0.05) neither learns in that budget.

Data: the corpus is read and split as in :mod:`jaxhpo.tasks.lm` (contiguous 90 / 5 / 5 %). A
FIXED training set of ``num_train`` windows (distinct start offsets) is drawn from the training
part, ``eval_batches * batch_size`` windows each from the validation and test parts; all from the
data seed. Fixed-size training data make epochs meaningful: ``epoch_size = num_train``.

Epoch semantics of :meth:`FinetuneTask.train_batch` (a member with batch size ``b``, see
:meth:`FinetuneTask.epoch_rows`): the member's ``g``-th example overall (``g = step * b + i``)
is example ``perm_e[g mod N]`` where ``e = g // N`` is its epoch and ``perm_e`` a permutation of
the ``N`` training examples drawn from the data key and ``e``. So a member sees every example
exactly once per epoch (when ``b`` divides ``N``; otherwise its last batch of an epoch runs into
the next epoch's order), whatever its batch size, and members of equal batch size see the same
examples. The population (``jaxhpo.population``) stops a member after
``ceil(epochs * N / b)`` steps and derives its schedule's ``decay_steps`` / ``warmup_steps`` from
that limit and ``warmup_frac``.

``pretrained``: a run directory written with ``train.save_best=true`` (or its ``pretrained/``
folder, :mod:`jaxhpo.pretrained`). Every member starts from its encoder (token and position
embeddings, blocks, final norm); the classification head is fresh, initialised from the member's
key. The model config (``model.*``, ``task.seq_len``) must give the pretrained shapes.

Devlin et al. 2019 (arXiv:1810.04805, section 4 and appendix A.3) fine-tune with batch size
{16, 32}, learning rate {5e-5, 3e-5, 2e-5}, {2, 3, 4} epochs, linear warmup over the first 10% of
steps then linear decay to 0 (schedule ``warmup_linear`` with ``min_lr_ratio`` 0) and dropout 0.1:
the defaults here are warmup_frac 0.1, dropout 0.1, 3 epochs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxhpo import pretrained as pretrained_io
from jaxhpo.models import Transformer, TransformerConfig
from jaxhpo.tasks.base import (
    TASK_DOMAINS,
    TASK_HPARAMS,
    Batch,
    Splits,
    Task,
    data_key,
    pad_to_batches,
    split_rng,
    to_device,
)
from jaxhpo.tasks.lm import load_corpus
from jaxhpo.tasks.mlm import VOCAB_SIZE, with_cls

#: Hyperparameters of fine-tuning beyond the common task ones.
EPOCH_HPARAMS: tuple[str, ...] = ("epochs", "warmup_frac")


def corrupt_windows(
    rng: np.random.Generator, windows: np.ndarray, source: np.ndarray, k: int
) -> np.ndarray:
    """A copy of ``windows`` [n, W] with ``k`` distinct positions per row replaced by bytes drawn
    from ``source`` (uniform over its positions, i.e. its byte distribution), each different
    from the byte it replaces."""
    out = windows.copy()
    n, W = out.shape
    pos = np.argsort(rng.random((n, W)), axis=1)[:, :k]
    rows = np.arange(n)[:, None]
    new = source[rng.integers(0, len(source), (n, k))]
    same = new == out[rows, pos]
    while same.any():  # redraw the replacements that equal the original byte
        new[same] = source[rng.integers(0, len(source), int(same.sum()))]
        same = new == out[rows, pos]
    out[rows, pos] = new
    return out


def make_examples(
    rng: np.random.Generator, data: np.ndarray, n: int, W: int, k: int, source: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` windows of ``W`` bytes at distinct offsets of ``data``; half of them (label 1)
    corrupted with :func:`corrupt_windows`. Returns tokens [n, W + 1] (with ``[CLS]``) and
    labels [n] (int32)."""
    starts = rng.choice(len(data) - W + 1, size=n, replace=False)
    windows = data[starts[:, None] + np.arange(W)[None, :]]
    labels = np.zeros(n, np.int32)
    labels[rng.permutation(n)[: n // 2]] = 1
    bad = labels == 1
    windows[bad] = corrupt_windows(rng, windows[bad], source, k)
    return with_cls(windows), labels


class FinetuneTask(Task):
    """Real vs corrupted text windows, classified by a bidirectional encoder (see module doc)."""

    pools = True

    hparam_names = TASK_HPARAMS + EPOCH_HPARAMS
    hparam_domains = {
        **TASK_DOMAINS,
        "epochs": (1.0, float("inf"), False),
        "warmup_frac": (0.0, 1.0, True),
    }

    def __init__(
        self,
        *,
        corpus: str | None = None,
        max_bytes: int = 2_000_000,
        seq_len: int = 64,
        batch_size: int = 32,
        eval_batches: int = 32,
        num_train: int = 1024,
        corrupt_frac: float = 0.15,
        pretrained: str | None = None,
        data_seed: int = 0,
        model: dict | None = None,
    ):
        if seq_len < 3:
            raise ValueError(f"task.seq_len: fine-tuning needs seq_len >= 3, got {seq_len}")
        if not 0.0 < corrupt_frac < 1.0:
            raise ValueError(f"task.corrupt_frac: must lie in (0, 1), got {corrupt_frac}")
        if num_train < batch_size:
            raise ValueError(
                f"task.num_train: needs at least one batch of task.batch_size={batch_size} "
                f"examples, got {num_train}"
            )
        self.name = "finetune"
        data = load_corpus(corpus, max_bytes)
        n = len(data)
        n_train, n_val = int(n * 0.9), int(n * 0.05)
        W = seq_len - 1
        n_eval = eval_batches * batch_size
        if n_val - W + 1 < n_eval or n_train - W + 1 < num_train:
            need = max(math.ceil((n_eval + W) / 0.05), math.ceil((num_train + W) / 0.9))
            raise ValueError(
                f"task.corpus: corpus has {n} bytes, too few for {num_train} training and "
                f"{n_eval} evaluation windows of seq_len={seq_len} (needs about {need} bytes; "
                "or lower task.num_train / task.eval_batches)"
            )
        self.corpus_path = corpus or "<python stdlib>"
        self.corpus_bytes = n
        self.corpus_sha1 = hashlib.sha1(data.tobytes()).hexdigest()[:12]
        self.seq_len, self.batch_size = seq_len, batch_size
        self.corrupt_frac = float(corrupt_frac)
        self.corrupted = max(1, round(corrupt_frac * W))
        #: Training examples per epoch (the population's epochs mechanism reads it).
        self.epoch_size = int(num_train)
        model = {"pooling": "mean", **(model or {})}
        self.model_config = TransformerConfig(
            vocab_size=VOCAB_SIZE, max_len=seq_len, causal=False, num_classes=2, **model
        )
        self.model_config.validate()

        train_part = data[:n_train]
        parts = {
            "train": (train_part, num_train),
            "val": (data[n_train : n_train + n_val], n_eval),
            "test": (data[n_train + n_val :], n_eval),
        }
        made = {
            name: make_examples(
                split_rng(data_seed, f"finetune-{name}"), d, m, W, self.corrupted, train_part
            )
            for name, (d, m) in parts.items()
        }
        tokens, labels = made["train"]
        self.train_data = {
            "tokens": jnp.asarray(tokens),
            "labels": jnp.asarray(labels),
            "key": data_key(data_seed),
        }
        names = ("tokens", "targets")
        self.splits = Splits(
            val=to_device(pad_to_batches(dict(zip(names, made["val"])), batch_size)),
            test=to_device(pad_to_batches(dict(zip(names, made["test"])), batch_size)),
        )
        self.pretrained_path = pretrained
        self.pretrained_info: dict | None = None
        self._encoder: dict[str, np.ndarray] | None = None
        if pretrained is not None and pretrained != "":
            self._encoder, self.pretrained_info = self._load_encoder(pretrained)

    # -- hyperparameters ---------------------------------------------------------------------
    @property
    def hparam_defaults(self) -> Mapping[str, float]:
        """BERT's fine-tuning defaults: dropout 0.1, 3 epochs, 10% warmup."""
        return {**super().hparam_defaults, "dropout": 0.1, "epochs": 3.0, "warmup_frac": 0.1}

    # -- pretrained encoder ------------------------------------------------------------------
    def _load_encoder(self, path: str) -> tuple[dict[str, np.ndarray], dict]:
        """The pretrained leaves this model takes (all but the head), checked against the model's
        shapes; errors are one line naming ``task.pretrained``."""
        params, info = pretrained_io.load(path, "task.pretrained")
        saved = info.get("model", {})
        for field in ("num_heads", "causal", "pre_norm", "parametrization"):
            # same shapes, different computation: the weights would not mean the same
            mine = getattr(self.model_config, field)
            if field in saved and saved[field] != mine:
                raise ValueError(
                    f"task.pretrained: the pretrained model has {field}={saved[field]!r}, this "
                    f"model {field}={mine!r} (set model.{field} to match)"
                )
        fresh = nnx.eval_shape(lambda: super(FinetuneTask, self).make_model(jax.random.key(0)))
        encoder = {}
        for name, var in _abstract_leaves(fresh).items():
            if name.startswith("head/"):
                continue  # the classification head is new
            if name not in params:
                raise ValueError(
                    f"task.pretrained: the pretrained weights have no '{name}' (pretrained "
                    f"model: {_describe(info)}; this model: {_describe_cfg(self.model_config)})"
                )
            if tuple(params[name].shape) != tuple(var.shape):
                raise ValueError(
                    f"task.pretrained: '{name}' has shape {tuple(params[name].shape)} in the "
                    f"pretrained weights but {tuple(var.shape)} in this model (pretrained model: "
                    f"{_describe(info)}; this model: {_describe_cfg(self.model_config)})"
                )
            encoder[name] = params[name].astype(np.dtype(var.dtype))
        return encoder, info

    def make_model(self, key: jax.Array, hp: Mapping[str, jax.Array] | None = None) -> Transformer:
        """A fresh model from ``key``; with ``pretrained``, its encoder leaves replaced by the
        pretrained ones (the head stays freshly initialised from ``key``)."""
        model = super().make_model(key, hp)
        if self._encoder is None:
            return model
        graphdef, state = nnx.split(model)
        flat = []
        for path, var in nnx.to_flat_state(state):
            name = "/".join(map(str, path))
            if name in self._encoder:
                var = var.replace(jnp.asarray(self._encoder[name]))
            flat.append((path, var))
        return nnx.merge(graphdef, nnx.from_flat_state(flat))

    # -- data --------------------------------------------------------------------------------
    def epoch_rows(self, key: jax.Array, step: jax.Array, member_batch: jax.Array) -> jax.Array:
        """Indices (int32 [batch_size]) of the training examples in rows ``0..batch_size-1`` of
        the batch at ``step`` of a member with batch size ``member_batch``: row ``i`` is the
        member's example ``g = step * member_batch + i``, i.e. ``perm_e[g mod N]`` with
        ``e = g // N``. Rows ``i >= member_batch`` are the member's next examples (they get weight
        0 in the population)."""
        N, B = self.epoch_size, self.batch_size
        g = step.astype(jnp.int32) * member_batch.astype(jnp.int32) + jnp.arange(B, dtype=jnp.int32)
        epoch, pos = g // N, g % N
        e0 = g[0] // N  # a batch spans at most two epochs (B <= N)
        perm0 = jax.random.permutation(jax.random.fold_in(key, e0), N)
        perm1 = jax.random.permutation(jax.random.fold_in(key, e0 + 1), N)
        return jnp.where(epoch == e0, perm0[pos], perm1[pos]).astype(jnp.int32)

    def train_batch(
        self,
        train_data,
        step: jax.Array,
        fold: jax.Array | None = None,
        member_batch: jax.Array | None = None,
    ) -> Batch:
        """The ``batch_size`` rows whose first ``member_batch`` (default: all) are the member's
        batch at ``step`` under epoch semantics (see :meth:`epoch_rows`)."""
        b = jnp.asarray(self.batch_size if member_batch is None else member_batch, jnp.int32)
        idx = self.epoch_rows(train_data["key"], jnp.asarray(step, jnp.int32), b)
        return {
            "tokens": train_data["tokens"][idx],
            "targets": train_data["labels"][idx],
            "weights": jnp.ones((self.batch_size,), jnp.float32),
        }

    def describe(self):
        out = {
            "name": self.name,
            "corpus": self.corpus_path,
            "corpus_bytes": self.corpus_bytes,
            "corpus_sha1": self.corpus_sha1,
            "train_examples": self.epoch_size,
            "corrupted_bytes": self.corrupted,
            "pretrained": self.pretrained_path,
        }
        if self.pretrained_info:
            out["pretrained_member"] = self.pretrained_info.get("member")
            out["pretrained_" + str(self.pretrained_info.get("metric"))] = self.pretrained_info.get(
                "value"
            )
        return out


def _abstract_leaves(model: Transformer) -> dict[str, jax.ShapeDtypeStruct]:
    """Flat name -> abstract leaf of a (possibly abstract) model's parameters."""
    _, state = nnx.split(model)
    return {"/".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(state)}


def _describe_cfg(cfg: TransformerConfig) -> str:
    return (
        f"vocab {cfg.vocab_size}, max_len {cfg.max_len}, layers {cfg.num_layers}, d_model "
        f"{cfg.d_model}, d_ff {cfg.d_ff}, pre_norm {cfg.pre_norm}"
    )


def _describe(info: dict) -> str:
    m = info.get("model", {})
    return (
        f"vocab {m.get('vocab_size')}, max_len {m.get('max_len')}, layers {m.get('num_layers')}, "
        f"d_model {m.get('d_model')}, d_ff {m.get('d_ff')}, pre_norm {m.get('pre_norm')}"
    )
