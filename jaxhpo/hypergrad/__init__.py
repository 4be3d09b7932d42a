"""Differentiable hyperparameters, one estimator per module:

* :mod:`~jaxhpo.hypergrad.hd`: online hypergradient descent (SGD-HD, SGD-Nesterov-HD, Adam-HD)
  as optax transforms (also ``optim.optimizer`` ``sgd_hd`` / ``nesterov_hd`` / ``adam_hd``);
* :mod:`~jaxhpo.hypergrad.unrolled`: truncated unrolled hypergradients through ``lax.scan``
  with remat (:mod:`~jaxhpo.hypergrad.member` adapts a population member; strategy
  ``hypergrad``);
* :mod:`~jaxhpo.hypergrad.implicit`: implicit-function-theorem hypergradients (Neumann, CG);
* :mod:`~jaxhpo.hypergrad.pes`: persistent and truncated evolution strategies (evosax's
  ``PersistentES``; strategies ``pes`` / ``truncated_es``).
"""

from jaxhpo.hypergrad.hd import (
    HDState,
    adam_hd,
    current_lr,
    hypergradient_descent,
    nesterov_hd,
    sgd_hd,
)

__all__ = ["HDState", "adam_hd", "current_lr", "hypergradient_descent", "nesterov_hd", "sgd_hd"]
