"""``strategy:`` settings of Bayesian optimisation (:class:`BOConfig`), checked in one pass
(:mod:`jaxhpo.strategies.bo` reads them; the ``None`` defaults resolve in
:mod:`jaxhpo.strategies.bo_defaults`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxhpo.strategies.gp import LS_PRIORS
from jaxhpo.strategies.warm import GenerationalConfig
from jaxhpo.strategies.warping import WARPS

#: ``strategy.kernel``'s forms
KERNELS = ("matern", "additive")

#: ``strategy.acquisition``'s forms
ACQUISITIONS = ("thompson", "ei")

#: ``strategy.length_scales``' forms
LENGTH_SCALES = ("ard", "shared", "auto")

#: ``strategy.prior_mean``'s forms
PRIOR_MEANS = ("zero", "fit", "max")

#: ``strategy.multi_objective``'s forms (several objectives)
MULTI_OBJECTIVE = ("hvi", "parego")


@dataclasses.dataclass(frozen=True)
class BOConfig(GenerationalConfig):
    """``strategy:`` settings of Bayesian optimisation (and :class:`GenerationalConfig`'s)."""

    candidates: int = 256  # candidate points per generation's Thompson draws
    fit_steps: int = 100  # Adam steps of each GP hyperparameter fit (per start)
    #: Adam steps of each Thompson draw's local search (None: 50 in 1-3 searched dimensions, 0
    #: above, bo_defaults.auto_local_steps; measured in scripts/bench_search.py)
    local_steps: int | None = None
    restart: bool = True  # also fit from the default start and keep the better fit
    #: propose in a TuRBO-style trust region (trust_region.py); None: with one objective and
    #: one member per generation in 7+ searched dims (bo_defaults.auto_trust_region)
    trust_region: bool | None = None
    initial: int | None = None  # observations of the initial Sobol design (None: dims + 1)
    #: monotone warp of the fitness before the GP standardises it (one objective): "none",
    #: "log" or "rank" (warping.py); None: "log" from 4 searched dims and 2 members (auto_warp)
    warp: str | None = None
    #: without ``trust_region``: propose inside a fixed box of this side around the incumbent
    #: (trust_region.box: sides scaled by the length scales) in this many dims or more
    local_box: float | None = None
    local_box_dims: int = 5  # searched dimensions from which local_box applies
    #: members of each batch (one objective; at most P - 1) that take the posterior mean's best
    #: candidate (None: 1 from 4 searched dims, else 0, auto_greedy)
    greedy: int | None = None
    greedy_steps: int = 0  # Adam steps refining the first greedy member on the posterior mean
    #: with one member per generation (no draw beside a greedy member): every this-many-th
    #: generation's member takes the posterior mean's best candidate (None: never)
    greedy_every: int | None = None
    #: a fit explaining fewer nats than this over noise (fit_gain_nats) proposes by a
    #: population step instead (fallback.py); None: never
    fallback_nats: float | None = None
    #: the GP length scales' prior: "hvarfner" (dimension-scaled log-normal) or "saas"
    #: (half-Cauchy shrinkage of the inverse squared length scales; gp.LS_PRIORS)
    ls_prior: str = "hvarfner"
    #: the GP kernel: "matern" (ARD Matern-5/2) or "additive" (plus a first-order additive
    #: Matern-5/2 with its own amplitude and length scales, gp._Additive)
    kernel: str = "matern"
    #: learn a Kumaraswamy-CDF warp of each input dimension with the GP (gp.warp); None: with
    #: one objective, from 16 members per generation in 4+ searched dims (auto_input_warp)
    input_warp: bool | None = None
    #: "thompson": every member a Thompson draw's minimiser (after the greedy members); "ei":
    #: the first member of each batch (one objective) at log expected improvement's maximiser
    #: (acquisition.py), the greedy members and Thompson draws after it; None: "ei" with one
    #: member per generation in up to 6 searched dims, else "thompson" (auto_acquisition)
    acquisition: str | None = None
    #: with several objectives: "hvi" (hypervolume improvement of per-objective Thompson
    #: draws, mo_thompson.py) or "parego" (a random Chebyshev scalarisation per member)
    multi_objective: str = "hvi"
    #: the GP's constant prior mean on the standardised (warped) fitness: "zero" (the mean of
    #: the observations), "fit" (a fitted constant, N(0, 1) prior), "max" (the worst
    #: observation: unexplored regions look bad, the draws stay near the data)
    prior_mean: str = "zero"
    #: the kernel's length scales: "ard" (one per searched dimension), "shared" (one for all)
    #: or "auto" (both fitted, ARD kept where its marginal posterior beats the shared one's by
    #: more than BIC's penalty for its further scales); None: "auto" from 4 searched dims
    #: with one objective, else "ard" (bo_defaults.auto_length_scales)
    length_scales: str | None = None

    def __post_init__(self):
        super().__post_init__()
        for field, value, lo in (
            ("candidates", self.candidates, 2),
            ("fit_steps", self.fit_steps, 1),
            ("local_steps", 0 if self.local_steps is None else self.local_steps, 0),
            ("initial", 1 if self.initial is None else self.initial, 1),
            ("greedy", 0 if self.greedy is None else self.greedy, 0),
            ("greedy_steps", self.greedy_steps, 0),
            ("greedy_every", 2 if self.greedy_every is None else self.greedy_every, 2),
            ("local_box_dims", self.local_box_dims, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lo:
                raise ValueError(f"strategy.{field}: must be an integer >= {lo}, got {value!r}")
        if self.local_box is not None and not (
            isinstance(self.local_box, int | float) and self.local_box > 0
        ):
            raise ValueError(f"strategy.local_box: a side > 0 or null, got {self.local_box!r}")
        if self.warp is not None and self.warp not in WARPS:
            raise ValueError(f"strategy.warp: one of {', '.join(WARPS)}, got {self.warp!r}")
        if self.ls_prior not in LS_PRIORS:
            raise ValueError(
                f"strategy.ls_prior: one of {', '.join(LS_PRIORS)}, got {self.ls_prior!r}"
            )
        if self.kernel not in KERNELS:
            raise ValueError(f"strategy.kernel: one of {', '.join(KERNELS)}, got {self.kernel!r}")
        for field in ("restart", "trust_region", "input_warp"):
            value = getattr(self, field)
            if field in ("input_warp", "trust_region") and value is None:
                continue
            if not isinstance(value, bool | np.bool_):
                raise ValueError(f"strategy.{field}: true or false, got {value!r}")
        if self.acquisition is not None and self.acquisition not in ACQUISITIONS:
            raise ValueError(
                f"strategy.acquisition: one of {', '.join(ACQUISITIONS)}, got {self.acquisition!r}"
            )
        if self.length_scales is not None and self.length_scales not in LENGTH_SCALES:
            raise ValueError(
                f"strategy.length_scales: one of {', '.join(LENGTH_SCALES)}, "
                f"got {self.length_scales!r}"
            )
        if self.prior_mean not in PRIOR_MEANS:
            raise ValueError(
                f"strategy.prior_mean: one of {', '.join(PRIOR_MEANS)}, got {self.prior_mean!r}"
            )
        if self.multi_objective not in MULTI_OBJECTIVE:
            raise ValueError(
                f"strategy.multi_objective: one of {', '.join(MULTI_OBJECTIVE)}, "
                f"got {self.multi_objective!r}"
            )
