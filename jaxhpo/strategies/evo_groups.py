"""The ``evo`` strategy with several objectives: the population as ``K`` groups, each its own
evolution strategy with its own scalarisation weights, so the groups spread over the front.

With several objectives (or constraints) the population of ``P`` members is cut into ``K =
strategy.groups`` consecutive groups of ``P / K`` members (default :func:`default_groups`). Group
``k`` is an independent evosax algorithm of ``P / K`` members that minimises ParEGO's augmented
Chebyshev scalarisation (:func:`jaxhpo.strategies.parego.chebyshev`: objectives normalised to
``[0, 1]`` over the generation's finite members, ``max_j w_j f_j + 0.05 sum_j w_j f_j``,
infeasible members after every feasible one) with its weights ``w_k``
(:func:`jaxhpo.objectives.spread_weights`: from one objective alone to the other), as MOEA/D
decomposes a front into scalar subproblems (Zhang & Li 2007) and MO-CMA-ES runs one CMA-ES per
point (Igel, Hansen & Roth 2007). Group ``k``'s random keys fold ``k`` into the run's root key;
one group (one objective) uses the root key itself, so a study of one objective is unchanged.

The groups' evosax states are kept stacked (leading axis ``K``) in the strategy's state and told
one after another between segments (``K`` host calls, off the training path).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxhpo.objectives import violation
from jaxhpo.strategies.parego import chebyshev


def default_groups(size: int, several: bool) -> int:
    """One group for one objective; with several, the most groups of at least 4 members that
    divide ``size`` (at least 2 groups where ``size >= 4``)."""
    if not several or size < 4:
        return 1
    for k in range(size // 4, 1, -1):
        if size % k == 0:
            return k
    return 2 if size % 2 == 0 else 1


def check_groups(groups: int, size: int) -> None:
    """``strategy.groups`` must divide the population into groups of at least 2 members."""
    if size % groups or size // groups < 2:
        raise ValueError(
            f"strategy.groups: {groups} groups do not split population.size={size} into equal "
            "groups of at least 2 members"
        )


def group_key_data(key_data: np.ndarray, group: int, groups: int) -> np.ndarray:
    """Group ``group``'s root key data: the run's root itself for one group."""
    if groups == 1:
        return np.asarray(key_data, np.uint32)
    root = jax.random.wrap_key_data(np.asarray(key_data, np.uint32))
    return np.asarray(jax.random.key_data(jax.random.fold_in(root, group)), np.uint32)


def unstack(es: dict[str, Any], groups: int) -> list[dict[str, Any]]:
    """The groups' evosax state dicts from the stored one (one group: stored as is)."""
    if groups == 1:
        return [es]
    return [jax.tree.map(lambda a, k=k: np.asarray(a)[k], es) for k in range(groups)]


def stack(states: list[dict[str, Any]]) -> dict[str, Any]:
    """The stored form of the groups' evosax state dicts (one group: its dict)."""
    if len(states) == 1:
        return states[0]
    return jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *states)


def group_fitness(obs: Any, weights: np.ndarray, groups: int) -> np.ndarray | None:
    """Each member's fitness in its group's scalarisation, float64 [P] (``None``: one objective
    without constraints, where the ES reads :meth:`Observation.fitness` as before)."""
    if not (len(obs.objectives) > 1 or obs.constraints):
        return None
    Y = obs.fitness_matrix()
    P, M = Y.shape
    V = violation(obs.metrics, obs.constraints, P)
    W = np.asarray(weights, np.float64).reshape(groups, -1) if np.size(weights) else None
    out = np.empty(P)
    size = P // groups
    for k in range(groups):
        w = W[k] if W is not None and W.shape[1] == M else np.ones(M)
        out[k * size : (k + 1) * size] = chebyshev(Y, V, w)[k * size : (k + 1) * size]
    return out
