"""Tune your own model: the task protocol and :class:`ModelTask`, its easy base class.

The population trainer needs, of a task (every built-in task is one, too):

* ``init(key, hp) -> nnx.Module``: one member's freshly initialised module (``hp``: the member's
  task hyperparameters, traced float32 scalars, e.g. a temperature its model reads);
* ``loss(model, batch, hp, key) -> loss`` or ``(loss, metrics)``: a scalar to minimise on one
  training batch (``metrics["train_loss"]``, when given, is logged as the training loss instead,
  e.g. the cross-entropy without label smoothing). Only ``nnx.Param`` is differentiated; batch
  statistics and other state the module updates are carried per member
  (:mod:`jaxhpo.population.step`); ``nnx.Dropout``/``nnx.BatchNorm`` run in training mode here;
* ``train_batch(train_data, step, fold=None) -> batch``: the training batch at a step, a pure
  function of the data seed and the step (every member sees the same batches);
* ``evaluate_split(model, split, hp) -> metrics``: mean metrics over an evaluation split, the
  module in evaluation mode (``module.eval()``);
* the attributes ``name``, ``hparam_names`` / ``hparam_defaults`` / ``hparam_domains``,
  ``metric_names``, ``maximized``, ``batch_size``, ``train_data``, ``splits`` (``val``,
  ``test``), ``folds``, ``set_folds(k)``, ``describe()``.

:class:`ModelTask` fills in everything but ``init`` and ``loss`` from three dicts of arrays::

    class Digits(jaxhpo.ModelTask):
        batch_size = 64

        def __init__(self, seed: int = 0):
            x, y = ...                           # numpy arrays, one row per example
            self.train_data = {"x": x[:1200], "y": y[:1200]}
            self.val_data = {"x": x[1200:1500], "y": y[1200:1500]}
            self.test_data = {"x": x[1500:], "y": y[1500:]}

        def init(self, key, hp):
            return MLP(rngs=nnx.Rngs(key))

        def loss(self, model, batch, hp, key):
            logits = model(batch["x"])
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
            return ce, {"accuracy": (logits.argmax(-1) == batch["y"]).mean()}

Defaults: training batches of ``batch_size`` rows drawn with replacement by step; evaluation
over the whole split in batches of ``eval_batch_size`` (the last one shorter, so the means are
exact), with metrics ``loss`` plus whatever ``loss`` returns in its metrics dict (override
``evaluate(model, batch, hp)`` for others); k-fold cross-validation holds out contiguous folds of
the training rows. The constructor's arguments are recorded, so a run of the task can be
re-run and resumed from its run directory.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo.tasks.base import Splits, check_folds, data_key, row_indices

Batch = Any


def _rows(data: Any, where: str) -> int:
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError(f"{where}: no arrays (a dict of arrays with one row per example)")
    sizes = {np.shape(x)[0] if np.ndim(x) else -1 for x in leaves}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(f"{where}: arrays must share their first (example) axis, got {sizes}")
    n = sizes.pop()
    if n < 1:
        raise ValueError(f"{where}: no examples")
    return n


def _rows_of(data: Any, start: int, stop: int) -> Any:
    return jax.tree.map(lambda x: np.asarray(x)[start:stop], data)


class ModelTask:
    """Base class of a user's task: write ``__init__`` (set ``train_data``, ``val_data``,
    ``test_data``), ``init`` and ``loss``; see the module docstring.

    Class attributes a subclass may set:
      hparams: task hyperparameters the model or loss reads, name -> default (per member, as
        traced float32 scalars in ``hp``); the optimizer's are named by the search space.
      hparam_domains: name -> ``(low, high, high_inclusive)`` valid values, checked before a
        run compiles.
      batch_size: training rows per step.
      eval_batch_size: rows per evaluation batch.
      maximized: metrics where higher is better (the others are minimised).
      seed: the data seed (which rows each step draws).
    """

    name: str = ""
    hparams: ClassVar[Mapping[str, float]] = {}
    hparam_domains: ClassVar[Mapping[str, tuple[float, float, bool]]] = {}
    batch_size: int = 32
    eval_batch_size: int = 256
    maximized: tuple[str, ...] = ("accuracy",)
    seed: int = 0
    folds: int = 1
    pools = False
    model_config = None
    train_data: Any
    val_data: Any
    test_data: Any

    def __new__(cls, *args: Any, **kwargs: Any):
        self = super().__new__(cls)
        # the constructor's arguments, so that a run can build the task again from its config
        try:
            bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
            bound.apply_defaults()
            self._init_args = {k: v for k, v in list(bound.arguments.items())[1:]}
        except TypeError:
            self._init_args = None  # __init__ raises the real error
        return self

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__.lower()

    # -- what a subclass writes --------------------------------------------------------------
    def init(self, key: jax.Array, hp: Mapping[str, jax.Array]) -> Any:
        """One member's freshly initialised ``nnx.Module`` from its key."""
        raise NotImplementedError(f"{type(self).__name__}.init(key, hp) -> nnx.Module")

    def loss(self, model: Any, batch: Batch, hp: Mapping[str, jax.Array], key: jax.Array):
        """The scalar to minimise on one batch, or ``(scalar, metrics dict)``."""
        raise NotImplementedError(f"{type(self).__name__}.loss(model, batch, hp, key)")

    def evaluate(self, model: Any, batch: Batch, hp: Mapping[str, jax.Array]) -> dict:
        """Mean metrics of one evaluation batch (default: ``loss`` and the loss's metrics)."""
        out = self.loss(model, batch, hp, jax.random.key(0))
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        metrics = {k: v for k, v in metrics.items() if k != "train_loss"}
        return {"loss": loss, **metrics}

    # -- the protocol, from the data ---------------------------------------------------------
    @property
    def init_args(self) -> dict[str, Any] | None:
        """The constructor's arguments (recorded in a run's config as ``task.args``)."""
        return getattr(self, "_init_args", None)

    @property
    def hparam_names(self) -> tuple[str, ...]:
        return tuple(self.hparams)

    @property
    def hparam_defaults(self) -> Mapping[str, float]:
        return {k: float(v) for k, v in self.hparams.items()}

    def _fold_size(self) -> int:
        return getattr(self, "_fold_rows", 0)

    def train_batch(self, train_data: Any, step: jax.Array, fold: jax.Array | None = None):
        """``batch_size`` rows drawn with replacement from the data seed and the step; under
        k-fold cross-validation never from the member's held-out fold."""
        n = jax.tree.leaves(train_data)[0].shape[0]
        key = jax.random.fold_in(data_key(self.seed), step)
        idx = row_indices(key, self.batch_size, n, fold, self._fold_size())
        return jax.tree.map(lambda x: x[idx], train_data)

    def _eval_split(self, data: Any, where: str) -> dict[str, Any]:
        """``{"full": [num_batches, eval_batch_size, ...], "rest": [rest, ...]}`` of a split."""
        n = _rows(data, where)
        b = min(self.eval_batch_size, n)
        nb = n // b
        full = jax.tree.map(lambda x: np.asarray(x)[: nb * b].reshape(nb, b, *x.shape[1:]), data)
        return {"full": full, "rest": _rows_of(data, nb * b, n) if n % b else {}}

    @property
    def splits(self) -> Splits:
        if getattr(self, "_splits", None) is None:
            for field in ("train_data", "val_data", "test_data"):
                if not hasattr(self, field):
                    raise ValueError(
                        f"task.{field}: task '{self.name}' sets no {field} (a dict of arrays)"
                    )
            _rows(self.train_data, "task.train_data")
            self._splits = Splits(
                val=self._eval_split(self.val_data, "task.val_data"),
                test=self._eval_split(self.test_data, "task.test_data"),
            )
        return self._splits

    def evaluate_split(self, model: Any, split: dict[str, Any], hp: Any) -> dict[str, jax.Array]:
        """Mean metrics over a split: :meth:`evaluate` per batch, weighted by batch rows."""
        hp = hp or {}
        full, rest = split["full"], split["rest"]
        sums, count = None, 0
        if jax.tree.leaves(full):
            nb, b = jax.tree.leaves(full)[0].shape[:2]

            def body(carry, batch):
                m = self.evaluate(model, batch, hp)
                m = {k: jnp.asarray(v, jnp.float32) * b for k, v in m.items()}
                return (m if carry is None else jax.tree.map(jnp.add, carry, m)), None

            first = body(None, jax.tree.map(lambda x: x[0], full))[0]
            sums = jax.lax.scan(body, first, jax.tree.map(lambda x: x[1:], full))[0]
            count += nb * b
        if jax.tree.leaves(rest):
            r = jax.tree.leaves(rest)[0].shape[0]
            m = self.evaluate(model, rest, hp)
            m = {k: jnp.asarray(v, jnp.float32) * r for k, v in m.items()}
            sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
            count += r
        return {k: v / count for k, v in sums.items()}

    @property
    def metric_names(self) -> tuple[str, ...]:
        if getattr(self, "_metric_names", None) is None:

            def one():
                hp = {k: jnp.float32(v) for k, v in self.hparam_defaults.items()}
                model = self.init(jax.random.key(0), hp)
                model.eval()
                batch = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[:2]), self.val_data)
                return self.evaluate(model, batch, hp)

            shapes = jax.eval_shape(one)
            if not isinstance(shapes, Mapping) or not shapes:
                raise ValueError("task.evaluate: must return a non-empty dict of scalar metrics")
            for k, v in shapes.items():
                if np.shape(v) != ():
                    raise ValueError(f"task.evaluate: metric '{k}' is not a scalar ({v.shape})")
            self._metric_names = tuple(shapes)
        return self._metric_names

    def set_folds(self, k: int) -> None:
        """k-fold cross-validation: fold ``f``'s members never train on training rows
        ``[f * n // k, (f + 1) * n // k)`` and are validated on them."""
        n = _rows(self.train_data, "task.train_data")
        size = check_folds(k, n, "training rows")
        if n - size < 1:
            raise ValueError(f"task.folds: {k} folds leave no training rows")
        parts = [
            self._eval_split(_rows_of(self.train_data, f * size, (f + 1) * size), "task.folds")
            for f in range(k)
        ]
        val = jax.tree.map(lambda *xs: np.stack(xs), *parts)
        self._splits = Splits(val=val, test=self.splits.test)
        self.folds, self._fold_rows = k, size

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "train_rows": _rows(self.train_data, "task.train_data"),
            "val_rows": _rows(self.val_data, "task.val_data"),
            "test_rows": _rows(self.test_data, "task.test_data"),
        }
