"""Training windows addressed by (data seed, step, row), read on the host from memory maps.

The start of row ``b`` of the batch at step ``s`` is a pure function of the data seed, ``s`` and
``b`` (:func:`window_starts`): a 64-bit integer hash taken modulo the number of starts, so token
files of any size (over 2**31 tokens too) are sampled without bias worth naming and without
int32 overflow. :func:`window_starts_device` computes the same numbers on the device with
uint32 arithmetic (for data held on the device, under 2**31 tokens), so a run is bit-identical
whichever way its batches come.

:class:`SegmentFeed` reads the windows a segment needs -- every step ``[s, s + K)`` of every
distinct member step ``s`` -- as one ``[N, B, L + 1]`` int32 array, and reads the next
segment's in a background thread while the current one trains (:meth:`SegmentFeed.prefetch`).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

import jax.numpy as jnp
import numpy as np

_M1, _M2, _GOLD = 0x7FEB352D, 0x846CA68B, 0x9E3779B9


def _mix(x, xp):
    """A 32-bit integer hash (``lowbias32``); uint32 arithmetic wraps in numpy and jnp alike."""
    x = x ^ (x >> 16)
    x = x * xp.uint32(_M1)
    x = x ^ (x >> 15)
    x = x * xp.uint32(_M2)
    return x ^ (x >> 16)


def _words(seed: int, step, rows: int, xp):
    """Two hashed uint32 words per (step, row): ``hi, lo`` of shape ``step.shape + (rows,)``."""
    s = xp.asarray(step).astype(xp.uint32)[..., None]
    h = _mix(xp.asarray(seed & 0xFFFFFFFF, xp.uint32) ^ xp.uint32(_GOLD), xp)
    h = _mix(h ^ s, xp)
    b = xp.arange(rows, dtype=xp.uint32) * xp.uint32(2)
    return _mix(h + b, xp), _mix(h + b + xp.uint32(1), xp)


def window_starts(seed: int, steps: np.ndarray, rows: int, num_starts: int) -> np.ndarray:
    """The window starts (int64, ``steps.shape + (rows,)``) in ``[0, num_starts)``."""
    with np.errstate(over="ignore"):  # uint32 products wrap, as in jnp
        hi, lo = _words(seed, np.asarray(steps, np.int64), rows, np)
    x = (hi.astype(np.uint64) << np.uint64(32)) | lo.astype(np.uint64)
    return (x % np.uint64(num_starts)).astype(np.int64)


def window_starts_device(seed: int, step, rows: int, num_starts: int):
    """:func:`window_starts` in jnp (traceable; ``num_starts < 2**31``): int32 ``[rows]``."""
    if not 0 < num_starts < 2**31:
        raise ValueError(f"window_starts_device: num_starts must be in (0, 2**31), {num_starts}")
    hi, lo = _words(seed, step, rows, jnp)
    m = jnp.uint32(num_starts)
    r = hi % m
    for _ in range(32):  # (hi * 2**32) mod m by doubling: r < m < 2**31, so 2r fits
        r = (r * jnp.uint32(2)) % m
    return ((r + lo % m) % m).astype(jnp.int32)


def needed_steps(member_steps: np.ndarray, num_steps: int) -> np.ndarray:
    """The steps a segment of ``num_steps`` reads: ``[s, s + K)`` for every distinct member
    step ``s``, sorted, padded (with the last) to ``K`` times a power of two, so a population
    whose members are at G different steps compiles at most log2(G) programs."""
    starts = np.unique(np.asarray(member_steps, np.int64))
    steps = np.unique((starts[:, None] + np.arange(num_steps)[None, :]).ravel())
    n = num_steps * (1 << int(np.ceil(np.log2(max(1, -(-len(steps) // num_steps))))))
    return np.concatenate([steps, np.full(n - len(steps), steps[-1])]).astype(np.int32)


def read_windows(tokens: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """``tokens[start : start + length]`` for every start (int32, ``starts.shape + (length,)``);
    ``tokens`` may be a memory map of any size (only the windows' pages are read)."""
    flat = np.asarray(starts, np.int64).ravel()
    out = np.empty((flat.size, length), np.int32)
    for i, s in enumerate(flat):
        out[i] = tokens[s : s + length]
    return out.reshape(*np.shape(starts), length)


class SegmentFeed:
    """A segment's training windows from a 1-D token array (a memory map), with prefetch.

    Args:
      tokens: the training split's token ids (any unsigned dtype; any length).
      seed: the data seed.
      batch_size, seq_len: ``B`` and ``L`` (windows hold ``L + 1`` tokens).
    """

    def __init__(self, tokens: np.ndarray, seed: int, batch_size: int, seq_len: int):
        # a plain ndarray view of a memory map: slicing it makes no np.memmap objects
        self.tokens, self.seed = np.asarray(tokens), int(seed)
        self.batch_size, self.seq_len = batch_size, seq_len
        self.num_starts = len(tokens) - seq_len
        if self.num_starts < 1:
            raise ValueError(f"task.data: {len(tokens)} training tokens, seq_len={seq_len}")
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxhpo-feed")
        self._pending: tuple[bytes, concurrent.futures.Future] | None = None
        self._lock = threading.Lock()
        #: windows and tokens read, seconds spent reading (by either thread), prefetch use.
        self.stats = {"windows": 0, "tokens": 0, "read_s": 0.0, "prefetched": 0, "direct": 0}

    def read(self, steps: np.ndarray) -> dict[str, np.ndarray]:
        """``{"windows": int32 [N, B, L + 1], "steps": int32 [N]}`` for ``steps`` [N]."""
        t0 = time.perf_counter()
        starts = window_starts(self.seed, steps, self.batch_size, self.num_starts)
        windows = read_windows(self.tokens, starts, self.seq_len + 1)
        with self._lock:
            self.stats["windows"] += starts.size
            self.stats["tokens"] += windows.size
            self.stats["read_s"] += time.perf_counter() - t0
        return {"windows": windows, "steps": np.asarray(steps, np.int32)}

    def segment(self, member_steps: np.ndarray, num_steps: int) -> dict[str, np.ndarray]:
        """The windows of a segment (the prefetched ones when they are for the same steps)."""
        steps = needed_steps(member_steps, num_steps)
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == steps.tobytes():
            self.stats["prefetched"] += 1
            return pending[1].result()
        self.stats["direct"] += 1
        return self.read(steps)

    def prefetch(self, member_steps: np.ndarray, num_steps: int) -> None:
        """Starts reading the segment that starts at ``member_steps`` in the background."""
        steps = needed_steps(member_steps, num_steps)
        self._pending = (steps.tobytes(), self._pool.submit(self.read, steps))
