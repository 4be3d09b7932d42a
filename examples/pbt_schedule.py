"""PBT with a schedule of your own: an optax factory with cosine warm restarts and Nesterov SGD.

The factory below is an ordinary optax factory: its ``learning_rate`` (``lr`` in the space) is
the peak of a cosine-with-restarts schedule written with ``jnp``, and its other float arguments
(``momentum``, ``floor``) are per member when the space names them. Population-based training
copies good members over bad ones and perturbs their values every ``--segment-steps``; the
schedule's step count travels with the optimizer state, so a copied member keeps its place in
the cycle::

    python examples/pbt_schedule.py                     # 8 members, 1200 steps
    python examples/pbt_schedule.py --members 16 --cycle 200

Written only against jaxhpo's public API. The run's ``plots/curves_lr.png`` shows each member's
peak learning rate as PBT changes it; ``schedule.png`` (written by this script) the learning
rate the best member's final values give over one run.
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import jaxhpo

CYCLE = 300.0  # steps per restart, the factory's default (a static setting unless searched)


def cosine_restarts(count, peak, cycle: float, floor: float):
    """The learning rate at step ``count``: from ``peak`` down to ``floor * peak`` by a half
    cosine, restarting every ``cycle`` steps."""
    phase = jnp.mod(count, cycle) / cycle
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + jnp.cos(jnp.pi * phase)))


def nesterov_restarts(
    learning_rate: float, momentum: float = 0.9, floor: float = 0.05, cycle: float = CYCLE
) -> optax.GradientTransformation:
    """SGD with Nesterov momentum under :func:`cosine_restarts` (a module-level factory, as
    :func:`jaxhpo.tune` needs for a run that resumes)."""
    schedule = lambda count: cosine_restarts(count, learning_rate, cycle, floor)  # noqa: E731
    return optax.sgd(schedule, momentum=momentum, nesterov=True)


class MLP(nnx.Module):
    def __init__(self, hidden: int, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


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
    "lr": "loguniform(1e-3, 1.0)",  # the schedule's peak
    "momentum": "uniform(0.5, 0.99)",
    "floor": "loguniform(0.01, 0.5)",
}


def plot_schedule(result: jaxhpo.TuneResult, steps: int, cycle: float) -> None:
    """``schedule.png`` in the run directory: the best member's final values over ``steps``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hp = result.best_hparams
    count = np.arange(steps)
    lr = np.asarray(cosine_restarts(count, hp["lr"], cycle, hp["floor"]))
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(count, lr)
    ax.set(xlabel="step", ylabel="learning rate", yscale="log")
    ax.set_title(f"best member {result.best_member}: peak {hp['lr']:.3g}, floor {hp['floor']:.3g}")
    fig.tight_layout()
    fig.savefig(result.run_dir / "schedule.png", dpi=100)
    plt.close(fig)


def main(argv=None) -> jaxhpo.TuneResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--segment-steps", type=int, default=100)
    parser.add_argument("--cycle", type=float, default=CYCLE, help="steps per restart")
    parser.add_argument("--out", default="runs")
    args = parser.parse_args(argv)
    space = dict(SPACE, cycle=args.cycle)  # a fixed value: the same cycle for every member
    result = jaxhpo.tune(
        Digits(),
        space,
        strategy="pbt",
        optimizer=nesterov_restarts,
        population=args.members,
        steps=args.steps,
        segment_steps=args.segment_steps,
        out_dir=args.out,
        name="pbt-restarts",
    )
    plot_schedule(result, args.steps, args.cycle)
    print(result.summary())
    print(f"schedule: {result.run_dir / 'schedule.png'}")
    return result


if __name__ == "__main__":
    main()
