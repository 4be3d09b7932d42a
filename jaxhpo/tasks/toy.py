"""The toy problem of Population Based Training (Jaderberg et al. 2017, arXiv:1711.09846, Fig. 2).

Maximise ``Q(theta) = 1.2 - (theta_0^2 + theta_1^2)`` while training only on the surrogate
``Qhat(theta | h) = 1.2 - (h_0 theta_0^2 + h_1 theta_1^2)``: the hyperparameters ``h`` decide
which coordinates gradient ascent moves. Started at ``theta = (0.9, 0.9)`` with ``h = (1, 0)`` or
``h = (0, 1)``, a member with fixed ``h`` ends at ``Q = 1.2 - 0.81 = 0.39``; only a schedule that
switches ``h`` reaches the optimum ``Q = 1.2``.

It is a :class:`~jaxhpo.tasks.base.Task` like the Transformer tasks, so the same population
trainer and the same PBT code run it: the "model" is the parameter vector ``theta``, the training
loss is ``-Qhat`` (minimised by SGD, i.e. gradient ascent on ``Qhat``), the validation metric is
``Q`` (maximised), and ``h0``, ``h1`` are per-member task hyperparameters.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxhpo.tasks.base import Splits, Task

THETA0 = (0.9, 0.9)


class ToyModel(nnx.Module):
    """Just the parameter vector ``theta`` (float32 [2])."""

    def __init__(self, theta0=THETA0):
        self.theta = nnx.Param(jnp.asarray(theta0, jnp.float32))


class ToyQuadraticTask(Task):
    """PBT's toy problem: ``h0``, ``h1`` weight the surrogate's two quadratic terms."""

    name = "pbt_toy"
    hparam_names = ("h0", "h1")
    hparam_defaults = {"h0": 1.0, "h1": 1.0}
    hparam_domains = {"h0": (0.0, np.inf, False), "h1": (0.0, np.inf, False)}
    metric_names = ("q",)
    maximized = ("q",)
    batch_size = 1

    def __init__(self, model: Any = None, data_seed: int = 0):
        del model, data_seed  # no model config and no data: everything is deterministic
        self.model_config = None
        # No data, but the trainer passes the same pytrees to every task.
        self.train_data = {"unused": jnp.zeros((1,), jnp.float32)}
        self.splits = Splits(val={"unused": jnp.zeros((1,))}, test={"unused": jnp.zeros((1,))})

    def make_model(self, key: jax.Array, hp=None) -> ToyModel:
        del key, hp  # every member starts at theta0 (the paper's setup)
        return ToyModel()

    def train_batch(self, train_data, step):
        return train_data

    def loss(self, model: ToyModel, batch, hp, key):
        del batch, key
        theta = model.theta[...]
        surrogate = hp["h0"] * theta[0] ** 2 + hp["h1"] * theta[1] ** 2  # = 1.2 - Qhat
        return surrogate, {"train_loss": jax.lax.stop_gradient(surrogate)}

    def evaluate(self, model: ToyModel, data, hp=None) -> dict[str, jax.Array]:
        del data
        theta = model.theta[...]
        return {"q": 1.2 - jnp.sum(theta**2)}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "theta0": list(THETA0)}
