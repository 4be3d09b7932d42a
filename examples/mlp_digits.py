"""Tune your own model: an NNX MLP with BatchNorm and Dropout on scikit-learn's digits.

Learning rate and weight decay of ``optax.adamw`` (weight decay skips biases and BatchNorm
scales), searched by random search, PBT and online hypergradient descent::

    python examples/mlp_digits.py                  # random search, 8 members
    python examples/mlp_digits.py --strategy pbt
    python examples/mlp_digits.py --strategy hypergrad --steps 300

Written only against jaxhpo's public API.
"""

from __future__ import annotations

import argparse

import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import jaxhpo


class MLP(nnx.Module):
    def __init__(self, hidden: int, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, hidden, use_bias=False, rngs=rngs)  # BatchNorm follows
        self.norm = nnx.BatchNorm(hidden, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)
        self.out = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.relu(self.norm(self.hidden(x)))))


class Digits(jaxhpo.ModelTask):
    batch_size = 64

    def __init__(self, hidden: int = 64, seed: int = 0):
        x, y = load_digits(return_X_y=True)
        order = np.random.default_rng(seed).permutation(len(y))
        x, y = (x[order] / 16.0).astype(np.float32), y[order].astype(np.int32)
        self.hidden = hidden
        self.train_data = {"x": x[:1200], "y": y[:1200]}
        self.val_data = {"x": x[1200:1500], "y": y[1200:1500]}
        self.test_data = {"x": x[1500:], "y": y[1500:]}

    def init(self, key, hp):
        return MLP(self.hidden, rngs=nnx.Rngs(key))

    def loss(self, model, batch, hp, key):
        logits = model(batch["x"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return loss, {"accuracy": (logits.argmax(-1) == batch["y"]).mean()}


SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
}


def main(argv=None) -> jaxhpo.TuneResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="random", choices=["random", "pbt", "hypergrad"])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--segment-steps", type=int, default=100)
    parser.add_argument("--out", default="runs")
    args = parser.parse_args(argv)
    space = dict(SPACE)
    if args.strategy == "hypergrad":  # online hypergradient descent adapts the learning rate
        space = {"lr": SPACE["lr"]}
    result = jaxhpo.tune(
        Digits(),
        space,
        strategy=args.strategy,
        optimizer=optax.adamw,
        population=args.members,
        steps=args.steps,
        segment_steps=args.segment_steps,
        out_dir=args.out,
    )
    print(result.summary())
    return result


if __name__ == "__main__":
    main()
