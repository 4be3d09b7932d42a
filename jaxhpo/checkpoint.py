"""Atomic checkpoints of a whole run, with orbax-checkpoint.

A checkpoint is taken at a segment boundary, after the strategy's update was applied: the state
the next segment starts from. It holds

* ``state/``: the population (``PopulationState``: parameters, optimizer states with their
  moments and hyperparameters, member ids, training keys, steps, flags), restored exactly;
* ``meta/``: JSON — the loop's counters (segment, step, next member id, member-steps, best), the
  strategy's state (a pytree of arrays, msgpack-serialised by ``flax.serialization``, base64),
  each member's last evaluation, the population size and devices, and how many metrics rows and
  events the run directory held when the checkpoint was taken.

RNG state needs nothing more: every key derives from the seed, the member id and the step, and
the training batch at a step depends only on the data seed and the step, so a resumed run
draws the same numbers. orbax writes each checkpoint to a temporary directory and renames it
when complete (``commit_success.txt``); the last ``keep`` are kept. A checkpoint that fails to
restore because its files do not read (partial, corrupted) is reported, moved to
``checkpoints-corrupted/`` and the previous one is used; any other failure (building the shapes
to restore into, memory) is raised with the checkpoint left in place.
"""

from __future__ import annotations

import base64
import logging
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import serialization

log = logging.getLogger(__name__)


def pack_tree(tree: Any) -> str:
    """A pytree of arrays (or ``None``) as base64 msgpack text. A typed strategy state
    (:class:`~jaxhpo.strategies.base.StrategyState`, a ``flax.struct`` dataclass) is written as
    ``flax.serialization.to_state_dict`` makes it: a dict of its array fields by name (static
    fields, such as the space, are structure and are not written)."""
    host = jax.device_get(serialization.to_state_dict(tree))
    return base64.b64encode(serialization.msgpack_serialize(host)).decode("ascii")


def unpack_tree(text: str) -> Any:
    """The tree :func:`pack_tree` wrote, as nested dicts of numpy arrays (a strategy's state
    becomes its typed ``State`` again through ``Strategy.restore_state``)."""
    return serialization.msgpack_restore(base64.b64decode(text))


class CheckpointRefusedError(ValueError):
    """A checkpoint that must not be used (e.g. written by another configuration): resuming
    stops with this error instead of falling back to an older checkpoint."""


class CheckpointNotRestoredError(RuntimeError):
    """A checkpoint that is not corrupt could not be restored (e.g. building its abstract tree
    failed, or memory ran out): it stays where it is."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def _not_corruption(e: BaseException) -> bool:
    """Errors that say nothing of a checkpoint's files: running out of memory."""
    return isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e)


class Checkpointer:
    """Saves and restores run states under ``directory`` (one subfolder per segment).

    Args:
      directory: where checkpoints live (``RUN_DIR/checkpoints``).
      keep: how many of the latest checkpoints to keep.
    """

    def __init__(self, directory: str | Path, keep: int = 3):
        if keep < 1:
            raise ValueError(f"train.keep_checkpoints: must be >= 1, got {keep}")
        self.directory = Path(directory).absolute()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            )

    def save(self, segment: int, state: Any, meta: dict[str, Any]) -> None:
        """Writes checkpoint ``segment`` and waits until it is committed."""
        self._manager.save(
            segment,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def segments(self) -> list[int]:
        """Committed checkpoints, oldest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def restore_latest(
        self, abstract: Callable[[dict[str, Any]], Any], report: Callable[[str], None] = log.warning
    ) -> tuple[int, Any, dict[str, Any]] | None:
        """The newest checkpoint that restores, as ``(segment, state, meta)``; ``None`` if there
        is none. ``abstract(meta)`` gives the state's abstract tree (shapes depend on the
        population size stored in ``meta``); it raises :class:`CheckpointRefusedError` for a
        checkpoint that must not be used at all (another run's), which stops the search.

        A checkpoint whose files fail to read (its metadata, or its state against the abstract
        tree) is corrupt: reported, moved to ``checkpoints-corrupted/``, and the previous one is
        tried. An error of ``abstract(meta)`` or running out of memory says nothing of the
        files: it is raised as :class:`CheckpointNotRestoredError` naming the checkpoint and
        the error, and the checkpoint stays in place."""
        for segment in reversed(self.segments()):
            try:
                meta = self._manager.restore(
                    segment, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                ).meta
            except Exception as e:  # noqa: BLE001 - metadata that does not read: corrupt
                self._move_aside(segment, e, report)
                continue
            tree = self._prepared(segment, abstract, meta)
            try:
                state = self._manager.restore(
                    segment, args=ocp.args.Composite(state=ocp.args.StandardRestore(tree))
                ).state
            except Exception as e:  # noqa: BLE001 - state files that do not read: corrupt
                if _not_corruption(e):
                    raise CheckpointNotRestoredError(self._said(segment, e, "restoring")) from e
                self._move_aside(segment, e, report)
                continue
            return segment, state, meta
        return None

    def _prepared(self, segment: int, abstract: Callable, meta: dict[str, Any]) -> Any:
        """``abstract(meta)``; its errors leave the checkpoint in place."""
        try:
            return abstract(meta)
        except CheckpointRefusedError:
            raise
        except Exception as e:  # noqa: BLE001 - not the checkpoint's fault: said and raised
            raise CheckpointNotRestoredError(self._said(segment, e, "preparing its shapes")) from e

    def _said(self, segment: int, e: BaseException, doing: str) -> str:
        return (
            f"checkpoint {segment} in {self.directory}: {doing} failed ({_first_line(e)}); "
            "it is not corrupt and was left in place"
        )

    def _move_aside(self, segment: int, e: BaseException, report: Callable[[str], None]) -> None:
        aside = self.directory.parent / "checkpoints-corrupted" / str(segment)
        report(
            f"checkpoint {segment} in {self.directory} cannot be restored "
            f"({_first_line(e)}); moved to {aside}, trying the previous one"
        )
        aside.parent.mkdir(exist_ok=True)
        shutil.rmtree(aside, ignore_errors=True)
        shutil.move(self.directory / str(segment), aside)
        self._manager.reload()

    def close(self) -> None:
        self._manager.close()
