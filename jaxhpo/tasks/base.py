"""The task interface: a model factory, a deterministic data source, a loss and metrics.

A task is written for ONE member. The population trainer calls its pure functions inside
``vmap``/``lax.map`` and ``lax.scan``; the data arrays are passed in as arguments (never closed
over) so that they do not become constants in the compiled program.

Data is *addressed, not consumed*: the training batch at step ``s`` is a pure function of the
task's data seed and ``s``. Every member sees the same sequence of batches, resuming needs no data
position beyond the step, and a member's trajectory depends only on its id, its hyperparameters and
the seed.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxhpo.models import Transformer, TransformerConfig
from jaxhpo.models.mup import INIT_SCHEMES

Batch = dict[str, jax.Array]

#: Structural hyperparameters of the masked super-model (``model.num_layers`` etc. are the
#: largest): active blocks, attention heads and MLP hidden units per member.
STRUCTURE_HPARAMS: tuple[str, ...] = ("depth", "heads", "ff_width")

#: Hyperparameters every task reads (per member, traced float32 scalars). ``init_scale`` and
#: ``init_scheme`` (a code into ``jaxhpo.models.mup.INIT_SCHEMES``: 0 normal, 1 truncated_normal,
#: 2 uniform, 3 xavier, 4 mup) are read when a member is (re)initialised, not while it trains.
TASK_HPARAMS: tuple[str, ...] = (
    "dropout",
    "attn_dropout",
    "label_smoothing",
    "init_scale",
    "init_scheme",
)
TASK_DEFAULTS: dict[str, float] = {
    "dropout": 0.0,
    "attn_dropout": 0.0,
    "label_smoothing": 0.0,
    "init_scale": 1.0,
    "init_scheme": 0.0,
}
#: Closed/open domains of the task hyperparameters: (low, high, high_inclusive).
TASK_DOMAINS: dict[str, tuple[float, float, bool]] = {
    "dropout": (0.0, 1.0, False),
    "attn_dropout": (0.0, 1.0, False),
    "label_smoothing": (0.0, 1.0, True),
    "init_scale": (0.0, float("inf"), False),
    "init_scheme": (0.0, float(len(INIT_SCHEMES) - 1), True),
}


@dataclasses.dataclass(frozen=True)
class Splits:
    """Evaluation data: each leaf has a leading ``[num_batches, batch, ...]`` shape."""

    val: Batch
    test: Batch


class Task(abc.ABC):
    """Base class. Subclasses set ``name``, ``model_config``, ``train_data``, ``splits``.

    The batch dict holds ``tokens`` (int32 [B, L]), ``targets`` (int32, [B, L] for LM-style
    losses or [B] for classification), ``weights`` (float32, same shape as targets: which targets
    count) and optionally ``mask`` (bool [B, L], True for real tokens; encoder padding mask).
    """

    name: str = "task"
    model_config: TransformerConfig
    train_data: Any
    splits: Splits
    batch_size: int
    hparam_names: tuple[str, ...] = TASK_HPARAMS
    #: (low, high, high_inclusive) domain of each name in ``hparam_names``; the defaults are
    #: :attr:`hparam_defaults`.
    hparam_domains: Mapping[str, tuple[float, float, bool]] = TASK_DOMAINS
    #: Metric names returned by :meth:`eval_sums` / :meth:`evaluate` (lower loss is better).
    metric_names: tuple[str, ...] = ("loss", "accuracy")
    #: Metrics where higher is better (the others are minimised).
    maximized: tuple[str, ...] = ("accuracy",)
    #: True for sequence classifiers: ``model.pooling`` (mean | first) reaches their config.
    pools: bool = False

    @property
    def hparam_defaults(self) -> Mapping[str, float]:
        """Default value of each name in ``hparam_names``; the init ones come from the model
        config (``model.init_scale``, ``model.init_scheme`` or the parametrization's scheme)."""
        defaults = dict(TASK_DEFAULTS)
        cfg = getattr(self, "model_config", None)
        if isinstance(cfg, TransformerConfig):
            defaults["init_scale"] = float(cfg.init_scale)
            defaults["init_scheme"] = float(INIT_SCHEMES.index(cfg.scheme))
        return defaults

    def make_model(self, key: jax.Array, hp: Mapping[str, jax.Array] | None = None) -> Transformer:
        """Builds one freshly initialised model from ``key``.

        Args:
            key: The member's initialisation key.
            hp: The member's hyperparameters (possibly traced); ``init_scheme`` and
                ``init_scale`` there override the model config's. None: the config's.
        """
        hp = hp or {}
        return Transformer(
            self.model_config,
            rngs=nnx.Rngs(params=key),
            init_scheme=hp.get("init_scheme"),
            init_scale=hp.get("init_scale"),
        )

    def init(self, key: jax.Array, hp: Mapping[str, jax.Array] | None = None) -> Transformer:
        """The task protocol's model factory (:mod:`jaxhpo.tasks.protocol`): :meth:`make_model`."""
        return self.make_model(key, hp)

    #: k of k-fold cross-validation (1: none). After :meth:`set_folds`, ``splits.val`` holds one
    #: validation set per fold on a leading axis and :meth:`train_batch` takes the fold.
    folds: int = 1

    @abc.abstractmethod
    def train_batch(self, train_data: Any, step: jax.Array, fold: jax.Array | None = None) -> Batch:
        """The training batch at ``step`` (pure; traceable). With ``fold`` (int32 scalar, under
        k-fold cross-validation) the batch never draws from that fold's held-out part."""

    def set_folds(self, k: int) -> None:
        """Turns on k-fold cross-validation: the training data is cut into ``k`` contiguous
        folds; fold ``f``'s members train on the others and are validated on fold ``f``
        (``splits.val`` becomes ``[k, num_batches, ...]``); the test split is unchanged.

        Raises:
          ValueError: naming ``task.folds``, when the task has no such split or ``k`` is bad.
        """
        raise ValueError(f"task.folds: task '{self.name}' has no k-fold split")

    # -- loss and metrics -------------------------------------------------------------------
    def _logits(
        self, model: Transformer, batch: Batch, hp: Mapping[str, jax.Array], key: jax.Array | None
    ) -> jax.Array:
        # the masked super-model's structure, when the member carries one (STRUCTURE_HPARAMS)
        structure = {k: hp[k] for k in STRUCTURE_HPARAMS if k in hp}
        if key is None:
            return model(batch["tokens"], mask_BxL=batch.get("mask"), **structure)
        return model(
            batch["tokens"],
            mask_BxL=batch.get("mask"),
            key=key,
            dropout_rate=hp["dropout"],
            attn_dropout_rate=hp["attn_dropout"],
            **structure,
        )

    def loss(
        self, model: Transformer, batch: Batch, hp: Mapping[str, jax.Array], key: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Training loss with dropout and label smoothing; returns ``(loss, {"train_loss":
        unsmoothed cross-entropy})``, the reported training loss
        (``jaxhpo.population.step.TRAIN_LOSS``)."""
        logits = self._logits(model, batch, hp, key).astype(jnp.float32)
        targets, weights = batch["targets"], batch["weights"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        smoothing = hp["label_smoothing"]
        if isinstance(smoothing, int | float) and smoothing == 0:
            per_token = ce  # smoothing fixed at 0 for the run: one cross-entropy, not two
        else:
            onehot = jax.nn.one_hot(targets, logits.shape[-1], dtype=jnp.float32)
            per_token = optax.softmax_cross_entropy(logits, optax.smooth_labels(onehot, smoothing))
        denom = jnp.maximum(weights.sum(), 1.0)
        loss = (per_token * weights).sum() / denom
        return loss, {"train_loss": jax.lax.stop_gradient((ce * weights).sum() / denom)}

    def eval_sums(
        self, model: Transformer, batch: Batch, hp: Mapping[str, jax.Array] | None = None
    ) -> dict[str, jax.Array]:
        """Weighted sums over one evaluation batch (no dropout, no smoothing); ``hp`` gives the
        member's structure in a masked super-model."""
        logits = self._logits(model, batch, hp or {}, None).astype(jnp.float32)
        targets, weights = batch["targets"], batch["weights"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
        return {
            "loss": (ce * weights).sum(),
            "accuracy": (correct * weights).sum(),
            "weight": weights.sum(),
        }

    def evaluate(
        self, model: Transformer, data: Batch, hp: Mapping[str, jax.Array] | None = None
    ) -> dict[str, jax.Array]:
        """Mean metrics over a whole split (``data`` leaves are [num_batches, ...])."""

        def one(carry, batch):
            sums = self.eval_sums(model, batch, hp)
            return jax.tree.map(jnp.add, carry, sums), None

        zero = {"loss": jnp.zeros(()), "accuracy": jnp.zeros(()), "weight": jnp.zeros(())}
        sums, _ = jax.lax.scan(one, zero, data)
        w = jnp.maximum(sums["weight"], 1.0)
        return {k: sums[k] / w for k in self.metric_names}

    def evaluate_split(
        self, model: Transformer, data: Batch, hp: Mapping[str, jax.Array] | None = None
    ) -> dict[str, jax.Array]:
        """The task protocol's split evaluation: :meth:`evaluate`."""
        return self.evaluate(model, data, hp)

    def logits(
        self, model: Transformer, batch: Batch, hp: Mapping[str, jax.Array] | None = None
    ) -> jax.Array:
        """Predicted logits of one evaluation batch (ensembles average their softmax)."""
        return self._logits(model, batch, hp or {}, None)

    def describe(self) -> dict[str, Any]:
        """A small dict for the run directory's summary."""
        return {"name": self.name}


#: Stream tags keep the data key apart from member keys made from the same integer seed.
DATA_STREAM = 0x0DA7A


def data_key(seed: int) -> jax.Array:
    """The key of a task's training batches: ``fold_in(key(seed), DATA_STREAM)``."""
    return jax.random.fold_in(jax.random.key(seed), DATA_STREAM)


def split_rng(seed: int, stream: str) -> np.random.Generator:
    """A numpy generator for host-side data generation, independent per named stream."""
    return np.random.default_rng([seed, sum(map(ord, stream)) * 7919 + len(stream)])


def pad_to_batches(arrays: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """Splits equal-length example arrays into ``[num_batches, batch_size, ...]``, padding the last
    batch with zeros, and adds ``weights`` (1 for real examples, 0 for padding) of shape
    ``[num_batches, batch_size]``."""
    n = len(next(iter(arrays.values())))
    nb = -(-n // batch_size)
    pad = nb * batch_size - n
    out = {}
    for name, a in arrays.items():
        padded = np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
        out[name] = padded.reshape(nb, batch_size, *a.shape[1:])
    weights = np.concatenate([np.ones(n), np.zeros(pad)]).astype(np.float32)
    out["weights"] = weights.reshape(nb, batch_size)
    return out


def sample_rows(
    train_data: Mapping[str, jax.Array],
    step: jax.Array,
    batch_size: int,
    names: tuple[str, ...],
    fold: jax.Array | None = None,
    fold_size: int = 0,
) -> dict[str, jax.Array]:
    """``batch_size`` rows of ``train_data[name]`` for each name, drawn with replacement from the
    data key and the step (pure; the same rows for every member).

    With ``fold`` (k-fold cross-validation), rows ``[fold * fold_size, (fold + 1) * fold_size)``
    are held out: the draw is over the other rows only."""
    key = jax.random.fold_in(train_data["key"], step)
    n = train_data[names[0]].shape[0]
    idx = row_indices(key, batch_size, n, fold, fold_size)
    return {name: train_data[name][idx] for name in names}


def row_indices(
    key: jax.Array, batch_size: int, n: int, fold: jax.Array | None = None, fold_size: int = 0
) -> jax.Array:
    """``batch_size`` row indices in ``[0, n)`` drawn with replacement from ``key``; with
    ``fold``, rows ``[fold * fold_size, (fold + 1) * fold_size)`` are never drawn."""
    if fold is None:
        return jax.random.randint(key, (batch_size,), 0, n)
    idx = jax.random.randint(key, (batch_size,), 0, n - fold_size)
    return idx + fold_size * (idx >= fold * fold_size).astype(idx.dtype)


def stack_folds(folds: list[Mapping[str, np.ndarray]]) -> Batch:
    """Per-fold evaluation batches stacked on a leading fold axis ``[k, num_batches, ...]``."""
    return {name: jnp.asarray(np.stack([f[name] for f in folds])) for name in folds[0]}


def check_folds(k: int, n: int, what: str) -> int:
    """The size of each of ``k`` folds of ``n`` training rows (or bytes); errors name
    ``task.folds``."""
    if k < 2:
        raise ValueError(f"task.folds: k-fold cross-validation needs k >= 2, got {k}")
    if n // k < 1:
        raise ValueError(f"task.folds: {k} folds of {n} {what} leave an empty fold")
    return n // k


def to_device(batch: Mapping[str, np.ndarray]) -> Batch:
    return {k: jnp.asarray(v) for k, v in batch.items()}
