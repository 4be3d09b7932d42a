"""Several objectives: each strategy family's multi-objective form (PBT: exploit by Pareto rank
and crowding; halving: promotion by non-dominated rank; random search: the front of what was
trained), the compiled loop's fitness equal to the host's, and one-line refusals."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxhpo.config import ConfigError
from jaxhpo.objectives import pareto_fitness, parse_constraints, parse_objectives
from jaxhpo.space import Space
from jaxhpo.strategies.base import Observation
from jaxhpo.strategies.halving import SuccessiveHalving
from jaxhpo.strategies.pbt import PBT, PBTState

OBJ = parse_objectives({"loss": "min", "accuracy": "max"})
SPACE = Space.from_config({"lr": "loguniform(1e-4, 1e-1)"})


def _obs(loss, acc, step=4, constraints=(), ids=None):
    P = len(loss)
    return Observation(
        step=step,
        member_id=np.arange(P) if ids is None else ids,
        hparams={"lr": np.geomspace(1e-3, 1e-2, P)},
        metrics={"loss": np.asarray(loss, float), "accuracy": np.asarray(acc, float)},
        diverged=np.zeros(P, bool),
        active=np.ones(P, bool),
        objectives=OBJ,
        constraints=tuple(constraints),
    )


def test_pbt_replaces_the_dominated_members_by_members_of_the_front():
    # members 0-3 trade loss against accuracy (the front); 4-7 are dominated by member 1
    loss = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    acc = [0.1, 0.6, 0.7, 0.8, 0.5, 0.4, 0.3, 0.2]
    strategy = PBT(ready_steps=4, fraction=0.25, explore="none")
    state, _ = strategy.init(0, SPACE, 8)
    _, upd = strategy.update(state, _obs(loss, acc))
    copied = np.flatnonzero(upd.parents != np.arange(8))
    assert set(copied) <= {4, 5, 6, 7} and len(copied) == 2  # the bottom quarter: dominated
    assert set(upd.parents[copied]) <= {0, 1, 2, 3}  # from the front


def test_a_constraint_puts_infeasible_members_last():
    cons = parse_constraints({"loss": "<= 0.45"})
    obs = _obs([0.1, 0.2, 0.9, 0.95], [0.1, 0.2, 0.99, 0.98], constraints=cons)
    fit = obs.fitness()
    assert set(np.argsort(fit)[:2]) == {0, 1}  # the feasible ones, whatever their accuracy


def test_halving_promotes_by_non_dominated_rank():
    sh = SuccessiveHalving(eta=2, min_steps=2, max_steps=8)
    state, _ = sh.init(0, SPACE, 4)
    obs = _obs([0.1, 0.5, 0.2, 0.6], [0.9, 0.4, 0.95, 0.3], step=2)
    _, upd = sh.update(state, obs)
    stopped = {e["member"] for e in upd.events if e["kind"] == "stop"}
    assert stopped == {1, 3}  # dominated by 0 and 2


def test_compiled_fitness_equals_the_hosts():
    obs = _obs([0.1, 0.2, 0.3, np.nan], [0.5, 0.6, 0.1, 0.9])
    host = obs.fitness()
    jitted = jax.jit(lambda m, d: pareto_fitness(m, OBJ, (), d))(obs.metrics, obs.diverged)
    np.testing.assert_array_equal(np.asarray(jitted), host)
    assert np.isinf(host[3])  # a NaN objective: worst


def test_pbt_compiled_decision_reads_the_pareto_fitness():
    strategy = PBT(ready_steps=4, fraction=0.25, explore="none")
    state, cols = strategy.init(0, SPACE, 4)
    fit = pareto_fitness(_obs([0.1, 0.9, 0.2, 0.8], [0.9, 0.1, 0.8, 0.2]).metrics, OBJ)
    out = strategy.device_update(state, 4, fit, {"lr": np.asarray(cols["lr"], np.float32)})
    assert isinstance(out[0], PBTState)
    parents, copied = np.asarray(out[1]), np.asarray(out[2])
    assert copied.sum() == 1 and parents[np.flatnonzero(copied)[0]] in (0, 2)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["strategy.name=rl", "strategy.objectives={loss: min, accuracy: max}"], "optimises one"),
        (["strategy.objectives={loss: min, nope: max}"], r"strategy\.objectives\.nope: task"),
        (["strategy.constraints={loss: '< x'}"], r"strategy\.constraints\.loss: expected"),
        (
            [
                "strategy.name=optuna",
                "strategy.pruner=median",
                "strategy.objectives={a: min, b: max}",
            ],
            r"strategy\.pruner: Optuna cannot prune a study with 2 objectives",
        ),
    ],
)
def test_bad_objectives_are_one_line_before_anything_is_built(overrides, match):
    from conftest import TINY_LM_OVERRIDES

    from jaxhpo.cli import load_config
    from jaxhpo.experiment import prepare

    with pytest.raises(ConfigError, match=match) as e:
        prepare(load_config("lm-random", [*TINY_LM_OVERRIDES, *overrides]))
    assert "\n" not in str(e.value)


def test_a_run_with_two_objectives_reports_its_front(tmp_path):
    """lm-pbt with loss and accuracy: summary.md has the front with its hypervolume, the plots
    show it, and the hypervolume of everything evaluated never falls."""
    import pandas as pd
    from conftest import TINY_LM_OVERRIDES

    from jaxhpo.cli import main

    args = [*TINY_LM_OVERRIDES, "train.steps=40", "train.segment_steps=10", "population.size=4"]
    args += ["strategy.ready_steps=10", "strategy.objectives={loss: min, accuracy: max}"]
    assert main(["run", "lm-pbt", *args, "--out", str(tmp_path), "--quiet"]) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = (run_dir / "summary.md").read_text()
    assert "## Pareto front" in summary and "hypervolume" in summary
    assert (run_dir / "plots" / "pareto_front.png").stat().st_size > 0
    curve = pd.read_csv(run_dir / "plots" / "hypervolume.csv")
    assert (curve["hypervolume"].diff().dropna() >= -1e-12).all()
    assert curve["member_steps"].iloc[-1] > 0


def test_hypervolume_curve_member_steps_are_run_jsons_under_halving(tmp_path):
    """Regression: the curve counted a member stopped at a rung as training through the next
    segment (27 -> 9 members at step 10 counted 27 for 10-20); its member-steps now end at
    run.json's."""
    import json

    import pandas as pd
    from conftest import TINY_LM_OVERRIDES

    from jaxhpo.cli import main

    args = [*TINY_LM_OVERRIDES, "train.steps=8", "train.segment_steps=2", "population.size=4"]
    args += [
        "strategy.eta=2",
        "strategy.min_steps=2",
        "strategy.objectives={loss: min, accuracy: max}",
    ]
    assert main(["run", "lm-halving", *args, "--out", str(tmp_path), "--quiet"]) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    curve = pd.read_csv(run_dir / "plots" / "hypervolume.csv")
    info = json.loads((run_dir / "run.json").read_text())
    assert curve["member_steps"].iloc[-1] == info["member_steps"] < 4 * 8
