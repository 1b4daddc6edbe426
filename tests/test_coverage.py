"""Seeded coverage simulations: the transfer intervals on the grid of issue 13 and the bootstrap
intervals of the information tables (tests/coverage_sim.py; docs/statistics.md has the full
tables). Each setting is simulated with known rates and its coverage must reach 0.90 of a nominal
95% interval."""

import numpy as np
import pytest

import coverage_sim as cs

NOMINAL_FLOOR = 0.90


def _failures(results):
    return [f"{setting}: {cov:.3f}" for setting, cov in results if cov < NOMINAL_FLOOR]


@pytest.mark.parametrize("interval", ["clopper_pearson", "wilson"])
def test_cell_intervals_hold_at_small_n(interval):
    results = []
    for n in cs.CELL_N:
        for p in cs.P_GRID:
            cov, width = cs.cell_coverage(p, n, reps=1000, seed=11, interval=interval)
            results.append(((n, p), cov))
            assert 0 < width < 0.6
    assert not _failures(results), _failures(results)
    if interval == "clopper_pearson":  # exact: at least nominal up to simulation noise
        assert min(cov for _, cov in results) >= 0.94


@pytest.mark.parametrize("sigma", [0.0, 1.5], ids=["independent", "clip-correlated"])
def test_aggregate_intervals_hold_with_shared_clips(sigma):
    # sigma: spread of a per-clip difficulty shared by all cells of the clip (logit scale)
    results = []
    cases = [(p, np.full((cs.M, cs.M), p)) for p in cs.P_GRID] + [("mixed", cs.MIXED)]
    for n in cs.AGGREGATE_N:
        for name, p in cases:
            cov = cs.aggregate_coverage(p, n, reps=400, seed=12, sigma=sigma)
            results += [((n, name, kind), c) for kind, c in cov.items()]
    assert not _failures(results), _failures(results)


def test_aggregate_intervals_with_missing_source_clips():
    results = []
    for n in (12, 30):
        for p in (0.1, 0.9, 0.97):
            cov = cs.aggregate_coverage(np.full((cs.M, cs.M), p), n, reps=400, seed=13, sigma=1.5,
                                        valid_fraction=0.7)
            results += [((n, p, kind), c) for kind, c in cov.items()]
    assert not _failures(results), _failures(results)


def test_information_intervals_are_given_only_where_they_hold():
    # at the fewest clips the tables give an interval for (500 for 2-5 classes) the basic
    # bootstrap covers, independent labels included, where the percentile interval never does
    for c, q in ((2, 0.0), (2, 0.6), (5, 0.0), (5, 0.6)):
        p = cs.joint(c, q)
        basic, percentile = cs.information_coverage(p, 500, reps=120, seed=14, n_boot=150)
        assert basic >= 0.85, (c, q, basic)
        if q == 0.0:
            assert percentile < 0.2, (c, percentile)
    # at 30 clips no bootstrap interval holds: the tables give none there
    basic, percentile = cs.information_coverage(cs.joint(5, 0.6), 30, reps=120, seed=14, n_boot=150)
    assert max(basic, percentile) < 0.8


def test_exact_cell_coverage():
    # no simulation: the binomial probability of the counts whose interval contains p
    ps = np.linspace(0.001, 0.999, 999)
    for n in (12, 30, 150):
        assert cs.exact_cell_coverage(n, ps).min() >= 0.95 - 1e-9  # Clopper-Pearson: never below
        wilson = cs.exact_cell_coverage(n, ps, "wilson")
        assert wilson.min() < 0.9  # Wilson dips near 0 and 1, which is why it is not the default
        assert cs.exact_cell_coverage(n, np.array(cs.P_GRID), "wilson").min() >= NOMINAL_FLOOR
