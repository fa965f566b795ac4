"""The adaptive proposer on simulated sources with known true laws (`analysis.simulate`)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from annealscale.analysis.errors import AnalysisError
from annealscale.analysis.laws import get_law
from annealscale.analysis.propose import (
    Proposer,
    ProposerSettings,
    _expected_p_correct,
    _p_best_gaussian,
    seed_design,
    stop_check,
)
from annealscale.analysis.propose_costs import CandidateCell, PoolReuseCosts, TrunkSharingCosts
from annealscale.analysis.propose_model import (
    DEFAULT_LAW_PRIOR,
    LawPrior,
    fit_posteriors,
    known_pools,
    map_fit,
)
from annealscale.analysis.simulate import (
    SimProblem,
    SimSource,
    at_fraction,
    make_problem,
    run_policy,
)
from annealscale.analysis.target import Target


def _cell(source="a", spend=1.0, tokens=1e6, u=1e6):
    return CandidateCell(source=source, curation_spend=spend, train_tokens=tokens, unique_tokens=u)


def test_curation_is_paid_once_per_pool():
    costs = PoolReuseCosts(usd_per_train_token=1e-6, train_fixed_usd=0.5)
    a, b, other = _cell(tokens=1e6), _cell(tokens=4e6), _cell(spend=3.0, tokens=1e6)
    assert costs.marginal_cost(a, []) == pytest.approx(1.0 + 0.5 + 1.0)
    assert costs.marginal_cost(b, [a]) == pytest.approx(0.5 + 4.0)  # pool already paid
    assert costs.marginal_cost(other, [a]) == pytest.approx(3.0 + 0.5 + 1.0)
    assert costs.spent([a, b, other]) == pytest.approx(2.5 + 4.5 + 4.5)


def test_trunk_sharing_charges_only_new_trunk_and_the_cooldown():
    costs = TrunkSharingCosts(usd_per_train_token=1e-6, cooldown_fraction=0.2)
    small, big = _cell(tokens=1e6), _cell(tokens=4e6)
    assert costs.marginal_cost(small, []) == pytest.approx(1.0 + 1.0)
    # trunk 0.8e6 already trained: the big cell adds 3.2e6 - 0.8e6 of trunk and 0.8e6 cooldown
    assert costs.marginal_cost(big, [small]) == pytest.approx(2.4 + 0.8)
    # the small one after the big one only needs its cooldown
    assert costs.marginal_cost(small, [big]) == pytest.approx(0.2)


def test_seed_design_spreads_each_source_over_a_decade_on_its_middle_pool():
    p = make_problem(0)
    seeds = seed_design(p.candidates(), pd.DataFrame(), [], p.costs, points=3)
    assert {c.source for c in seeds} == {s.name for s in p.sources}
    for s in p.sources:
        mine = [c for c in seeds if c.source == s.name]
        assert len(mine) == 3
        # spends 1x, 3x, 9x the base: the geometric middle toward the target's 9x is 3x
        assert {c.curation_spend for c in mine} == {3 * s.base_spend}
        tokens = sorted(c.train_tokens for c in mine)
        assert tokens[-1] / tokens[0] >= 10.0
    cheapest = seed_design(p.candidates(), pd.DataFrame(), [], p.costs, points=3, pool="cheapest")
    for s in p.sources:
        assert {c.curation_spend for c in cheapest if c.source == s.name} == {s.base_spend}
    # the first proposals of an empty table are seed cells, cheapest first
    proposer = Proposer(target=p.target, costs=p.costs)
    prop = proposer.propose(pd.DataFrame(), p.candidates(), n=4)
    assert [c.reason for c in prop.cells] == ["seed"] * 4
    assert all(c.cell.train_tokens == 1e6 for c in prop.cells[:3])


def test_seed_design_handed_out_over_batches_still_spans_a_decade():
    # after the smallest counts ran, the rest of the seed must not restart the spread
    # from the smallest count still open (which would shrink it to 1e6..4e6)
    p = make_problem(0)
    cands = p.candidates()
    proposer = Proposer(target=p.target, costs=p.costs)
    done: list = []
    table = pd.DataFrame()
    while True:
        cells = [c for c in proposer.propose(table, cands, n=3, done=done).cells]
        if not all(c.reason == "seed" for c in cells):
            break
        batch = [c.cell for c in cells]
        table = pd.concat([table, p.observe(batch)], ignore_index=True)
        done += batch
    for s in p.sources:
        tokens = sorted(c.train_tokens for c in done if c.source == s.name)
        assert len(tokens) == 3
        assert tokens[-1] / tokens[0] >= 10.0


def test_p_best_quadrature_matches_monte_carlo():
    rng = np.random.default_rng(1)
    mu, sd = rng.normal(0, 0.05, 4), rng.uniform(0.01, 0.05, 4)
    exact = _p_best_gaussian(mu, sd)
    draws = mu + sd * rng.standard_normal((200_000, 4))
    mc = np.bincount(draws.argmin(1), minlength=4) / len(draws)
    assert exact.sum() == pytest.approx(1.0, abs=1e-3)  # 16-node quadrature
    np.testing.assert_allclose(exact, mc, atol=0.01)


def test_expected_p_correct_grows_with_information_and_ignores_a_certain_source():
    mu, var = np.array([0.0, 0.01]), np.array([0.01**2, 0.01**2])
    z = np.random.default_rng(0).standard_normal((256, 2))
    none, half, full = _expected_p_correct(
        mu, var, np.array([[0, 0], [var[0] / 2, 0], [var[0], var[1]]]), z
    )
    assert none < half < full
    assert full == pytest.approx(1.0, abs=1e-3)  # everything known: the decision is right


def _clear_loser_problem() -> SimProblem:
    base = make_problem(3)
    loser = SimSource(
        name="hopeless", E=5.0, B=1.0, beta=0.3, R_star=10, tokens_per_usd=2e6, base_spend=0.5
    )
    return SimProblem(sources=(*base.sources, loser), noise=base.noise, seed=base.seed)


def test_proposals_skip_a_source_that_cannot_win():
    p = _clear_loser_problem()
    cands = p.candidates()
    proposer = Proposer(target=p.target, costs=p.costs)
    seeds = seed_design(cands, pd.DataFrame(), [], p.costs, points=3)
    table = p.observe(seeds)
    prop = proposer.propose(table, cands, n=4, done=seeds)
    assert prop.state.p_best["hopeless"] == 0.0
    assert all(c.reason == "score" for c in prop.cells)
    assert "hopeless" not in {c.cell.source for c in prop.cells}
    assert len({c.cell.name for c in prop.cells}) == 4
    assert not {c.cell.name for c in prop.cells} & {c.name for c in seeds}


def test_batch_fantasises_pending_cells_and_reuses_their_pools():
    p = make_problem(2)
    cands = p.candidates()
    proposer = Proposer(target=p.target, costs=p.costs)
    seeds = seed_design(cands, pd.DataFrame(), [], p.costs, points=3)
    table = p.observe(seeds)
    first = proposer.propose(table, cands, n=1, done=seeds).cells[0]
    again = proposer.propose(table, cands, n=2, done=seeds, pending=[first.cell])
    assert first.cell.name not in {c.cell.name for c in again.cells}
    for c in again.cells:
        if c.cell.pool == first.cell.pool:  # the running cell pays for the pool
            assert c.cost == pytest.approx(p.costs.train_cost(c.cell))
    # greedy ranks are consistent: ranks 1..n, marginal costs positive
    assert [c.rank for c in again.cells] == [1, 2]
    assert all(c.cost > 0 and c.expected_gain >= 0 for c in again.cells)


def test_adaptive_design_finds_the_true_best_for_less_than_the_grid():
    """Known answer: on simulated problems whose ranking flips between the cheapest cells
    and the target, the adaptive design recommends the true best with under half the
    grid's compute."""
    for seed in (0, 2):
        p = make_problem(seed)
        assert p.flips()  # micro-annealing would pick another source
        steps = run_policy(p, "adaptive", q=3, max_fraction=0.5)
        assert steps[-1].spent <= 0.5 + 0.2  # one batch beyond the cap at most
        assert steps[-1].recommended == p.true_best()
        # the grid's answer, for comparison, costs all of it
        assert run_policy(p, "grid")[-1].spent == pytest.approx(1.0)


def test_adaptive_and_variance_only_share_the_seed_and_differ_only_after_it():
    """Known answer, and why benchmarks/adaptive.py shows them tied: both designs hand out
    the same seed (three token counts over a decade on each source's middle pool, 0.227 of
    the grid's compute), so every state up to the seed's end is the same."""
    p = make_problem(0)
    adaptive = run_policy(p, "adaptive", q=3, max_fraction=0.3)
    variance = run_policy(p, "variance_only", q=3, max_fraction=0.3)
    seed_end = 18.0 / p.grid_cost()  # curation 1.5 + 0.9 + 3.0, training 3 x (1 + 4 + 16)e6 x 2e-7
    assert p.grid_cost() == pytest.approx(79.2)
    shared = [s for s in adaptive if s.spent <= seed_end + 1e-9]
    assert [s.n_cells for s in shared] == [3, 6, 9]
    assert shared[-1].spent == pytest.approx(seed_end)
    for a, v in zip(shared, variance, strict=False):
        assert (a.spent, a.recommended, a.confidence) == (v.spent, v.recommended, v.confidence)
    assert shared[-1].recommended == p.true_best()


def test_stop_rule_reasons_and_savings():
    p = make_problem(4)
    cands = p.candidates()
    table = p.observe(cands)  # the whole grid: confident at the target
    proposer = Proposer(target=p.target, costs=p.costs)
    grid = p.grid_cost()
    check = stop_check(proposer, table, cands, spent=0.4 * grid, threshold=0.55, grid_cost=grid)
    st = proposer.state(table, cands)
    assert st.recommended == p.true_best()
    if check.reason == "confident":
        assert check.held_out_ok and check.held_out
        assert check.confidence >= 0.55
    assert check.saved == pytest.approx(0.6 * grid)
    assert check.saved_fraction == pytest.approx(0.6)
    strict = stop_check(
        proposer, table, cands, spent=0.7 * grid, threshold=0.999, budget=0.6 * grid, grid_cost=grid
    )
    assert strict.stop and strict.reason == "budget"
    assert "budget" in strict.message() and "saved" in strict.message()
    going = stop_check(
        proposer, table, cands, spent=0.1 * grid, threshold=0.999, budget=0.6 * grid, remaining=5
    )
    assert not going.stop and going.reason is None
    with pytest.raises(AnalysisError, match="threshold"):
        stop_check(proposer, table, cands, spent=0.0, threshold=1.5)


def test_confident_stop_waits_until_every_source_has_passed_a_held_out_check():
    """Known answer (problem 0, narrow grid): with the whole grid of the two others, the
    worst source's two cheapest cells leave P(best) of the true best at 1.0, but that
    source's fit has never predicted a cell it did not see, so the rule does not stop;
    its third cell, predicted within the interval, lets it stop."""
    p = make_problem(0)
    cands = p.candidates()
    proposer = Proposer(
        target=p.target, costs=p.costs, settings=ProposerSettings(law_prior=DEFAULT_LAW_PRIOR)
    )
    assert p.true_best() == "curated"
    rest = [c for c in cands if c.source != "narrow"]
    middle = sorted({c.curation_spend for c in cands if c.source == "narrow"})[1]
    narrow = [c for c in cands if c.source == "narrow" and c.curation_spend == middle]
    two = stop_check(proposer, p.observe(rest + narrow[:2]), cands, spent=1.0, threshold=0.9)
    assert two.confidence >= 0.9 and two.recommended == "curated"
    assert not two.stop and not two.held_out_ok
    assert "narrow" not in {c.source for c in two.held_out}
    three = stop_check(proposer, p.observe(rest + narrow[:3]), cands, spent=1.0, threshold=0.9)
    assert three.stop and three.reason == "confident"
    assert {c.source for c in three.held_out} == {"curated", "diverse", "narrow"}


def test_settings_are_validated():
    with pytest.raises(AnalysisError, match="both be 0"):
        ProposerSettings(decision_weight=0.0, variance_weight=0.0)
    with pytest.raises(AnalysisError, match="cost_tempering"):
        ProposerSettings(cost_tempering=-1)
    with pytest.raises(AnalysisError, match="usd_per_train_token"):
        PoolReuseCosts(usd_per_train_token=0.0)
    assert math.isfinite(make_problem(0).grid_cost())


def test_total_cost_target_decides_the_best_allocation():
    p = make_problem(5)
    cands = p.candidates()
    table = p.observe(cands)
    target = Target(total_cost=0.5 * p.grid_cost())
    st = Proposer(target=target, costs=p.costs).state(table, cands)
    assert set(st.points) == {s.name for s in p.sources}
    for s, (d, c) in st.points.items():
        spent = p.costs.curation_cost(s, c) + p.costs.usd_per_train_token * d
        assert spent == pytest.approx(target.total_cost, rel=1e-9)
    assert st.recommended in st.p_best


def _source_rows(p: SimProblem, name: str, cells=None) -> tuple[np.ndarray, np.ndarray]:
    law = get_law("effective_data")
    mine = [c for c in (cells or p.candidates()) if c.source == name]
    t = p.observe(mine)
    return t[list(law.columns)].to_numpy(float), t["domain_bpb"].to_numpy(float)


def test_law_prior_settles_an_underdetermined_fit_at_its_centre_and_yields_to_a_full_grid():
    """Known answer: two cells cannot tell beta and R_star apart (the offset and amplitude
    fit any shape exactly), so the posterior mode is the prior's centre; the full grid of a
    source whose true half-life (2.5 epochs) is far from the prior's 15.4 pulls the fit to
    the truth."""
    law = get_law("effective_data")
    p = make_problem(1)
    narrow = next(s for s in p.sources if s.name == "narrow")
    assert (narrow.R_star, narrow.beta) == pytest.approx((2.5, 0.26), rel=0.02)
    two = [
        c
        for c in p.candidates()
        if c.source == "narrow"
        and c.curation_spend == 3 * narrow.base_spend
        and c.train_tokens in (1e6, 1.6e7)
    ]
    x, y = _source_rows(p, "narrow", two)
    fit = map_fit(law, x, y, prior=DEFAULT_LAW_PRIOR, sigma=0.01)
    params = law.params_dict(fit.theta)
    assert (params["beta"], params["R_star"]) == pytest.approx((0.3, 15.4), rel=1e-3)
    assert fit.sse[0] < 1e-12  # still an exact fit of both cells
    grid = p.observe([c for c in p.candidates() if c.source == "narrow"])
    posts, sigma = _posteriors(grid, known_pools(grid, []), law, n_draws=64)
    fitted = law.params_dict(posts["narrow"].fit.theta)
    assert sigma == pytest.approx(p.noise, rel=0.5)
    assert 2.5 / 1.5 < fitted["R_star"] < 2.5 * 1.5
    assert fitted["beta"] == pytest.approx(0.26, abs=0.04)
    with pytest.raises(AnalysisError, match="R_star"):
        LawPrior(terms=(("R_star", 0.0, 1.0),))


def test_law_prior_keeps_the_decision_steady_after_a_two_point_seed():
    """Known answer on a simulated problem: after the smallest seed (two token counts a
    decade apart per source) the posterior-mode fits recommend the true best at every
    batch up to 0.45 of the grid's compute; plain least squares on the same cells runs along
    the ridge of exact fits and recommends a wrong source in between (narrow right after
    the seed, on this problem)."""
    p = make_problem(7)
    prior = ProposerSettings(seed_points=2, law_prior=DEFAULT_LAW_PRIOR)
    steady = run_policy(p, "adaptive", q=3, max_fraction=0.45, settings=prior)
    seed_end = 15.6 / p.grid_cost()  # curation 1.5 + 0.9 + 3.0, training 3 x 1.7e7 x 2e-7
    after = [s for s in steady if s.spent >= seed_end - 1e-9]
    assert after[0].spent == pytest.approx(seed_end) and len(after) >= 3
    assert all(s.recommended == p.true_best() for s in after)
    plain = run_policy(
        p, "adaptive", q=3, max_fraction=0.45, settings=replace(prior, law_prior=None)
    )
    assert any(s.recommended != p.true_best() for s in plain if s.spent >= seed_end - 1e-9)


def test_wide_grid_spans_two_decades_and_its_seed_stays_on_the_cheapest_decade():
    """The ``wide`` grid (`analysis.simulate.GRIDS`) is what ``make_problem(grid=...)``
    builds: seven token counts over two decades, the target four times the largest; the
    seed design there spends a decade of the cheapest counts, a small share of the grid."""
    narrow, wide = make_problem(0), make_problem(0, grid="wide")
    counts = sorted({c.train_tokens for c in wide.candidates()})
    assert len(counts) == 7 and counts[-1] / counts[0] == pytest.approx(100.0)
    assert len(wide.candidates()) == 63 and len(narrow.candidates()) == 45
    assert wide.target.train_tokens == pytest.approx(4e8)
    assert narrow.target.train_tokens == pytest.approx(6.4e7)
    seeds = seed_design(wide.candidates(), pd.DataFrame(), [], wide.costs, points=3)
    for s in wide.sources:
        tokens = sorted(c.train_tokens for c in seeds if c.source == s.name)
        assert tokens[0] == 1e6 and tokens[-1] == pytest.approx(1e7)  # one decade, not two
    assert wide.costs.spent(seeds) / wide.grid_cost() < 0.05
    with pytest.raises(ValueError, match="unknown grid 'huge'"):
        make_problem(0, grid="huge")


def test_adaptive_design_on_the_wide_grid_is_right_with_a_fifth_of_it():
    """Known answer on the wide grid, with the law prior sweeps use: on problems whose
    ranking flips, the design is right after at most a fifth of the grid's compute."""
    settings = ProposerSettings(law_prior=DEFAULT_LAW_PRIOR)
    for seed in (0, 2, 4):
        p = make_problem(seed, grid="wide")
        assert p.flips()
        steps = run_policy(p, "adaptive", q=3, max_fraction=0.2, settings=settings)
        assert steps[2].n_cells == 9 and steps[2].spent < 0.05  # the seed: a decade, cheap
        assert at_fraction(steps, 0.2).recommended == p.true_best()


def test_importance_sampler_corrects_a_misplaced_too_narrow_proposal():
    """Known answer: a correlated Gaussian target, proposed from a Gaussian that is off
    its centre and far too narrow (what a Laplace step at the wrong end of a ridge looks
    like). The reweighted draws, with the proposal refitted to them, recover the target's
    mean and covariance; the first proposal alone is off by several of its sds."""
    from annealscale.analysis.propose_model import GaussianProposal, importance_sample, resample

    mean = np.array([1.0, -0.5])
    cov = np.array([[0.5, 0.3], [0.3, 0.4]])
    precision = np.linalg.inv(cov)

    def log_target(u):
        d = u - mean
        return -0.5 * np.einsum("ni,ij,nj->n", d, precision, d)

    narrow = GaussianProposal(mean=np.zeros(2), chol=np.diag([5.0, 5.0]), weight=1.0)  # sd 0.2
    rng = np.random.default_rng(0)
    u, w = importance_sample(log_target, [narrow], n=4096, scale=1.5, ess_goal=1024, rng=rng)
    assert 1.0 / np.sum(w**2) >= 1024  # the refitted proposal reached the goal
    draws = resample(u, w, 2048, rng)
    assert draws.mean(axis=0) == pytest.approx(mean, abs=0.06)
    assert np.cov(draws, rowvar=False) == pytest.approx(cov, abs=0.06)
    assert len(np.unique(draws, axis=0)) > 800  # not collapsed onto a few proposals


def test_proposal_mixture_density_matches_scipy():
    """The importance weights divide by this density: two components of different shape,
    weight and widening, against scipy's normal densities."""
    from scipy.stats import multivariate_normal

    from annealscale.analysis.propose_model import GaussianProposal, _mixture_logpdf

    covs = [np.array([[0.5, 0.2], [0.2, 0.3]]), np.array([[0.1, -0.05], [-0.05, 0.4]])]
    means = [np.array([0.0, 1.0]), np.array([-1.0, 0.5])]
    comps = [
        GaussianProposal(mean=m, chol=np.linalg.cholesky(np.linalg.inv(c)), weight=1.0)
        for m, c in zip(means, covs, strict=True)
    ]
    mixture = [comps[0].widened(1.5, 0.3), comps[1].widened(1.0, 0.6)]  # weights normalised
    u = np.random.default_rng(0).normal(size=(50, 2))
    want = np.log(
        (1 / 3) * multivariate_normal(means[0], covs[0] * 1.5**2).pdf(u)
        + (2 / 3) * multivariate_normal(means[1], covs[1]).pdf(u)
    )
    assert _mixture_logpdf(u, mixture) == pytest.approx(want, rel=1e-9)


def test_posterior_draws_predict_the_cells_already_run_within_their_noise():
    """Three seed cells on one pool, four law parameters: the posterior is a curved ridge.
    The ensemble must agree with the cells it was fitted to (predictive sd there about the
    noise, as for any posterior of a model that fits them), so that running them again
    is worth nothing; a plain Laplace ensemble spread 4x the noise there (0.053 vs 0.012
    on this problem) and priced repeats like extrapolation."""
    p = make_problem(0, grid="wide")
    seeds = seed_design(p.candidates(), pd.DataFrame(), [], p.costs, points=3)
    table = p.observe(seeds)
    law = get_law("effective_data")
    posts, sigma = _posteriors(table, known_pools(table, p.candidates()), law, n_draws=256)
    post = posts["curated"]
    mine = [c for c in seeds if c.source == "curated"]
    at_cells = post.log_draws([c.train_tokens for c in mine], [c.curation_spend for c in mine])
    assert np.all(at_cells.std(axis=0) < 1.5 * sigma)
    target = post.log_draws(4e8, 3.0)[:, 0]
    assert target.std() > 2 * sigma  # the extrapolation stays uncertain
    assert len(np.unique(post.theta, axis=0)) > 32


def _posteriors(table, pools, law, n_draws):
    """Posteriors with the law prior and the proposer's default noise and sampler settings
    (what sweeps use)."""
    s = ProposerSettings(law_prior=DEFAULT_LAW_PRIOR)
    return fit_posteriors(
        table,
        pools,
        law,
        n_draws=n_draws,
        prior_sd=s.prior_sd,
        proposal_scale=s.proposal_scale,
        noise_prior=s.noise_prior,
        noise_prior_weight=s.noise_prior_weight,
        seed=s.seed,
        prior=s.law_prior,
    )
