"""The built-in optimizers: one :class:`~jaxhpo.optim.base.OptimizerEntry` each.

An entry holds the optimizer's optax chain, its hyperparameters (default, domain, unconstrained
coordinate), which of them hypergradients may differentiate and its µP rule. In the chains
``clip`` is ``optax.clip_by_global_norm(clip_norm)`` (a no-op for ``inf``), ``wd`` is
``optax.add_decayed_weights(weight_decay)`` and ``lr`` scales by minus the schedule.

To add an optimizer, write its chain and add one entry to :data:`OPTIMIZER_TABLE`; a
hyperparameter no other entry has is declared here too (one name, default and domain per
hyperparameter across the table: :func:`jaxhpo.optim.table.defaults` refuses a clash).
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from jaxhpo.hypergrad import hd
from jaxhpo.optim.base import (
    INF,
    MUP_ADAM,
    MUP_SGD,
    NON_NEGATIVE,
    ChainInputs,
    Domain,
    Hparam,
    OptimizerEntry,
)
from jaxhpo.optim.schedules import LR

WEIGHT_DECAY = Hparam("weight_decay", 0.0, NON_NEGATIVE, "log")
B1 = Hparam("b1", 0.9, Domain(0.0, 1.0, True, False), "logit")
B2 = Hparam("b2", 0.999, Domain(0.0, 1.0, True, False), "logit")
EPS = Hparam("eps", 1e-8, Domain(0.0, INF, False, False), "log")
MOMENTUM = Hparam("momentum", 0.9, Domain(0.0, 1.0, True, False), "logit")
#: ``inf``: no clipping. Not differentiable (a kink at the norm).
CLIP_NORM = Hparam("clip_norm", INF, Domain(0.0, INF, False, True))
#: Adafactor's (named apart from the exponential schedule's ``decay_rate``).
ADAFACTOR_DECAY_RATE = Hparam("adafactor_decay_rate", 0.8, Domain(0.0, 1.0, False, True), "logit")
CLIPPING_THRESHOLD = Hparam("clipping_threshold", 1.0, Domain(0.0, INF, False, True))
#: Hypergradient descent's step size of the learning rate (0: the plain optimizer).
HD_BETA = Hparam("hd_beta", 0.0, NON_NEGATIVE, "log")

# Adafactor settings that are structural (they decide state shapes), kept static.
_ADAFACTOR_MIN_DIM_SIZE_TO_FACTOR = 128
_ADAFACTOR_EPS = 1e-30


def _sgd(x: ChainInputs) -> optax.GradientTransformation:
    return optax.chain(x.clip(), x.weight_decay(), x.scale_by_learning_rate())


def _trace(nesterov: bool):
    def chain(x: ChainInputs) -> optax.GradientTransformation:
        trace = optax.trace(decay=x.hp["momentum"], nesterov=nesterov)
        return optax.chain(x.clip(), x.weight_decay(), trace, x.scale_by_learning_rate())

    return chain


def _scale_by_adam(x: ChainInputs) -> optax.GradientTransformation:
    hp = x.hp
    return optax.scale_by_adam(b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], eps_root=x.eps_root)


def _adam(x: ChainInputs) -> optax.GradientTransformation:
    # L2 penalty coupled into the gradient
    return optax.chain(x.clip(), x.weight_decay(), _scale_by_adam(x), x.scale_by_learning_rate())


def _adamw(x: ChainInputs) -> optax.GradientTransformation:
    # decoupled, as optax.adamw
    return optax.chain(x.clip(), _scale_by_adam(x), x.weight_decay(), x.scale_by_learning_rate())


def _lion(x: ChainInputs) -> optax.GradientTransformation:
    lion = optax.scale_by_lion(b1=x.hp["b1"], b2=x.hp["b2"])
    return optax.chain(x.clip(), lion, x.weight_decay(), x.scale_by_learning_rate())


def _adafactor(x: ChainInputs) -> optax.GradientTransformation:
    """Laid out as ``optax.adafactor(learning_rate=..., weight_decay_rate=...)``."""
    return optax.chain(
        x.clip(),
        optax.scale_by_factored_rms(
            factored=True,
            decay_rate=x.hp["adafactor_decay_rate"],
            step_offset=0,
            min_dim_size_to_factor=_ADAFACTOR_MIN_DIM_SIZE_TO_FACTOR,
            epsilon=_ADAFACTOR_EPS,
        ),
        optax.clip_by_block_rms(x.hp["clipping_threshold"]),
        x.scale_by_learning_rate(flip_sign=False),
        optax.scale_by_param_block_rms(),
        x.weight_decay(),
        optax.scale(-1.0),
    )


def _hd(direction):
    """Hypergradient descent (:mod:`jaxhpo.hypergrad.hd`) over ``direction(x)``: ``lr`` is the
    initial rate ``alpha_0``, adapted in the state; the schedule's shape (its value divided by
    ``lr``) multiplies every step, so ``constant`` gives the plain algorithm of the paper."""

    def chain(x: ChainInputs) -> optax.GradientTransformation:
        lr0 = jnp.asarray(x.hp[LR], float)

        def shape(count):
            value = x.learning_rate(count)
            return jnp.where(lr0 != 0, value / jnp.where(lr0 != 0, lr0, 1.0), 0.0)

        shape_fn = None if x.schedule == "constant" else shape
        descent = hd.hypergradient_descent(direction(x), lr0, x.hp["hd_beta"], shape=shape_fn)
        return optax.chain(x.clip(), x.weight_decay(), descent)

    return chain


_ADAM_HPARAMS = (WEIGHT_DECAY, B1, B2, EPS)
_ADAM_DIFF = ("weight_decay", "b1", "b2", "eps")

OPTIMIZER_TABLE: dict[str, OptimizerEntry] = {
    e.name: e
    for e in (
        OptimizerEntry(
            "sgd",
            _sgd,
            (WEIGHT_DECAY, CLIP_NORM),
            ("weight_decay",),
            MUP_SGD,
            "clip, wd, lr (weight decay as an L2 gradient term)",
        ),
        OptimizerEntry(
            "momentum",
            _trace(nesterov=False),
            (WEIGHT_DECAY, MOMENTUM, CLIP_NORM),
            ("weight_decay", "momentum"),
            MUP_SGD,
            "clip, wd, optax.trace(momentum), lr",
        ),
        OptimizerEntry(
            "nesterov",
            _trace(nesterov=True),
            (WEIGHT_DECAY, MOMENTUM, CLIP_NORM),
            ("weight_decay", "momentum"),
            MUP_SGD,
            "clip, wd, optax.trace(momentum, nesterov=True), lr",
        ),
        OptimizerEntry(
            "adam",
            _adam,
            (*_ADAM_HPARAMS, CLIP_NORM),
            _ADAM_DIFF,
            MUP_ADAM,
            "clip, wd, scale_by_adam, lr (coupled L2 weight decay)",
        ),
        OptimizerEntry(
            "adamw",
            _adamw,
            (*_ADAM_HPARAMS, CLIP_NORM),
            _ADAM_DIFF,
            MUP_ADAM,
            "clip, scale_by_adam, wd, lr (decoupled, exactly optax.adamw)",
        ),
        OptimizerEntry(
            "lion",
            _lion,
            (WEIGHT_DECAY, B1, B2, CLIP_NORM),
            # b1 and b2 reach the update only through a sign: zero hypergradient almost everywhere
            ("weight_decay",),
            MUP_ADAM,
            "clip, scale_by_lion, wd, lr (exactly optax.lion)",
        ),
        OptimizerEntry(
            "adafactor",
            _adafactor,
            (WEIGHT_DECAY, ADAFACTOR_DECAY_RATE, CLIPPING_THRESHOLD, CLIP_NORM),
            ("weight_decay", "adafactor_decay_rate"),
            MUP_ADAM,
            "clip, then optax.adafactor(learning_rate=schedule, decay_rate=adafactor_decay_rate, "
            "clipping_threshold, weight_decay_rate=weight_decay) with optax's other defaults "
            "(factored, min_dim_size_to_factor=128, eps=1e-30, no momentum); as in optax its "
            "weight decay is not multiplied by the learning rate",
        ),
        OptimizerEntry(
            "sgd_hd",
            _hd(lambda x: optax.identity()),
            (WEIGHT_DECAY, HD_BETA, CLIP_NORM),
            ("weight_decay", "hd_beta"),
            MUP_SGD,
            "clip, wd, hypergradient descent over SGD (Baydin et al. 2018, arXiv:1703.04782); "
            "hd_beta=0 is sgd",
        ),
        OptimizerEntry(
            "nesterov_hd",
            _hd(lambda x: optax.trace(decay=x.hp["momentum"], nesterov=True)),
            (WEIGHT_DECAY, MOMENTUM, HD_BETA, CLIP_NORM),
            ("weight_decay", "momentum", "hd_beta"),
            MUP_SGD,
            "clip, wd, hypergradient descent over Nesterov momentum; hd_beta=0 is nesterov",
        ),
        OptimizerEntry(
            "adam_hd",
            _hd(_scale_by_adam),
            (*_ADAM_HPARAMS, HD_BETA, CLIP_NORM),
            (*_ADAM_DIFF, "hd_beta"),
            MUP_ADAM,
            "clip, wd, hypergradient descent over Adam; hd_beta=0 is adam",
        ),
    )
}
