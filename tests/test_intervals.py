"""jsuff.intervals: the special functions and binomial intervals against SciPy, and the
effective-n (Korn–Graubard) interval against a formula written out with SciPy."""


import numpy as np
import pytest
from scipy import special, stats

from jsuff import intervals as iv


def test_betainc_and_its_inverse_match_scipy():
    rng = np.random.default_rng(0)
    a = np.exp(rng.uniform(-3, 7, 3000))
    b = np.exp(rng.uniform(-3, 7, 3000))
    x = rng.uniform(0, 1, 3000)
    np.testing.assert_allclose(iv.betainc(a, b, x), special.betainc(a, b, x), rtol=1e-9, atol=1e-12)
    assert iv.betainc(2.0, 3.0, 0.0) == 0.0 and iv.betainc(2.0, 3.0, 1.0) == 1.0
    q = rng.uniform(0.001, 0.999, 3000)
    np.testing.assert_allclose(iv.beta_ppf(q, a, b), stats.beta.ppf(q, a, b), rtol=1e-9, atol=1e-13)
    # the shapes the intervals use: broadcasting, and the tails at 0.025 / 0.975
    got = iv.beta_ppf(np.array([[0.025], [0.975]]), np.array([1.0, 12.0, 0.3]), 5.0)
    np.testing.assert_allclose(got, stats.beta.ppf([[0.025], [0.975]], [1.0, 12.0, 0.3], 5.0), rtol=1e-10)


def test_student_t_and_normal_quantiles_match_scipy():
    df = np.array([1.0, 2.0, 3.5, 11.0, 29.0, 149.0, 5000.0])
    for q in (0.95, 0.975, 0.995):
        np.testing.assert_allclose(iv.student_t_ppf(q, df), stats.t.ppf(q, df), rtol=1e-10)
        assert abs(iv.normal_ppf(q) - stats.norm.ppf(q)) < 1e-12
    with pytest.raises(ValueError, match="1/2 < q < 1"):
        iv.student_t_ppf(0.3, 4.0)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_binomial_intervals_match_scipy_binomtest(confidence):
    for n in (1, 2, 10, 12, 30, 150):
        k = np.arange(n + 1)
        cp = np.array(iv.clopper_pearson(k, n, confidence)).T
        wi = np.array(iv.wilson(k, n, confidence)).T
        for j in k:
            res = stats.binomtest(int(j), n)
            want_cp = res.proportion_ci(confidence, method="exact")
            want_wi = res.proportion_ci(confidence, method="wilson")
            np.testing.assert_allclose(cp[j], [want_cp.low, want_cp.high], atol=1e-12)
            np.testing.assert_allclose(wi[j], [want_wi.low, want_wi.high], atol=1e-12)


def test_binomial_interval_edges_and_errors():
    lo, hi = iv.clopper_pearson(np.array([0, 3, 0]), np.array([0, 0, 5]))
    assert np.isnan(lo[:2]).all() and np.isnan(hi[:2]).all() and lo[2] == 0.0
    np.testing.assert_allclose(hi[2], 1 - 0.025 ** (1 / 5))  # closed form at k = 0
    lo, hi = iv.clopper_pearson(12, 12)
    assert hi == 1.0 and abs(lo - 0.025 ** (1 / 12)) < 1e-12
    # non-integer (effective) counts: the beta quantiles with real parameters
    lo, hi = iv.clopper_pearson(7.3, 9.8)
    np.testing.assert_allclose([lo, hi], [stats.beta.ppf(0.025, 7.3, 3.5), stats.beta.ppf(0.975, 8.3, 2.5)])
    with pytest.raises(ValueError, match="unknown binomial interval"):
        iv.binomial_interval(1, 2, method="exact")
    with pytest.raises(ValueError, match="confidence"):
        iv.clopper_pearson(1, 2, 1.0)


def _korn_graubard(value, var, clusters, events, confidence=0.95):
    """Korn & Graubard (1998) written out with SciPy (degenerate variance: n_eff = clusters)."""
    n_eff = value * (1 - value) / var if var > 0 else float(clusters)
    q = 0.5 + confidence / 2
    n_eff = min(n_eff * (stats.norm.ppf(q) / stats.t.ppf(q, clusters - 1)) ** 2, events)
    x = value * n_eff
    lo = 0.0 if x == 0 else stats.beta.ppf(1 - q, x, n_eff - x + 1)
    hi = 1.0 if x == n_eff else stats.beta.ppf(q, x + 1, n_eff - x)
    return lo, hi, n_eff


def test_effective_n_interval_matches_the_written_out_formula():
    cases = [(0.9, 0.002, 30, 180), (0.5, 0.01, 12, 72), (0.03, 0.0004, 150, 900), (1.0, 0.0, 12, 72),
             (0.0, 0.0, 30, 60), (0.7, 1e-6, 40, 80)]  # the last is capped at its events
    for value, var, clusters, events in cases:
        lo, hi, n_eff = iv.effective_n_interval(value, var, clusters, events)
        np.testing.assert_allclose([lo, hi, n_eff], _korn_graubard(value, var, clusters, events), rtol=1e-9)
    assert iv.effective_n_interval(0.7, 1e-6, 40, 80)[2] == 80
    # vectorised, Wilson on the effective n, and no estimate / too few clusters
    lo, hi, n_eff = iv.effective_n_interval([0.9, np.nan, 0.4], [0.002, 0.0, 0.01], [30, 0, 1], [180, 0, 5],
                                            method="wilson")
    np.testing.assert_allclose([lo[0], hi[0]], iv.wilson(0.9 * n_eff[0], n_eff[0]), rtol=1e-12)
    assert np.isnan([lo[1], hi[1], n_eff[1], n_eff[2]]).all() and (lo[2], hi[2]) == (0.0, 1.0)
