"""Any Optuna sampler as a generational population strategy (``strategy.name: optuna``).

`Optuna <https://optuna.org>`_ (Akiba, Sano, Yanase, Ohta & Koyama 2019, "Optuna: A
Next-generation Hyperparameter Optimization Framework", KDD, arXiv:1907.10902) proposes trials
one at a time through ``study.ask()``; here a generation *asks* ``P`` trials at once, the
population trains them as one program, and their validation results are *told* back
(``study.tell``), so Optuna's samplers get the batched, vectorised objective its users ask for.
Nothing of a sampler is re-implemented: TPE (Bergstra, Bardenet, Bengio & Kégl 2011), Optuna's GP
sampler, CMA-ES (through the ``cmaes`` package), scrambled Sobol / Halton (QMC), NSGA-II/III and
random search are Optuna's own (:data:`SAMPLERS`; any ``optuna.samplers.*Sampler`` name works).

**Space.** ``Float`` dimensions become ``FloatDistribution(low, high, log=log)``, ``Int`` ones
``IntDistribution(low, high, log=log)``, ``Choice`` ones ``CategoricalDistribution(values)``;
``Fixed`` values are not study parameters. Every ask passes these distributions
(``study.ask(fixed_distributions)``), so trials hold exactly the members' hyperparameters.

**Batch defaults.** Samplers get ``seed`` and, where they take it, a population matching a
generation (NSGA-II/III ``population_size=P``, CMA-ES ``popsize=P``); TPE gets
``constant_liar=True`` (Optuna's setting for asking trials before earlier ones are told: running
trials count as bad results, which spreads a batch). ``strategy.sampler_options`` overrides any of
them or passes other constructor arguments (``{"n_startup_trials": 8}``).

**Study and storage.** ``strategy.storage`` is any Optuna storage URL
(``sqlite:///study.db``, ``postgresql://...``, a journal file through ``optuna.storages``);
the default ``None`` keeps the study in memory (the strategy cannot know the run directory; name a
file to look at the study with ``optuna-dashboard sqlite:///study.db`` or
``optuna.visualization``). ``strategy.study`` names the study; an existing study of that
name is continued (its trials inform the sampler); ``None`` makes a new unique name, kept in the
strategy state so a resumed run finds it. The study minimises :meth:`Observation.fitness` (the
objective, negated when it is maximised; its metric name says so, e.g. ``-accuracy``). A diverged
member's trial is told ``FAIL``. Each trial carries user attributes ``member`` (the jaxhpo member
id) and ``generation``.

**Several objectives** (``strategy.objectives``, ``strategy.constraints``): the study has one
``minimize`` direction per objective and is told :meth:`Observation.fitness_matrix`, each
objective minimised (a maximised one negated, its metric name ``-name``), the same convention as
one objective, so the state's told values, a failed (diverged) member and resume need no
direction of their own. ``init`` makes the study before any observation says how many objectives
there are; the first tell re-creates it with its directions, the generation's asked trials kept
(numbers, parameters, the sampler's attributes). Constraints are each member's violations,
a user attribute ``constraints`` read by the sampler's ``constraints_func`` (NSGA-II/III, TPE,
GP). NSGA-II, multi-objective TPE and the GP sampler use them; a pruner is refused in one line
(Optuna cannot prune several objectives: RFC optuna#3450; ``halving`` and ``hyperband`` can).

**Seeding.** Explicit ``points`` and a warm start's best members are enqueued
(``study.enqueue_trial``) before the first generation is asked, so they are its first members;
a warm start's observations (:mod:`jaxhpo.strategies.warm`) are added to the study as completed
trials (``study.add_trial``).

**Randomness and resume.** Generation ``g`` is asked with a fresh sampler seeded from
``numpy.random.SeedSequence([seed, g])`` (QMC from ``[seed]`` alone: its scrambling must stay the
same along the sequence). Samplers whose state
is the study's trials (TPE, GP, random, QMC, NSGA-II, CMA-ES) then propose what an uninterrupted
run would, after a resume: the state (a dict of numpy arrays) holds the study's name, the current
trials' numbers and every told trial's parameters (Optuna's internal representation) and value.
With a database storage the resumed run deletes the empty study its restart created and cuts the
study back to the checkpoint (:mod:`jaxhpo.strategies.optuna_resume`: every trial after the
checkpoint's finished ones is deleted in one transaction), so the database ends as the
uninterrupted run's; another persistent storage is re-opened, its running trials told and the
restart's own trials failed; with the in-memory default it rebuilds the study from the state.

**Dashboard.** Every evaluation reports each member's objective to its trial (``trial.report`` at
the trial's own step, :mod:`jaxhpo.strategies.optuna_report`), so optuna-dashboard shows
intermediate values; the state keeps the generation's reports, so a trial a resumed run adds
as finished carries them too (an in-memory study rebuilt on resume keeps earlier generations'
parameters and values only). :meth:`OptunaSearch.attach` links the study to its run: user
attributes ``run_dir`` and ``run`` on the study, and ``optuna_study`` / ``optuna_storage`` in
``run.json``.
"""

from __future__ import annotations

import dataclasses
import inspect
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from jaxhpo import conditions
from jaxhpo.space import Int, Space
from jaxhpo.storage_url import check_storage_url
from jaxhpo.strategies import optuna_prune, optuna_report, optuna_resume
from jaxhpo.strategies.base import Capabilities, Observation, PopulationUpdate
from jaxhpo.strategies.decision import check_proposed, generation_event
from jaxhpo.strategies.optuna_resume import (
    cut_to_start,
    name_array,
    name_of,
    reopen_with_directions,
)
from jaxhpo.strategies.optuna_study import (  # noqa: F401  (re-exported)
    EXTRA_PACKAGES,
    INSTALL,
    SAMPLERS,
    LiveStudy,
    OptunaState,
    constraint_values,
    constraints_of,
    distributions,
    import_optuna,
    make_trial,
    metric_names,
    n_objectives,
    resolve_sampler,
    told_values,
)
from jaxhpo.strategies.warm import GenerationalConfig, GenerationalSearch


@dataclasses.dataclass(frozen=True)
class OptunaConfig(GenerationalConfig):
    """``strategy:`` settings of the Optuna strategy (and :class:`GenerationalConfig`'s)."""

    sampler: str = "tpe"  # tpe | gp | cmaes | qmc | nsga2 | random | any optuna *Sampler name
    storage: str | None = None  # an Optuna storage URL (sqlite:///study.db); None: memory
    study: str | None = None  # the study's name (None: a new unique name)
    sampler_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # its kwargs
    pruner: str | None = None  # median | percentile | threshold | wilcoxon | nop | *Pruner
    pruner_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # its kwargs

    def __post_init__(self):
        super().__post_init__()
        if self.storage is not None and not (
            isinstance(self.storage, str) and "://" in self.storage
        ):
            raise ValueError(
                f"strategy.storage: expected an Optuna storage URL such as "
                f"sqlite:///study.db, got {self.storage!r}"
            )
        if self.study is not None and not (isinstance(self.study, str) and self.study):
            raise ValueError(f"strategy.study: expected a name, got {self.study!r}")


class OptunaSearch(GenerationalSearch):
    """An Optuna sampler proposes every generation (see the module docstring).

    Settings: :class:`OptunaConfig`.
    """

    name = "optuna"
    Config = OptunaConfig
    # several objectives: one minimised direction each (NSGA-II, multi-objective TPE and GP)
    capabilities = Capabilities(objectives=True)
    State = OptunaState

    @classmethod
    def restart_from_scratch(cls, cfg: Any, run_dir: Path) -> None:
        """A database study a killed start asked trials in is cut back to its start."""
        cut_to_start(cfg, run_dir)

    @classmethod
    def check_objectives(cls, config: OptunaConfig, objectives: tuple, constraints: tuple) -> None:
        """A pruner with several objectives is refused (Optuna cannot prune them)."""
        del constraints
        optuna_prune.check_objectives(config.pruner, len(objectives))

    def __init__(self, config: OptunaConfig | None = None, /, *, metric: str = "loss", **fields):
        super().__init__(config, metric=metric, **fields)
        cfg = self.config
        self.optuna = import_optuna()
        self.optuna.logging.set_verbosity(self.optuna.logging.WARNING)  # no line per trial
        self.sampler_cls = resolve_sampler(cfg.sampler)
        if cfg.storage is not None:  # dialect, driver, a sqlite file's folder and header
            check_storage_url(cfg.storage, "strategy.storage")
        self._make_sampler(0, 2)  # bad options fail here, before anything compiles
        self.pruner = optuna_prune.make_pruner(self.optuna, cfg.pruner, cfg.pruner_options)
        self.live = LiveStudy()  # the host-side study: see LiveStudy

    @property
    def study(self) -> Any:
        """The live Optuna study (``None`` before ``init``)."""
        return self.live.study

    # -- Optuna plumbing ---------------------------------------------------------------------

    def _make_sampler(self, seed: int, size: int, generation: int = 0, constraints=False):
        cls = getattr(self.optuna.samplers, self.sampler_cls)
        accepted = inspect.signature(cls).parameters
        kwargs: dict[str, Any] = {}
        if "seed" in accepted:
            same = self.sampler_cls == "QMCSampler"  # one scrambling along the sequence
            stream = [int(seed)] if same else [int(seed), int(generation)]
            kwargs["seed"] = int(np.random.SeedSequence(stream).generate_state(1)[0] >> 1)
        if "population_size" in accepted:
            kwargs["population_size"] = max(int(size), 2)
        if "popsize" in accepted:
            kwargs["popsize"] = int(size)
        if "constant_liar" in accepted:
            kwargs["constant_liar"] = True
        if constraints and "constraints_func" in accepted:  # the told trials' user attribute
            kwargs["constraints_func"] = constraints_of
        kwargs.update(self.config.sampler_options)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"strategy.sampler_options: optuna.samplers.{self.sampler_cls} rejects "
                f"{self.config.sampler_options}: {e}"
            ) from None

    def _create_study(self, name: str, sampler, objectives: int = 1):
        try:
            study = self.optuna.create_study(
                storage=self.config.storage,
                sampler=sampler,
                pruner=self.pruner or self.optuna.pruners.NopPruner(),
                study_name=name,
                directions=["minimize"] * int(objectives),  # told values are minimised
                load_if_exists=True,
            )
        except Exception as e:  # noqa: BLE001 - sqlalchemy's many errors: one line naming it
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(
                f"strategy.storage: cannot open {self.config.storage}: {first}"
            ) from None
        for key, value in self.live.run_attrs.items():  # the run it belongs to (attach)
            study.set_user_attr(key, value)
        return study

    def _ask(self, space: Space, study, P: int, g: int):
        """``P`` new trials: ``(numbers, internal [P, D], columns)``."""
        dists = distributions(space)
        numbers, internal, values = [], [], {k: [] for k in dists}
        for _ in range(P):  # Optuna asks one trial at a time (host work between generations)
            trial = conditions.ask(study, space, dists)  # define-by-run: active only
            trial.set_user_attr("generation", int(g))
            self.live.running[trial.number] = trial
            numbers.append(trial.number)
            internal.append([conditions.internal(trial, k, d) for k, d in dists.items()])
            for k in dists:
                values[k].append(trial.params.get(k, np.nan))  # NaN: inactive
        cols = {}
        for k, v in values.items():
            arr = np.asarray(v, dtype=object)
            try:
                cols[k] = arr.astype(np.float64)
            except (TypeError, ValueError):
                cols[k] = arr
        return numbers, np.asarray(internal, np.float64).reshape(P, -1), space.deactivate(cols)

    @staticmethod
    def _params(space: Space, row: np.ndarray) -> dict[str, Any]:
        pairs = zip(distributions(space).items(), row)  # NaN: an inactive conditional dimension
        return {k: d.to_external_repr(float(x)) for (k, d), x in pairs if not np.isnan(x)}

    def _trial(self, space, row, value, member=None, generation=None, reported=None, **kw):
        attrs = {} if member is None else {"member": int(member), "generation": int(generation)}
        pruned, cons = bool(kw.get("pruned", False)), kw.get("cons")  # cons: [C] violations
        return make_trial(self.optuna, space, row, value, attrs, reported, pruned, cons)

    def attach(self, state, run_dir) -> dict[str, Any]:
        """Links the study to the run: user attributes ``run_dir`` and ``run`` (the run's name)
        on the study, set again whenever it is re-opened; its name and storage for run.json."""
        name = name_of(state.study)
        run_dir = Path(run_dir)
        self.live.run_attrs = {"run_dir": str(run_dir.absolute()), "run": run_dir.name}
        if self.study is not None and self.study.study_name == name:
            for key, value in self.live.run_attrs.items():
                self.study.set_user_attr(key, value)
        return {"optuna_study": name, "optuna_storage": self.config.storage or "memory"}

    # -- Strategy ----------------------------------------------------------------------------

    def init(self, seed: int, space: Space, size: int | None):
        if size is None or isinstance(size, bool) or size < 1:
            raise ValueError(f"population.size: the optuna strategy needs a size >= 1, got {size}")
        if not space.searched:
            raise ValueError("space: the optuna strategy needs at least one searched dimension")
        P = int(size)
        dists = distributions(space)
        seeded = self.seed(space, P)
        name = self.config.study or f"jaxhpo-{uuid.uuid4().hex[:12]}"
        sampler = self._make_sampler(seed, P, 0)
        study = self._create_study(name, sampler)
        self.live.study = study
        base = len(study.get_trials(deepcopy=False))  # a continued study's earlier trials
        rows, fitness = np.zeros((0, len(dists))), np.zeros((0,))
        if seeded.cols is not None:
            rows = np.stack(
                [
                    [d.to_internal_repr(_py(seeded.cols[k][i], space[k])) for k, d in dists.items()]
                    for i in range(len(seeded.fitness))
                ]
            )
            fitness = np.asarray(seeded.fitness, np.float64)
            for row, value in zip(rows, fitness, strict=True):
                study.add_trial(self._trial(space, row, value))
        for point in seeded.points:
            params = {k: _py(v, space[k]) for k, v in point.items()}
            study.enqueue_trial(params, skip_if_exists=False)
        numbers, internal, cols = self._ask(space, study, P, 0)
        self.live.init_trials = list(numbers)
        state = OptunaState(
            space=space,
            seed=np.asarray(seed, np.int64),
            generation=np.asarray(0, np.int64),
            study=name_array(name),
            trials=np.asarray(numbers, np.int64),
            current=internal,
            params=rows,  # every finished trial of this run, the warm start's first
            values=fitness,
            base=np.asarray(base, np.int64),
            start=np.asarray(0, np.int64),
            reports=np.zeros((0, P)),
            report_steps=np.zeros((0,), np.int64),
            pruned=np.zeros(P),
            told_pruned=np.zeros(len(fitness)),
            report_row=np.zeros((0,), np.int64),
            report_at=np.zeros((0,), np.int64),
            report_value=np.zeros((0,)),
            told_constraints=np.zeros((len(fitness), 0)),
        )
        full = space.from_unit(np.full((P, len(space.searched)), 0.5))
        full.update(cols)
        return state, full

    def _study_for(self, state) -> Any:
        """This process's study, or (after a resume) the state's study, re-opened or rebuilt
        (:func:`jaxhpo.strategies.optuna_resume.study_for`)."""
        return optuna_resume.study_for(self, state)

    def update(self, state: OptunaState, obs: Observation):
        numbers = [int(n) for n in np.asarray(state.trials)]
        P = len(numbers)
        check_proposed(self.name, P, obs)
        M = n_objectives(obs)
        optuna_prune.check_objectives(self.pruner, M)
        study = self._study_for(state)
        pruned = optuna_prune.pruned_mask(state, P)
        state = optuna_report.report(
            state, self.live.running, obs, self.config.generation_steps, pruned, send=M == 1
        )
        if not self.due(int(obs.step)):
            if self.pruner is None:
                return state, PopulationUpdate()
            return optuna_prune.prune(self, study, state, obs)
        if len(study.directions) != M:  # the first tell of a study with several objectives
            study = reopen_with_directions(self, study, state, M)
        if not study.metric_names:
            with warnings.catch_warnings():  # ExperimentalWarning: the API is stable in use
                warnings.simplefilter("ignore")
                study.set_metric_names(metric_names(obs))
        raw = told_values(obs)
        for i in np.flatnonzero(pruned):  # a pruned trial's value: its last reported one
            raw[i] = optuna_prune.last_reported(state, i, raw[i])
        cons = constraint_values(obs)
        if obs.constraints:  # the sampler reads them from the trials it is told
            study.sampler = self._make_sampler(int(state.seed), P, int(state.generation), True)
        g = int(state.generation)
        current = np.asarray(state.current, np.float64).reshape(P, -1)
        self._tell(study, state, obs, numbers, raw, pruned, cons)
        earlier = np.asarray(state.values, np.float64)
        values = np.concatenate([earlier.reshape((-1, M)[: raw.ndim]), raw])
        fit = obs.fitness()  # several objectives: the Pareto order (0: the best)
        best, event = generation_event(obs, fit, g, f"optuna:{self.sampler_cls}")
        event |= {
            "best": self._params(state.space, current[best]),
            "study": study.study_name,
            "trials": [int(n) for n in numbers],
            "diverged": int(np.sum(~np.isfinite(fit))),
        }
        told = state.told_pruned
        told = np.zeros(len(values) - P) if told is None else np.asarray(told)
        rows = np.asarray(state.params).reshape(-1, current.shape[1])
        new_state = state.replace(
            generation=np.asarray(g + 1, np.int64),
            params=np.concatenate([rows, current]),
            values=values,
            start=np.asarray(int(obs.step), np.int64),
            reports=np.zeros((0, P)),
            report_steps=np.zeros((0,), np.int64),
            pruned=np.zeros(P),
            told_pruned=np.concatenate([told, pruned]).astype(np.float64),
            told_constraints=_append_rows(state.told_constraints, len(values) - P, cons),
            **optuna_report.archive(state, len(values) - P),
        )
        if self.last(obs):
            new_state = new_state.replace(trials=np.zeros((0,), np.int64))
            return new_state, PopulationUpdate(events=[event], done=True)
        study.sampler = self._make_sampler(int(state.seed), P, g + 1, bool(obs.constraints))
        new_numbers, internal, cols = self._ask(state.space, study, P, g + 1)
        new_state = new_state.replace(trials=np.asarray(new_numbers, np.int64), current=internal)
        fresh = np.ones(P, bool)  # pruned members train again as new trials
        return new_state, PopulationUpdate(reinit=fresh, hparams=cols, active=fresh, events=[event])

    def _tell(self, study, state: OptunaState, obs: Observation, numbers, raw, pruned, cons):
        """Tells the generation's trials their values (one per objective) and constraint values
        (adds them as finished trials when this process did not ask them: a resumed run)."""
        g = int(state.generation)
        current = np.asarray(state.current, np.float64).reshape(len(numbers), -1)
        TrialState = self.optuna.trial.TrialState
        for i, n in enumerate(numbers):
            trial = self.live.running.pop(n, None)
            if trial is None:  # resumed without the running trial: add it as finished
                reported = optuna_report.reported(state, i)
                member = obs.member_id[i]
                add = self._trial(
                    state.space,
                    current[i],
                    raw[i],
                    member,
                    g,
                    reported,
                    pruned=pruned[i],
                    cons=cons[i],
                )
                study.add_trial(add)
                continue
            trial.set_user_attr("member", int(obs.member_id[i]))
            if cons.shape[1]:
                trial.set_user_attr("constraints", [float(c) for c in cons[i]])
            if pruned[i]:
                study.tell(n, state=TrialState.PRUNED)
            elif np.all(np.isfinite(raw[i])):
                study.tell(n, raw[i].tolist() if np.ndim(raw[i]) else float(raw[i]))
            else:
                study.tell(n, state=TrialState.FAIL)


def _append_rows(earlier: Any, n: int, rows: np.ndarray) -> np.ndarray:
    """``earlier`` constraint rows (``None``: ``n`` rows without constraints) with ``rows``."""
    C = rows.shape[1]
    earlier = np.zeros((n, C)) if earlier is None or n == 0 else np.asarray(earlier, np.float64)
    earlier = earlier.reshape(n, -1) if earlier.size else np.zeros((n, 0))
    if earlier.shape[1] != C:  # a generation's constraints differ: pad with 0 (satisfied)
        earlier = np.zeros((n, C))
    return np.concatenate([earlier, rows])


def _py(v: Any, dim: Any) -> Any:
    """A Python scalar of the dimension's kind (Optuna stores parameters as JSON)."""
    v = v.item() if isinstance(v, np.generic) else v
    return int(round(v)) if isinstance(dim, Int) else v
