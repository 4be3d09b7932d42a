"""Bayesian optimisation's defaults that depend on the number of searched dimensions, each with
the measurement that set it (:mod:`jaxhpo.strategies.bo`'s ``None`` settings resolve here)."""

from __future__ import annotations

#: Searched dimensions up to which the Thompson draws are refined by local search by default.
LOCAL_SEARCH_MAX_DIM = 3


def auto_local_steps(D: int) -> int:
    """Default local-search steps of each Thompson draw in ``D`` searched dimensions: 50 up to
    :data:`LOCAL_SEARCH_MAX_DIM`, else 0 (the draw's best candidate).

    Measured with ``scripts/bench_search.py`` (5 generations x 10, 10 seeds, median regret;
    scripts/results/bench_search_batch.json): in 2-3 dimensions the refinement makes the
    proposals precise (``bo_before``, the best of 256 candidates without the fit restart, to
    ``bo``: quadratic 4.4e-3 -> 1.1e-5, Branin 0.030 -> 3.7e-4, Hartmann-3 0.018 -> 1.9e-4); in
    5-8 dimensions it follows each draw's extrapolation and over-explores (``bo_local``, the
    refinement in every dimension, to ``bo``: Styblinski-Tang-8 150 -> 102, Rosenbrock-5
    3751 -> 1283, Hartmann-6 1.13 -> 0.28).
    """
    return 50 if D <= LOCAL_SEARCH_MAX_DIM else 0


#: searched dimensions up to which one member per generation takes log EI by default
EI_MAX_DIM = 6


def auto_acquisition(P: int, D: int) -> str:
    """Default acquisition with ``P`` members per generation in ``D`` searched dimensions:
    ``"ei"`` (log expected improvement's maximiser, :mod:`jaxhpo.strategies.acquisition`) for
    one member in up to :data:`EI_MAX_DIM` dimensions, else ``"thompson"``.

    Measured with ``scripts/bench_search.py`` (10 seeds, median regret; one Thompson draw with
    raw values -> log EI with the log warp in 4+ dimensions; Optuna's TPE beside;
    scripts/results/bench_search_seq.json). One member per generation (50 x 1): Levy-5 2.89 ->
    0.249 (TPE 2.16), Ackley-5 12.7 -> 8.03 (11.0), Rosenbrock-5 1111 -> 79.4 (515), Hartmann-6
    0.181 -> 0.194 (0.389), quadratic 2.1e-5 -> 5.9e-5, Branin 2.1e-4 -> 8.8e-5, Hartmann-3
    7.9e-3 -> 7.9e-3. In 8 and 10 dimensions EI lost to the draw: Styblinski-Tang-8 103 -> 129
    (TPE 82.5, random 124; with input warping, the additive kernel or the SAAS-like prior no
    better, bench_search_ei.json), and with 40 evaluations (bench_search_10d_seq.json)
    Styblinski-Tang-10 160 -> 184, Levy-10 43.5 -> 43.7, Ackley-10 19.9 -> 19.3 (random 177,
    44.0, 20.2): there the GP's fit to at most 50 points explains little, and EI exploits it.
    Without the log warp EI's Rosenbrock-5 was 1945 (Levy-5 0.303). In batches (5 x 10,
    bench_search_ei.json) EI's member before the greedy member, or in its place, lost to the
    greedy member with Thompson draws (Levy-5 2.51 -> 2.76 / 2.02, Ackley-5 10.1 -> 10.1 /
    12.7, Rosenbrock-5 260 -> 388 / 560, Styblinski-Tang-8 87.8 -> 109 / 106): batches keep
    Thompson sampling. The draw one at a time in 7+ dimensions proposes inside the trust region
    since (:func:`auto_trust_region`).
    """
    return "ei" if P == 1 and D <= EI_MAX_DIM else "thompson"


def auto_warp(D: int) -> str:
    """Default output warp in ``D`` searched dimensions: ``"log"`` above
    :data:`LOCAL_SEARCH_MAX_DIM`, else ``"none"`` (see :func:`auto_greedy`); one Thompson draw
    per generation (``acquisition: thompson`` with one member) keeps the raw values.

    Measured with one member per generation (``scripts/bench_search.py``, 50 x 1, 10 seeds,
    median regret, raw -> log; scripts/results/bench_search_issue29.json, ``bo_seq_log``):
    Rosenbrock-5 1111 -> 166, Ackley-5 12.7 -> 9.19, Levy-5 2.89 -> 3.05, Styblinski-Tang-8
    103 -> 113, Hartmann-6 0.181 -> 0.216: two rows better, two worse, so ``seq`` keeps the raw
    values (``strategy.warp=log`` where the objective is heavy-tailed).
    """
    return "log" if D > LOCAL_SEARCH_MAX_DIM else "none"


def auto_greedy(D: int) -> int:
    """Default greedy members of each batch in ``D`` searched dimensions: 1 above
    :data:`LOCAL_SEARCH_MAX_DIM`, else 0.

    Measured with ``scripts/bench_search.py`` (5 x 10, 10 seeds, median regret, ``bo_pre29`` ->
    the log warp with one greedy member; scripts/results/bench_search_batch.json): in 5-8
    dimensions Levy-5 5.31 -> 2.51, Rosenbrock-5 1284 -> 260, Styblinski-Tang-8 102 -> 87.8,
    Ackley-5 12.2 -> 10.1, Hartmann-6 0.281 -> 0.289; in 2-3 dimensions, where the local search
    already refines every draw, Hartmann-3 got worse (1.9e-4 -> 1.2e-3; quadratic 1.1e-5 ->
    3.7e-6, Branin 3.7e-4 -> 5.6e-5). Four greedy members of 16 (4 x 16, 10 seeds,
    ``bo_g4`` in scripts/results/bench_search_wide.json): Styblinski-Tang-8 86.3 -> 76.2,
    Rosenbrock-5 455 -> 246, Ackley-5 11.1 -> 10.1, Hartmann-6 0.306 -> 0.303, but Levy-5
    2.04 -> 2.36 (and at 3 x 64, 5 seeds, Styblinski-Tang-8 77.1 -> 87.7): one stays the default.
    """
    return 1 if D > LOCAL_SEARCH_MAX_DIM else 0


def auto_initial(D: int) -> int:
    """Default size of the initial Sobol design in ``D`` searched dimensions: ``D + 1``.

    A GP fitted to fewer points than dimensions plus one cannot tell the length scales apart,
    and its Thompson draws then extrapolate; sequential bo on Styblinski-Tang-8 without the
    design ended behind random search (scripts/results/bench_search_seq.json). A population of
    ``D + 1`` or more members fills the design in its first generation, so batch runs are
    unchanged. With smaller generations the design takes two: in 10 dimensions at 5 x 8, 16 of
    the 40 evaluations. Proposing from the second generation instead (``strategy.initial=1``,
    10 seeds, median regret; scripts/results/bench_search_issue29.json, ``bo_i1``) helped
    Styblinski-Tang-10 (164.8 -> 144.9) but not Levy-10 (28.4 -> 36.4) or Ackley-10
    (19.34 -> 20.06): the default stays.
    """
    return D + 1


#: members per generation from which bo learns the input warp by default
INPUT_WARP_MIN_MEMBERS = 16


def auto_input_warp(D: int, P: int) -> bool:
    """Default input warping (``strategy.input_warp``, a Kumaraswamy CDF per dimension learned
    with the GP) for ``P`` members per generation in ``D`` searched dimensions: on from
    :data:`INPUT_WARP_MIN_MEMBERS` members above :data:`LOCAL_SEARCH_MAX_DIM` dimensions.

    Measured with ``scripts/bench_search.py`` (10 seeds, median regret, without -> with;
    scripts/results/bench_search_input_warp.json): the warp's two parameters per dimension pay
    off with large generations. 4 x 16: Styblinski-Tang-8 86.3 -> 77.2, Rosenbrock-5 455 ->
    232, Hartmann-6 0.306 -> 0.266, Ackley-5 11.1 -> 11.7, Levy-5 2.04 -> 2.06; 3 x 64:
    Styblinski-Tang-8 73.1 -> 61.2, Levy-5 0.933 -> 0.906, Ackley-5 9.52 -> 9.52, Rosenbrock-5
    178 -> 180, Hartmann-6 0.298 -> 0.308. At 5 x 10 it lost in four of five rows (Levy-5 2.51
    -> 3.96, Styblinski-Tang-8 87.8 -> 96.5, Ackley-5 10.1 -> 11.4, Rosenbrock-5 260 -> 382;
    Hartmann-6 0.289 -> 0.263) and one Thompson draw at a time it doubled Levy-5.
    """
    return P >= INPUT_WARP_MIN_MEMBERS and D > LOCAL_SEARCH_MAX_DIM


def auto_trust_region(P: int, D: int) -> bool:
    """Default trust region (``strategy.trust_region``, TuRBO-1's box around the incumbent,
    :mod:`jaxhpo.strategies.trust_region`) for ``P`` members per generation in ``D`` searched
    dimensions: on for one member per generation above :data:`EI_MAX_DIM` dimensions, where
    that member is a Thompson draw (:func:`auto_acquisition`).

    Measured with ``scripts/bench_search.py`` (median regret, without -> with;
    scripts/results/bench_search_trust_region.json): one draw at a time, 50 evaluations,
    Styblinski-Tang-8 103 -> 73.5 over seeds 0-9 (TPE 82.5) and 106 -> 82.7 over seeds 0-19
    (TPE 97.4); 40 evaluations in 10 dimensions Levy-10 43.5 -> 22.8, Ackley-10 19.9 -> 18.9,
    but Styblinski-Tang-10 160 -> 177. In batches it did not pay (Styblinski-Tang-8 5 x 10
    87.8 -> 84.2, 4 x 16 77.2 -> 79.6; in 10 dimensions at 5 x 8 Styblinski-Tang-10 165 -> 180,
    Levy-10 28.4 -> 29.0, Ackley-10 19.3 -> 19.7): a batch of draws already spreads out.
    """
    return P == 1 and D > EI_MAX_DIM


def auto_length_scales(D: int) -> str:
    """Default form of the kernel's length scales (``strategy.length_scales``) in ``D`` searched
    dimensions: ``"auto"`` above :data:`LOCAL_SEARCH_MAX_DIM` (a shared length scale fitted
    beside ARD's, ARD kept only where its marginal posterior pays BIC's penalty for its
    ``D - 1`` further scales), else ``"ard"``.

    With few points in many dimensions ARD explained the data by two or three short length
    scales and very long ones elsewhere (Ackley-10 at 5 x 8: 0.05-0.5 on three dimensions,
    11-16 on the rest), so its draws and its mean searched along few axes. Measured with
    ``scripts/bench_search.py`` (10 seeds, median regret, ARD -> auto;
    scripts/results/bench_search_length_scales.json): in 10 dimensions at 5 x 8
    Styblinski-Tang-10 165 -> 130, Levy-10 28.4 -> 25.8, Ackley-10 19.3 -> 18.9; at 5 x 10
    Levy-5 2.51 -> 1.56, Ackley-5 10.1 -> 8.75, Rosenbrock-5 260 -> 282, Hartmann-6 0.289 ->
    0.303, Styblinski-Tang-8 87.8 -> 102 (CMA-ES 94.4); at 4 x 16 Levy-5 2.06 -> 1.72 (CMA-ES
    1.76), Ackley-5 11.7 -> 10.3 (CMA-ES 11.6), Styblinski-Tang-8 77.2 -> 74.5, Rosenbrock-5
    232 -> 380, Hartmann-6 0.266 -> 0.307; one at a time Ackley-5 8.03 -> 3.73, Levy-5 0.249
    -> 0.566, Rosenbrock-5 79.4 -> 88.7, Styblinski-Tang-8 73.5 -> 64.2, Hartmann-6 0.194 ->
    0.129; at 3 x 64 Hartmann-6 0.308 -> 0.264, the others unchanged. In 2-3 dimensions, where
    every bo row is near zero regret, ARD stays.
    """
    return "auto" if D > LOCAL_SEARCH_MAX_DIM else "ard"
