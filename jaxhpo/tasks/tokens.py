"""Language modelling on a prepared token folder (``task.data=DATA_DIR``).

``DATA_DIR`` is made by ``jaxhpo data prepare`` (:mod:`jaxhpo.data.prepare`): memory-mappable
train/val/test token files and a manifest naming the tokenizer (its vocabulary is the model's).
The training batch at step ``s`` is rows of ``seq_len + 1`` tokens starting at
:func:`jaxhpo.data.feed.window_starts` (data seed, ``s``, row): the same batch whichever way it
reaches the member --

* ``feed="host"`` (the default): the host reads a segment's windows from the memory map,
  every step ``[s, s + K)`` of every distinct member step ``s``, as one ``[N, B, L + 1]`` array
  (:meth:`segment_data`), puts it on the devices once, and reads the next segment's while this
  one trains. The training split never has to fit on a device, and may exceed 2**31 tokens.
* ``feed="device"``: the training split is one device array and the step draws its own windows
  (under 2**31 tokens; for small data).

Validation and test: ``eval_batches`` batches of ``batch_size`` windows each, at evenly spaced
fixed starts over the whole held-out file (the same for every member and every resume).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo.data import feed as feeds
from jaxhpo.data.prepare import read_manifest
from jaxhpo.models import TransformerConfig
from jaxhpo.tasks.base import Batch, Splits, Task, to_device

FEEDS = ("host", "device")


class TokenFileTask(Task):
    """Next-token prediction on prepared token files with a decoder-only Transformer."""

    metric_names = ("loss", "accuracy")

    def __init__(
        self,
        *,
        data: str,
        seq_len: int = 64,
        batch_size: int = 16,
        eval_batches: int = 8,
        data_seed: int = 0,
        feed: str = "host",
        model: dict | None = None,
    ):
        self.name = "lm"
        if feed not in FEEDS:
            raise ValueError(f"task.feed: unknown '{feed}' (choose from {', '.join(FEEDS)})")
        self.folder = Path(data).expanduser()
        self.manifest = read_manifest(self.folder)
        self.dtype = np.dtype(self.manifest["dtype"])
        self.seq_len, self.batch_size, self.data_seed = seq_len, batch_size, data_seed
        self.eval_batches, self.feed = eval_batches, feed
        self.model_config = TransformerConfig(
            vocab_size=int(self.manifest["tokenizer"]["vocab_size"]),
            max_len=seq_len,
            causal=True,
            num_classes=None,
            **(model or {}),
        )
        self.model_config.validate()
        train = self.split("train")
        self.feeder = feeds.SegmentFeed(train, data_seed, batch_size, seq_len)
        self.num_starts = self.feeder.num_starts
        if feed == "device":
            if len(train) >= 2**31:
                raise ValueError(
                    f"task.feed: device holds at most 2**31 tokens, the training split has "
                    f"{len(train):,} (use task.feed=host)"
                )
            self.train_data = {"tokens": jnp.asarray(np.asarray(train))}
        else:
            self.train_data = {
                "windows": jnp.zeros((1, batch_size, seq_len + 1), jnp.int32),
                "steps": jnp.zeros((1,), jnp.int32),
            }
        self.splits = Splits(
            val=to_device(self._fixed_windows(self.split("val"))),
            test=to_device(self._fixed_windows(self.split("test"))),
        )

    @property
    def host_fed(self) -> bool:
        """True when the run loop must pass :meth:`segment_data` as each segment's data."""
        return self.feed == "host"

    def split(self, name: str) -> np.ndarray:
        """A split's tokens as a read-only memory map."""
        info = self.manifest["splits"][name]
        return np.memmap(self.folder / info["file"], self.dtype, "r", shape=(info["tokens"],))

    def _fixed_windows(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        L, count = self.seq_len, self.eval_batches * self.batch_size
        if len(tokens) < L + 1:
            raise ValueError(f"task.data: a held-out split has {len(tokens)} tokens < seq_len+1")
        starts = np.linspace(0, len(tokens) - L - 1, count).astype(np.int64)
        win = feeds.read_windows(tokens, starts, L + 1)
        shape = (self.eval_batches, self.batch_size, L)
        return {
            "tokens": win[:, :-1].reshape(shape),
            "targets": win[:, 1:].reshape(shape),
            "weights": np.ones(shape, np.float32),
        }

    def segment_data(self, member_steps: np.ndarray, num_steps: int) -> dict[str, np.ndarray]:
        """The training data of a segment of ``num_steps`` from ``member_steps`` [P] (host)."""
        return self.feeder.segment(member_steps, num_steps)

    def train_batch(self, train_data, step: jax.Array, fold: jax.Array | None = None) -> Batch:
        del fold  # no k-fold split (set_folds refuses)
        L = self.seq_len
        if "tokens" in train_data:  # device-resident
            starts = feeds.window_starts_device(
                self.data_seed, step, self.batch_size, self.num_starts
            )
            win = jax.vmap(lambda s: jax.lax.dynamic_slice(train_data["tokens"], (s,), (L + 1,)))(
                starts
            )
            win = win.astype(jnp.int32)
        else:  # host-fed segment: the row of this step
            i = jnp.searchsorted(train_data["steps"], step)
            win = train_data["windows"][jnp.minimum(i, train_data["steps"].shape[0] - 1)]
        return {
            "tokens": win[:, :-1],
            "targets": win[:, 1:],
            "weights": jnp.ones((self.batch_size, L), jnp.float32),
        }

    def describe(self):
        splits = self.manifest["splits"]
        return {
            "name": self.name,
            "data": str(self.folder),
            "feed": self.feed,
            "tokenizer": self.manifest["tokenizer"]["kind"],
            "vocab_size": self.model_config.vocab_size,
            "tokens": {s: splits[s]["tokens"] for s in splits},
            "sha256": {s: splits[s]["sha256"][:16] for s in splits},
            "corpus_bytes": self.manifest["corpus"]["bytes"],
            "eval_windows": self.eval_batches * self.batch_size,
        }
