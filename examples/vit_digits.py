"""Tune your own Transformer: a small ViT built from ``nnx.MultiHeadAttention`` on digits.

Each 8x8 digit is cut into 16 patches of 2x2 pixels; a class token, learned position
embeddings, pre-LayerNorm blocks of ``nnx.MultiHeadAttention`` and an MLP, then a linear head.
The search covers ``optax.lion``'s learning rate and weight decay and the model's label
smoothing, a task hyperparameter the loss reads per member::

    python examples/vit_digits.py                    # Sobol search, 8 members
    python examples/vit_digits.py --strategy halving --members 16

Written only against jaxhpo's public API.
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import jaxhpo


class Block(nnx.Module):
    def __init__(self, dim: int, heads: int, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, dim, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp1 = nnx.Linear(dim, 2 * dim, rngs=rngs)
        self.mlp2 = nnx.Linear(2 * dim, dim, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp2(nnx.gelu(self.mlp1(self.norm2(x))))


class ViT(nnx.Module):
    def __init__(self, dim: int, depth: int, heads: int, rngs: nnx.Rngs):
        self.embed = nnx.Linear(4, dim, rngs=rngs)
        self.cls = nnx.Param(jnp.zeros((1, 1, dim)))
        self.pos = nnx.Param(0.02 * nnx.initializers.normal()(rngs.params(), (1, 17, dim)))
        self.blocks = nnx.List([Block(dim, heads, rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, 10, rngs=rngs)

    def __call__(self, images_Bx8x8):
        B = images_Bx8x8.shape[0]
        patches = images_Bx8x8.reshape(B, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(B, 16, 4)
        x = self.embed(patches)
        x = jnp.concatenate([jnp.broadcast_to(self.cls[...], (B, 1, x.shape[-1])), x], axis=1)
        x = x + self.pos[...]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


class DigitsViT(jaxhpo.ModelTask):
    batch_size = 32
    hparams = {"label_smoothing": 0.0}
    hparam_domains = {"label_smoothing": (0.0, 1.0, False)}

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 4, seed: int = 0):
        x, y = load_digits(return_X_y=True)
        order = np.random.default_rng(seed).permutation(len(y))
        x = (x[order] / 16.0).astype(np.float32).reshape(-1, 8, 8)
        y = y[order].astype(np.int32)
        self.dim, self.depth, self.heads = dim, depth, heads
        self.train_data = {"x": x[:1200], "y": y[:1200]}
        self.val_data = {"x": x[1200:1500], "y": y[1200:1500]}
        self.test_data = {"x": x[1500:], "y": y[1500:]}

    def init(self, key, hp):
        return ViT(self.dim, self.depth, self.heads, rngs=nnx.Rngs(key))

    def loss(self, model, batch, hp, key):
        logits = model(batch["x"])
        labels = jax_one_hot(batch["y"])
        smoothed = optax.smooth_labels(labels, hp.get("label_smoothing", 0.0))
        loss = optax.softmax_cross_entropy(logits, smoothed).mean()
        ce = optax.softmax_cross_entropy(logits, labels).mean()
        acc = (logits.argmax(-1) == batch["y"]).mean()
        # train_loss: what the tables show as the training loss (without smoothing)
        return loss, {"train_loss": ce, "accuracy": acc}

    def evaluate(self, model, batch, hp):
        logits = model(batch["x"])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return {"loss": ce, "accuracy": (logits.argmax(-1) == batch["y"]).mean()}


def jax_one_hot(y):
    return (y[:, None] == jnp.arange(10)[None, :]).astype(jnp.float32)


SPACE = {
    "lr": {"type": "float", "low": 1e-5, "high": 3e-3, "log": True},
    "weight_decay": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
    "label_smoothing": {"type": "float", "low": 0.0, "high": 0.3},
}


def main(argv=None) -> jaxhpo.TuneResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="sobol")
    for flag, default in (("--members", 8), ("--steps", 600), ("--segment-steps", 100)):
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--dim", type=int, default=32, help="model width")
    parser.add_argument("--out", default="runs", help="parent folder of the run directory")
    args = vars(parser.parse_args(argv))
    task = DigitsViT(dim=args.pop("dim"))
    result = jaxhpo.tune(
        task,
        SPACE,
        optimizer=optax.lion,
        schedule="warmup_cosine",
        population=args.pop("members"),
        out_dir=args.pop("out"),
        **args,  # strategy, steps, segment_steps
    )
    print(result.summary())
    return result


if __name__ == "__main__":
    main()
