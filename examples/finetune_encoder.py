"""Fine-tune a pretrained encoder from your own weights: learning rate and weight decay searched.

An NNX encoder is pretrained on scikit-learn's digits 0-4 (or read from your own ``.npz`` with
``--weights``), saved as plain arrays, then loaded into every member's ``init`` and fine-tuned
with a fresh head on digits 5-9, where only 150 labelled examples are given::

    python examples/finetune_encoder.py                    # pretrain, save, fine-tune 8 members
    python examples/finetune_encoder.py --weights my_encoder.npz
    python examples/finetune_encoder.py --from-scratch     # the same search without the weights

Written only against jaxhpo's public API; the weights are an ``.npz`` of ``nnx.Param`` arrays
keyed by their path (``layers/0/kernel``), the format of any checkpoint you convert.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import jaxhpo


class Encoder(nnx.Module):
    """The pretrained part: two dense layers with LayerNorm, 64 pixels to ``width`` features."""

    def __init__(self, width: int, rngs: nnx.Rngs):
        self.inp = nnx.Linear(64, width, rngs=rngs)
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.mid = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, x):
        return nnx.gelu(self.mid(nnx.gelu(self.norm(self.inp(x)))))


class Classifier(nnx.Module):
    def __init__(self, width: int, classes: int, rngs: nnx.Rngs):
        self.encoder = Encoder(width, rngs)
        self.head = nnx.Linear(width, classes, rngs=rngs)

    def __call__(self, x):
        return self.head(self.encoder(x))


def digits(labels: range, seed: int = 0):
    """Digits with the given labels (renumbered from 0), pixels in [0, 1], shuffled."""
    x, y = load_digits(return_X_y=True)
    keep = np.isin(y, list(labels))
    x, y = (x[keep] / 16.0).astype(np.float32), (y[keep] - labels.start).astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    return x[order], y[order]


def save_encoder(encoder: Encoder, path: Path) -> None:
    """The encoder's parameters as an ``.npz`` keyed by path (``inp/kernel``, ...)."""
    flat = nnx.to_flat_state(nnx.state(encoder, nnx.Param))
    np.savez(path, **{"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in flat})


def load_encoder(encoder: Encoder, weights: dict[str, np.ndarray]) -> Encoder:
    """Puts ``weights`` (from :func:`save_encoder`) into ``encoder``; every parameter must be
    there with its shape."""
    state = nnx.state(encoder, nnx.Param)
    for path, var in nnx.to_flat_state(state):
        name = "/".join(map(str, path))
        if name not in weights or weights[name].shape != var.get_value().shape:
            raise ValueError(f"weights: no {name} of shape {var.get_value().shape}")
        var.set_value(weights[name])
    nnx.update(encoder, state)
    return encoder


def pretrain(path: Path, width: int, steps: int, seed: int = 0) -> None:
    """Your own pretraining, stood in for by 0-4 classification with a plain NNX loop."""
    x, y = digits(range(0, 5), seed)
    model = Classifier(width, 5, nnx.Rngs(seed))
    opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, xb, yb):
        def loss_fn(model):
            logits = model(xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(y), 64)
        step(model, opt, x[idx], y[idx])
    save_encoder(model.encoder, path)


class FineTune(jaxhpo.ModelTask):
    """Digits 5-9 from 150 labelled examples: the pretrained encoder and a fresh head."""

    batch_size = 32

    def __init__(self, weights: str | None, width: int = 64, labelled: int = 150):
        x, y = digits(range(5, 10), seed=1)
        self.width = width
        self.weights = None if weights is None else dict(np.load(weights))
        self.train_data = {"x": x[:labelled], "y": y[:labelled]}
        self.val_data = {"x": x[600:750], "y": y[600:750]}
        self.test_data = {"x": x[750:], "y": y[750:]}

    def init(self, key, hp):
        model = Classifier(self.width, 5, rngs=nnx.Rngs(key))  # the head: fresh per member
        if self.weights is not None:
            load_encoder(model.encoder, self.weights)  # the same pretrained encoder in each
        return model

    def loss(self, model, batch, hp, key):
        logits = model(batch["x"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return loss, {"accuracy": (logits.argmax(-1) == batch["y"]).mean()}


SPACE = {
    "lr": "loguniform(1e-4, 3e-2)",
    "weight_decay": "loguniform(1e-4, 3e-1)",
}


def main(argv=None) -> jaxhpo.TuneResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="an .npz of the encoder (default: pretrain one)")
    parser.add_argument("--from-scratch", action="store_true", help="no pretrained weights")
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--segment-steps", type=int, default=50)
    parser.add_argument("--out", default="runs")
    args = parser.parse_args(argv)
    weights = args.weights
    if weights is None and not args.from_scratch:
        weights = Path(args.out) / "encoder.npz"
        weights.parent.mkdir(parents=True, exist_ok=True)
        pretrain(weights, args.width, args.pretrain_steps)
        print(f"pretrained encoder: {weights}")
    result = jaxhpo.tune(
        FineTune(None if args.from_scratch else str(weights), width=args.width),
        SPACE,
        strategy="random",
        optimizer=optax.adamw,  # weight decay skips biases and LayerNorm scales
        population=args.members,
        steps=args.steps,
        segment_steps=args.segment_steps,
        out_dir=args.out,
        name="finetune-scratch" if args.from_scratch else "finetune-pretrained",
    )
    print(result.summary())
    return result


if __name__ == "__main__":
    main()
