"""Bayesian optimisation: a Gaussian-process surrogate and batch Thompson sampling.

Each generation, a GP is fitted to every (hyperparameters, fitness) pair seen so far, and ``P``
points are proposed at once by Thompson sampling: ``P`` independent draws of the posterior over
a candidate set, each contributing its minimiser (Thompson 1933; batch form as in
Hernández-Lobato, Requeima, Pyzer-Knapp & Aspuru-Guzik 2017, "Parallel and Distributed Thompson
Sampling for Large-scale Accelerated Exploration of Chemical Space", arXiv:1706.01825; Kandasamy,
Krishnamurthy, Schneider & Póczos 2018, "Parallelised Bayesian Optimisation via Thompson
Sampling", AISTATS). Its batch members differ because the draws differ: the right fit for
proposing a whole population per generation. The population trains the proposals as fresh
members, and the next generation is proposed from the grown data set (the generational schedule
of :class:`~jaxhpo.strategies.warm.GenerationalSearch`).

**Surrogate** (:mod:`jaxhpo.strategies.gp`). The GP is built with `tinygp
<https://github.com/dfm/tinygp>`_ (a maintained JAX GP library: kernels and conditioning; it needs
only ``equinox`` and works with jax 0.10-0.11, where gpjax 1.0 pins ``jax<0.11``). Kernel:
``amplitude * Matern-5/2`` with one length scale per dimension (ARD), inputs in the space's
*unit* coordinates (:meth:`jaxhpo.space.Space.to_unit`), a learned homoscedastic noise term,
outputs standardised. Its hyperparameters are fitted each generation by maximum a posteriori
(log-normal priors for standardised data) with ``optax.adam`` from two starts at once, the
previous generation's fit and the default start, keeping the higher marginal posterior: the warm
start alone stalled sequential BO (a fit on one point lands on the prior's very smooth mode and
later warm-started fits explain the data as noise). Each generation's event records which start
won (``fit_start``) and how many nats the fit explains better than "all noise"
(``fit_gain_nats``).

**Acquisition.** Each of the ``P`` Thompson draws is a posterior *function* (pathwise conditioning
on random Fourier features, :func:`~jaxhpo.strategies.gp_draws.optimise_draws`). One set of
``candidates`` points (half uniform in the unit cube, half Gaussian steps of 0.1 from the best 5
observations) is scored under every draw; projected Adam (``local_steps`` steps, optax, every
draw and start in one jit) then starts from each draw's best candidates and stays inside the cube
(by default in 1-3 searched dimensions only, :func:`auto_local_steps`).
Int and choice dimensions are *optimised in the continuous relaxation and rounded through the
space's decoding*: candidates and local results are decoded (:meth:`~jaxhpo.space.Space.from_unit`:
an ``Int`` rounds, a ``Choice`` takes its bin) and encoded back to the bin centre before they are
scored, so a draw scores exactly the configuration that would train. Draw ``p``'s proposal is its
local result when that beats the candidates no earlier draw took, else its best free candidate
(distinct members where the space allows). Fitness is minimised; a diverged member counts as the
generation's worst finite fitness plus its range (:func:`jaxhpo.strategies.evo.shape_fitness`).

**Output warping and the greedy member** (issue 29: bo in 5-10 dimensions trailed CMA-ES and TPE
at 5 x 10). With one objective the fitness is warped before the GP standardises it
(``strategy.warp``, by default ``"log"`` in 4 or more searched dimensions except for one
Thompson draw per generation, :func:`auto_warp`: ``log1p`` of the excess over the best value in
units of its median, :mod:`jaxhpo.strategies.warping`): on heavy-tailed objectives (Rosenbrock)
the raw standardised targets left the region near the optimum flat, and the fit explained it as
noise. The first ``greedy`` members of each batch (by default 1 in 4 or more searched
dimensions, :func:`auto_greedy`) take the posterior mean's best candidate instead of a Thompson
draw's minimiser: the other ``P - 1`` draws explore, one member exploits. Both stay off in 1-3
dimensions, where Hartmann-3 got worse with them.

**Input warping** (``strategy.input_warp``, a Kumaraswamy CDF per dimension learned with the
GP, :func:`~jaxhpo.strategies.gp.warp`): on by default from 16 members per generation in 4+
dimensions with one objective (:func:`auto_input_warp`; the state's GP parameters carry the
decision, so a resumed or older state keeps its own).

**Expected improvement with one member** (``strategy.acquisition``; by default ``"ei"`` with one
member per generation in up to 6 searched dimensions, :func:`auto_acquisition`): one Thompson
draw per generation explores too much, so the member takes log expected improvement's maximiser
instead (LogEI, Ament et al. 2023, :mod:`jaxhpo.strategies.acquisition`; projected Adam from the
best candidates), with the log warp from 4 searched dimensions. In 8 and 10 dimensions, where
the GP's fit to at most 50 points explains little, EI lost to the draw. In batches ``"ei"``
puts that member first, before the greedy member and the draws; it stays off there.

Every default above is measured with ``scripts/bench_search.py``: the figures are in
:mod:`jaxhpo.strategies.bo_defaults`, and the remedies measured and left off (``greedy_steps``,
the ``"rank"`` warp, ``local_box``, ``fallback_nats``, ``greedy_every``, ``ls_prior: saas``,
``kernel: additive``, ``initial: 1``) with theirs in the documentation's strategies page
("Bayesian optimisation's settings, measured").

**Initial design.** Scrambled Sobol points, with the explicit ``points`` and a warm start's best
members in the first rows (:mod:`jaxhpo.strategies.warm`); an earlier run's observations seed the
GP, so with a warm start the first generation's other members are already proposed by the GP.
Until ``initial`` observations are in (``strategy.initial``, by default ``D + 1`` in ``D``
searched dimensions, :func:`auto_initial`) later generations continue the same Sobol sequence:
with one member per generation the GP proposes only from the ``D + 2``-th evaluation on.

**Trust region** (``trust_region``, :mod:`jaxhpo.strategies.trust_region`): TuRBO-1's box around
the incumbent, its side adapted by successes and failures. By default on with one objective and
one member per generation in 7+ searched dimensions, where that member is a Thompson draw
(:func:`auto_trust_region`; Styblinski-Tang-8 one at a time 103 -> 73.5, TPE 82.5).

**Several objectives** (``multi_objective``): ``hvi``, the default, proposes by the hypervolume
improvement of per-objective Thompson draws (:mod:`jaxhpo.strategies.mo_thompson`); ``parego``
by one random Chebyshev scalarisation per member (:mod:`jaxhpo.strategies.parego`). Not with
``trust_region``.

**Randomness.** Generation ``g``'s draws use ``jax.random.fold_in(key(seed), g)`` and its
candidates ``numpy.random.default_rng([seed, g])``: a resumed run proposes what the uninterrupted
one would have.

**State.** :class:`BOState` (numpy arrays and the space; :func:`jaxhpo.checkpoint.pack_tree`
round-trips it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jaxhpo import pareto
from jaxhpo.space import Space
from jaxhpo.strategies import trust_region
from jaxhpo.strategies.base import (
    Capabilities,
    Observation,
    PopulationUpdate,
    StrategyState,
    static,
)
from jaxhpo.strategies.bo_config import KERNELS, MULTI_OBJECTIVE, BOConfig  # noqa: F401
from jaxhpo.strategies.bo_defaults import (  # noqa: F401  (re-exported)
    LOCAL_SEARCH_MAX_DIM,
    auto_acquisition,
    auto_greedy,
    auto_initial,
    auto_input_warp,
    auto_length_scales,
    auto_local_steps,
    auto_trust_region,
    auto_warp,
)
from jaxhpo.strategies.bo_picks import (
    _snap,
    draw_picks,
    ei_pick,
    greedy_picks,
    member_counts,
    thompson_draws,
)
from jaxhpo.strategies.decision import check_proposed, generation_event, shape_fitness
from jaxhpo.strategies.fallback import population_proposals
from jaxhpo.strategies.gp import (  # noqa: F401  (the GP's names, re-exported)
    LS_PRIORS,
    fit_gp,
    fit_length_scales,
    fit_restarts,
    init_theta,
    log_likelihood_gain,
    neg_log_posterior,
    pad,
    posterior,
    standardise,
    x64,
)
from jaxhpo.strategies.gp_draws import draws_at, minimise_mean, optimise_draws  # noqa: F401
from jaxhpo.strategies.mo_thompson import hvi_proposals
from jaxhpo.strategies.parego import objectives_so_far, parego_proposals
from jaxhpo.strategies.warm import GenerationalSearch, apply_points
from jaxhpo.strategies.warping import warp_outputs

_WARM_GENERATION = 1 << 20  # the stream of the warm-started first proposal


class BOState(StrategyState):
    """Bayesian optimisation's state: every observation so far and the current proposals."""

    space: Space = static()  # the search space (structure)
    seed: np.ndarray  # int64 []: the study's seed (draws and candidates derive from it)
    generation: np.ndarray  # int64 []: generations told so far
    X: np.ndarray  # float64 [N, D]: unit coordinates of every observation
    y: np.ndarray  # float64 [N]: their raw minimised fitness (inf: diverged)
    u: np.ndarray  # float64 [P, D]: the current members' unit points
    theta: dict[str, np.ndarray]  # the last GP fit: log_amp [], log_ls [D], log_noise []
    #: float64 [3]: the trust region (length, successes, failures; trust_region.py)
    tr: np.ndarray = dataclasses.field(default_factory=trust_region.initial)
    #: several objectives: float64 [N, M] every observation's objectives, minimised (+inf:
    #: diverged), and [N] their constraint violation (0: feasible); empty with one objective
    Y: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))
    v: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,)))


class BayesOpt(GenerationalSearch):
    """Bayesian optimisation over the space (``strategy.name: bo``); see the module docstring.

    Settings: :class:`BOConfig`.
    """

    name = "bo"
    Config = BOConfig
    State = BOState
    capabilities = Capabilities(objectives=True)

    @classmethod
    def check_objectives(cls, config: Any, objectives: tuple, constraints: tuple) -> None:
        del constraints
        if getattr(config, "trust_region", False):
            raise ValueError(
                "strategy.trust_region: bo's trust region follows one objective; not with "
                f"{len(objectives)} objectives or constraints (its multi-objective forms propose "
                "over the whole space)"
            )

    def uses_trust_region(self, P: int, D: int) -> bool:
        """Whether proposals for ``P`` members per generation in ``D`` searched dimensions stay
        in the trust region: ``strategy.trust_region``, by default :func:`auto_trust_region`
        with one objective."""
        if self.config.trust_region is not None:
            return bool(self.config.trust_region)
        return auto_trust_region(P, D) and len(self.objectives) <= 1

    def initial_points(self, D: int) -> int:
        """Observations of the initial design (scrambled Sobol points, generation after
        generation) before the GP proposes: ``strategy.initial``, by default
        :func:`auto_initial` of the dimension."""
        return auto_initial(D) if self.config.initial is None else self.config.initial

    def init_theta(self, D: int, input_warp: bool = False) -> dict:
        """The GP's default start (:func:`~jaxhpo.strategies.gp.init_theta`) for this kernel,
        with the input warp's parameters where ``strategy.input_warp`` is on, or is left to
        the default and ``input_warp`` says so."""
        c = self.config
        warp = input_warp if c.input_warp is None else c.input_warp
        return init_theta(
            D, additive=c.kernel == "additive", input_warp=warp, mean=c.prior_mean == "fit"
        )

    def _auto_scales(self, D: int) -> str:
        """``strategy.length_scales``' default: :func:`auto_length_scales` with one objective
        (measured there); several objectives keep ARD, as measured in
        ``scripts/bench_multiobjective.py``."""
        return auto_length_scales(D) if len(self.objectives) <= 1 else "ard"

    def study_input_warp(self, D: int, P: int) -> bool:
        """Whether a study of ``P`` members in ``D`` searched dimensions learns the input warp
        by default (:func:`auto_input_warp`, one objective); the decision is kept in the GP's
        parameters (the state's ``theta`` has the warp's or not)."""
        return auto_input_warp(D, P) and len(self.objectives) <= 1

    # -- coordinates -------------------------------------------------------------------------

    @staticmethod
    def _sobol(space: Space, seed: int, start: int, n: int) -> np.ndarray:
        """Points ``start .. start + n`` of the space's scrambled Sobol sequence, snapped."""
        cols = space.sobol(seed, start + n)
        return _snap(space, np.asarray(space.to_unit(cols), np.float64)[start:])

    @staticmethod
    def snap(space: Space, u: np.ndarray) -> np.ndarray:
        """Unit points with ints and choices moved to their bin centres (:func:`_snap`)."""
        return _snap(space, u)

    @staticmethod
    def _decode(space: Space, u: np.ndarray) -> dict[str, np.ndarray]:
        cols = space.from_unit(u)
        return {k: np.asarray(cols[k]) for k in space.searched}

    # -- proposals ---------------------------------------------------------------------------

    def _fit(self, theta0, X: np.ndarray, y: np.ndarray):
        """The GP fit from the previous fit and (``restart``) the default start, the higher
        marginal posterior kept; returns ``(theta, (X, y, mask) padded, ys, info)``."""
        ys = standardise(shape_fitness(y).astype(np.float64))
        default = self.init_theta(X.shape[1], "log_warp_a" in theta0)
        theta0 = {**default, **theta0}  # a start without the additive parameters gets the default
        # the default start again only where it differs (bohb proposes from the default)
        same = all(np.array_equal(np.asarray(theta0[k]), np.asarray(v)) for k, v in default.items())
        starts = [theta0, default] if self.config.restart and not same else [theta0]
        stacked = jax.tree.map(lambda *a: np.stack([np.asarray(v, np.float64) for v in a]), *starts)
        with x64():
            data = pad(X, ys)
            form = self.config.length_scales or self._auto_scales(X.shape[1])
            kw = {"steps": self.config.fit_steps, "ls_prior": self.config.ls_prior}
            theta, index, scales = fit_length_scales(stacked, *data, form, N=len(y), **kw)
            gain = float(log_likelihood_gain(theta, *data))
            if self.config.prior_mean != "zero":  # proposals condition on y less the mean
                m = theta["mean"] if "mean" in theta else float(np.max(ys))
                data = (data[0], (data[1] - m) * data[2], data[2])
        info = {"fit_start": ("previous", "default")[int(index)], "fit_gain_nats": gain}
        if form == "auto":
            info["length_scales"] = scales
        return theta, data, ys, info

    def _candidates(self, space, rng, X: np.ndarray, ys: np.ndarray, lo=0.0, hi=1.0) -> np.ndarray:
        """Half uniform in the box ``[lo, hi]`` (the cube, or a trust region), half Gaussian
        steps (sd 0.1, at most a quarter of the box's side) from the best 5 points, in the box."""
        N, D = X.shape
        C = self.config.candidates
        n_local = C // 2
        best = X[np.argsort(ys, kind="stable")[: min(5, N)]]
        local = best[rng.integers(0, len(best), size=n_local)]
        sd = np.minimum(0.1, (np.asarray(hi) - lo) / 4)
        local = np.clip(local + sd * rng.standard_normal((n_local, D)), lo, hi)
        uniform = lo + (np.asarray(hi) - lo) * rng.random((C - n_local, D))
        return _snap(space, np.concatenate([local, uniform]))

    def propose(
        self,
        space: Space,
        seed: int,
        g: int,
        theta0,
        X: np.ndarray,
        y: np.ndarray,
        P: int,
        tr=None,
        stream: int | None = None,
        exclude: list[np.ndarray] = (),
        box: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        """``P`` new unit points of ``space`` by batch Thompson sampling given observations
        ``(X, y)`` (inside the trust region of length ``tr[0]`` when given; draws and candidates
        from the sub-stream ``stream`` of generation ``g`` when given: ParEGO's members; no
        point of ``exclude`` again where the candidates allow; inside ``box = (lo [D], hi [D])``
        when given); returns ``(u, theta, info)``."""
        D = X.shape[1]
        c = self.config
        acquisition = auto_acquisition(P, D) if c.acquisition is None else c.acquisition
        # one Thompson draw per generation keeps the raw values (auto_warp)
        auto = auto_warp(D) if P > 1 or acquisition == "ei" else "none"
        warp = auto if c.warp is None else c.warp
        if stream is None and warp != "none":  # one objective (not ParEGO's scalarisations)
            y = warp_outputs(shape_fitness(y).astype(np.float64), warp)
        theta, data, ys, info = self._fit(theta0, X, y)
        # the unit cube as a [D] box too: one compiled program either way
        full = (np.zeros(D), np.ones(D))
        lo, hi = full if tr is None else trust_region.box(X, ys, theta["log_ls"], tr[0])
        if tr is None and self.config.local_box is not None and self.config.local_box_dims <= D:
            lo, hi = trust_region.box(X, ys, theta["log_ls"], self.config.local_box)
        if box is not None:  # the caller's box (bohb: the budget coordinate held at R)
            lo, hi = (np.asarray(v, np.float64) for v in box)
        streams = [seed, g] if stream is None else [seed, g, stream]
        rng = np.random.default_rng(streams)
        cand = self._candidates(space, rng, X, ys, lo, hi)
        fb = self.config.fallback_nats
        if stream is None and fb is not None and info["fit_gain_nats"] < fb:
            u = _snap(space, population_proposals(rng, X, ys, P, lo, hi))
            return u, jax.tree.map(np.asarray, theta), {**info, "proposal": "population"}
        taken = np.zeros(len(cand), bool)
        for q in exclude:
            taken |= np.all(cand == q, axis=1)
        picks: list[np.ndarray] = list(exclude)
        n_ei, n_greedy = member_counts(c, acquisition, D, P, g, stream)
        box = (np.asarray(lo, np.float64), np.asarray(hi, np.float64))  # made 64-bit inside
        if n_ei:  # the first member at log EI's maximiser
            picks.append(ei_pick(space, theta, data, cand, taken, box))
        if n_greedy:
            for pick in greedy_picks(space, theta, data, cand, n_greedy, c.greedy_steps, box):
                picks.append(pick)
                taken |= np.all(cand == pick, axis=1)
        if n_ei + n_greedy < P:  # the Thompson draws
            key = jax.random.fold_in(jax.random.key(seed), g)
            key = key if stream is None else jax.random.fold_in(key, stream)
            f, x_loc, f_loc = thompson_draws(c, space, key, theta, data, cand, box, P)
            picks += draw_picks(cand, f, x_loc, f_loc, taken, picks, P - n_ei - n_greedy)
        return np.stack(picks[len(exclude) :]), jax.tree.map(np.asarray, theta), info

    # -- Strategy ----------------------------------------------------------------------------

    def init(self, seed: int, space: Space, size: int | None):
        if size is None or isinstance(size, bool) or size < 1:
            raise ValueError(f"population.size: the bo strategy needs a size >= 1, got {size}")
        D = len(space.searched)
        if D == 0:
            raise ValueError("space: the bo strategy needs at least one searched dimension")
        P = int(size)
        seeded = self.seed(space, P)
        X = np.zeros((0, D))
        y = np.zeros((0,))
        theta = jax.tree.map(np.asarray, self.init_theta(D, self.study_input_warp(D, P)))
        if seeded.cols is not None and len(seeded.fitness) >= 2:
            X = np.asarray(space.to_unit(seeded.cols), np.float64)
            y = np.asarray(seeded.fitness, np.float64)
            u, theta, _ = self.propose(space, seed, _WARM_GENERATION, theta, X, y, P)
        else:
            u = self._sobol(space, seed, 0, P)
        cols = apply_points(space, self._decode(space, u), seeded)
        u = np.asarray(space.to_unit(cols), np.float64)
        state = BOState(
            space=space,
            seed=np.asarray(seed, np.int64),
            generation=np.asarray(0, np.int64),
            X=X,
            y=y,
            u=u,
            theta=theta,
            tr=trust_region.initial(),
        )
        return state, space.from_unit(u)

    def update(self, state: BOState, obs: Observation) -> tuple[BOState, PopulationUpdate]:
        if not self.due(int(obs.step)):
            return state, PopulationUpdate()
        space = state.space
        u = np.asarray(state.u, np.float64)
        P = u.shape[0]
        check_proposed(self.name, P, obs)
        raw = obs.fitness()
        X = np.concatenate([np.asarray(state.X, np.float64).reshape(-1, u.shape[1]), u])
        y = np.concatenate([np.asarray(state.y, np.float64), raw])
        Y, V = objectives_so_far(state.Y, state.v, obs)
        seed, g = int(state.seed), int(state.generation)
        done = self.last(obs)
        tr = np.asarray(state.tr, np.float64)
        # one objective without constraints (else the proposals are multi-objective ones)
        use_tr = not len(Y) and self.uses_trust_region(P, X.shape[1])
        if use_tr:
            tr = trust_region.adapt(tr, y[:-P], raw, X.shape[1])
        if done:  # the last generation: nothing more to train, no proposal
            new_u, theta, info = u, state.theta, {}
        elif len(y) < self.initial_points(X.shape[1]):  # the initial design goes on
            new_u = self._sobol(space, seed, len(y), P)
            theta, info = state.theta, {"proposal": "sobol"}
        elif len(Y):  # several objectives
            form = parego_proposals if self.config.multi_objective == "parego" else hvi_proposals
            new_u, theta, info = form(self, space, seed, g, state.theta, X, Y, V, P)
            info = {**info, "front": int(np.sum(pareto.front_mask(Y, V)))}
        else:
            region = tr if use_tr else None  # propose's `tr` (its `box` is a caller's fixed box)
            new_u, theta, info = self.propose(space, seed, g, state.theta, X, y, P, region)
        if use_tr:
            info = {**info, "trust_region_length": float(tr[0])}
        best, event = generation_event(obs, raw, g, "bo")
        names = space.searched
        event |= {
            "best": {k: _scalar(v[0]) for k, v in self._decode(space, u[best][None]).items()},
            "observations": int(len(y)),
            "length_scales": {
                k: float(np.exp(v)) for k, v in zip(names, theta["log_ls"], strict=True)
            },
            "noise": float(np.exp(theta["log_noise"])),
            **info,
            "diverged": int(np.sum(~np.isfinite(raw))),
        }
        new_state = state.replace(
            generation=np.asarray(g + 1, np.int64),
            X=X,
            y=y,
            u=new_u,
            theta=jax.tree.map(np.asarray, theta),
            tr=tr,
            Y=Y if len(Y) else state.Y,
            v=V if len(Y) else state.v,
        )
        if done:
            return new_state, PopulationUpdate(events=[event], done=True)
        return new_state, PopulationUpdate(
            reinit=np.ones(P, bool), hparams=self._decode(space, new_u), events=[event]
        )


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
