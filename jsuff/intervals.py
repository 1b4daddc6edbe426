"""Confidence intervals for proportions that hold at small n (NumPy, float64, no SciPy).

The transfer statistics are proportions estimated from 10-150 clips, often near 0 or 1, so the
intervals are exact or small-sample ones rather than normal approximations or percentile
bootstraps (which give a 12/12 cell the interval [1, 1]):

* :func:`clopper_pearson`: the exact (Clopper & Pearson 1934) interval, the beta quantiles
  ``B(alpha/2; k, n - k + 1)`` and ``B(1 - alpha/2; k + 1, n - k)``. Its coverage is at least
  the nominal level for every p and n (it is conservative), which is why jsuff uses it for the
  cells of a transfer matrix; ``k`` and ``n`` may be non-integer (effective counts).
* :func:`wilson`: the Wilson score interval (no continuity correction). Shorter, with coverage
  near nominal on average but dipping to about 0.84 for p within a few percent of 0 or 1 at
  n = 10-40 (see docs/statistics.md), where transfer rates often are.
* :func:`effective_n_interval`: a proportion estimated from clustered data (here: (cell, clip)
  events clustered by clip) by the Korn & Graubard (1998) method: the binomial interval above,
  applied to the *effective sample size* ``n_eff = p (1 - p) / var``, with ``var`` the
  cluster-level variance of the estimate, and ``n_eff`` scaled by ``(z / t_df)^2`` for the
  ``df = clusters - 1`` degrees of freedom of that variance. When the variance is 0 (every event
  the same, or every cell all-or-nothing) ``n_eff`` is the number of clusters, as if the events
  within a cluster were perfectly correlated; ``n_eff`` never exceeds the number of events.

Everything is vectorised over arrays of any shape; entries with no data (``n <= 0``) give NaN.
The special functions are written out (Lentz's continued fraction for the regularised incomplete
beta function, safeguarded Halley iterations for its inverse) and tested against SciPy.

Example:
    >>> lo, hi = clopper_pearson(12, 12)
    >>> round(float(lo), 4), float(hi)
    (0.7354, 1.0)
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "BINOMIAL_METHODS",
    "beta_ppf",
    "betainc",
    "binomial_interval",
    "clopper_pearson",
    "effective_n_interval",
    "normal_ppf",
    "student_t_ppf",
    "wilson",
]

#: Binomial interval methods of :func:`binomial_interval`.
BINOMIAL_METHODS = ("clopper_pearson", "wilson")

_TINY = 1e-300
_lgamma_scalar = np.frompyfunc(math.lgamma, 1, 1)


def _lgamma(x: np.ndarray) -> np.ndarray:
    return np.asarray(_lgamma_scalar(np.asarray(x, np.float64)), np.float64)


def _log_beta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _lgamma(a) + _lgamma(b) - _lgamma(a + b)


def _guard(v: np.ndarray) -> np.ndarray:
    return np.where(np.abs(v) < _TINY, _TINY, v)


def _continued_fraction(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The continued fraction of I_x(a, b) (modified Lentz), for x < (a + 1) / (a + b + 2), where
    it converges in O(sqrt(max(a, b))) steps. Each entry is iterated until it has converged."""
    out = np.empty_like(x)
    idx = np.arange(x.size)
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    d = 1.0 / _guard(1.0 - qab * x / qap)
    h = d.copy()
    for m in range(1, 100_000):
        m2 = 2.0 * m
        num = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 / _guard(1.0 + num * d)
        c = _guard(1.0 + num / c)
        h = h * d * c
        num = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 / _guard(1.0 + num * d)
        c = _guard(1.0 + num / c)
        step = d * c
        h = h * step
        done = np.abs(step - 1.0) < 1e-15
        if done.any():
            out[idx[done]] = h[done]
            keep = ~done
            if not keep.any():
                return out
            idx, a, b, x, c, d, h = (v[keep] for v in (idx, a, b, x, c, d, h))
            qab, qap, qam = a + b, a + 1.0, a - 1.0
    raise RuntimeError("incomplete beta continued fraction did not converge")  # pragma: no cover


def betainc(a: ArrayLike, b: ArrayLike, x: ArrayLike) -> np.ndarray:
    """The regularised incomplete beta function I_x(a, b) (``scipy.special.betainc``), a, b > 0.

    Example:
        >>> float(betainc(2.0, 3.0, 0.5))
        0.6875
    """
    a, b, x = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (a, b, x)))
    shape = a.shape
    a, b, x = a.ravel(), b.ravel(), x.ravel()
    return _betainc(a, b, x, _log_beta(a, b)).reshape(shape)


def _betainc(a: np.ndarray, b: np.ndarray, x: np.ndarray, log_beta: np.ndarray) -> np.ndarray:
    flip = x > (a + 1.0) / (a + b + 2.0)  # use I_x(a, b) = 1 - I_{1-x}(b, a) where that converges
    aa, bb = np.where(flip, b, a), np.where(flip, a, b)
    xx = np.clip(np.where(flip, 1.0 - x, x), 0.0, 1.0)
    out = np.where(x >= 1.0, 1.0, 0.0)
    inner = (x > 0.0) & (x < 1.0)
    if inner.any():
        ai, bi, xi = aa[inner], bb[inner], xx[inner]
        front = np.exp(ai * np.log(xi) + bi * np.log1p(-xi) - log_beta[inner]) / ai
        v = front * _continued_fraction(ai, bi, xi)
        out[inner] = np.where(flip[inner], 1.0 - v, v)
    return out


def _initial_quantile(a: np.ndarray, b: np.ndarray, q: np.ndarray) -> np.ndarray:
    """A first guess at the q-quantile of Beta(a, b) (Abramowitz & Stegun 26.5.22 for a, b >= 1,
    the leading terms of the two tails otherwise)."""
    with np.errstate(all="ignore"):
        pp = np.where(q < 0.5, q, 1.0 - q)
        t = np.sqrt(-2.0 * np.log(pp))
        z = (2.30753 + t * 0.27061) / (1.0 + t * (0.99229 + t * 0.04481)) - t
        z = np.where(q < 0.5, -z, z)
        lam = (z * z - 3.0) / 6.0
        h = 2.0 / (1.0 / (2.0 * a - 1.0) + 1.0 / (2.0 * b - 1.0))
        w = z * np.sqrt(lam + h) / h - (1.0 / (2.0 * b - 1.0) - 1.0 / (2.0 * a - 1.0)) * (
            lam + 5.0 / 6.0 - 2.0 / (3.0 * h)
        )
        big = a / (a + b * np.exp(2.0 * w))
        ta = np.exp(a * np.log(a / (a + b))) / a
        tb = np.exp(b * np.log(b / (a + b))) / b
        tot = ta + tb
        small = np.where(q < ta / tot, (a * tot * q) ** (1.0 / a), 1.0 - (b * tot * (1.0 - q)) ** (1.0 / b))
        guess = np.where((a >= 1.0) & (b >= 1.0), big, small)
    return np.clip(np.nan_to_num(guess, nan=0.5), 1e-300, 1.0 - 1e-16)


def beta_ppf(q: ArrayLike, a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """The q-quantile of the Beta(a, b) distribution (``scipy.stats.beta.ppf``), 0 < q < 1.

    Halley steps on I_x(a, b) = q from a first guess, falling back to bisection whenever a step
    leaves the bracket; converged to a relative 1e-13.

    Example:
        >>> round(float(beta_ppf(0.5, 2.0, 2.0)), 12)
        0.5
    """
    q, a, b = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (q, a, b)))
    shape = q.shape
    # intervals of many cells repeat the same (k, n): solve each distinct problem once
    distinct, where = np.unique(np.stack([q.ravel(), a.ravel(), b.ravel()], 1), axis=0, return_inverse=True)
    return _beta_ppf(*distinct.T)[where.ravel()].reshape(shape)


def _beta_ppf(q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    log_beta = _log_beta(a, b)
    x = _initial_quantile(a, b, q)
    lo, hi = np.zeros_like(q), np.ones_like(q)
    out = np.empty_like(q)
    idx = np.arange(q.size)
    for _ in range(500):
        f = _betainc(a, b, x, log_beta) - q
        lo, hi = np.where(f < 0, x, lo), np.where(f > 0, x, hi)
        with np.errstate(all="ignore"):
            pdf = np.exp((a - 1.0) * np.log(x) + (b - 1.0) * np.log1p(-x) - log_beta)
            newton = f / pdf
            step = newton / (1.0 - 0.5 * np.minimum(1.0, newton * ((a - 1.0) / x - (b - 1.0) / (1.0 - x))))
            nxt = x - step
        done = (np.abs(nxt - x) <= 1e-13 * x) | (f == 0) | (hi - lo <= 1e-15 * hi)
        outside = ~np.isfinite(nxt) | (nxt < lo) | (nxt > hi)
        x = np.where(done, np.clip(nxt, lo, hi), np.where(outside, 0.5 * (lo + hi), nxt))
        if done.any():
            out[idx[done]] = x[done]
            keep = ~done
            if not keep.any():
                return out
            idx, q, a, b, log_beta, x, lo, hi = (v[keep] for v in (idx, q, a, b, log_beta, x, lo, hi))
    raise RuntimeError("beta quantile did not converge")  # pragma: no cover


def normal_ppf(q: float) -> float:
    """The standard normal q-quantile.

    Example:
        >>> round(normal_ppf(0.975), 6)
        1.959964
    """
    return NormalDist().inv_cdf(q)


def student_t_ppf(q: float, df: ArrayLike) -> np.ndarray:
    """The q-quantile (q > 1/2) of Student's t with ``df`` > 0 degrees of freedom
    (``scipy.stats.t.ppf``), from ``P(|T| > t) = I_{df / (df + t^2)}(df / 2, 1 / 2)``.

    Example:
        >>> round(float(student_t_ppf(0.975, 11)), 4)
        2.201
    """
    if not 0.5 < q < 1.0:
        raise ValueError(f"student_t_ppf needs 1/2 < q < 1, got {q}")
    df = np.asarray(df, np.float64)
    x = beta_ppf(np.full(df.shape, 2.0 * (1.0 - q)), df / 2.0, np.full(df.shape, 0.5))
    return np.sqrt(df * (1.0 / x - 1.0))


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(confidence)


def clopper_pearson(
    k: ArrayLike, n: ArrayLike, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper–Pearson) interval for a proportion with ``k`` successes in ``n`` trials.

    ``k`` and ``n`` may be non-integer (effective counts); NaN where ``n <= 0``. Equals
    ``scipy.stats.binomtest(k, n).proportion_ci(confidence, method="exact")`` for integers.

    Example:
        >>> [round(float(v), 4) for v in clopper_pearson(3, 10)]
        [0.0667, 0.6525]
    """
    alpha = 1.0 - _check_confidence(confidence)
    k, n = np.broadcast_arrays(np.asarray(k, np.float64), np.asarray(n, np.float64))
    ok = n > 0
    k = np.clip(k, 0.0, np.where(ok, n, 0.0))
    lo, hi = np.where(ok, 0.0, np.nan), np.where(ok, 1.0, np.nan)
    inner_lo, inner_hi = ok & (k > 0), ok & (k < n)
    if inner_lo.any():
        lo[inner_lo] = beta_ppf(alpha / 2.0, k[inner_lo], n[inner_lo] - k[inner_lo] + 1.0)
    if inner_hi.any():
        hi[inner_hi] = beta_ppf(1.0 - alpha / 2.0, k[inner_hi] + 1.0, n[inner_hi] - k[inner_hi])
    return lo, hi


def wilson(k: ArrayLike, n: ArrayLike, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (no continuity correction); NaN where ``n <= 0``.

    Example:
        >>> [round(float(v), 4) for v in wilson(3, 10)]
        [0.1078, 0.6032]
    """
    z = normal_ppf(0.5 + _check_confidence(confidence) / 2.0)
    k, n = np.broadcast_arrays(np.asarray(k, np.float64), np.asarray(n, np.float64))
    ok = n > 0
    m = np.where(ok, n, 1.0)
    p = np.clip(k / m, 0.0, 1.0)
    denom = 1.0 + z * z / m
    centre = (p + z * z / (2.0 * m)) / denom
    half = z * np.sqrt(p * (1.0 - p) / m + z * z / (4.0 * m * m)) / denom
    lo = np.where(ok, np.clip(centre - half, 0.0, 1.0), np.nan)
    hi = np.where(ok, np.clip(centre + half, 0.0, 1.0), np.nan)
    return lo, hi


def binomial_interval(
    k: ArrayLike, n: ArrayLike, confidence: float = 0.95, method: str = "clopper_pearson"
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`clopper_pearson` or :func:`wilson` by name.

    Example:
        >>> [float(v) for v in binomial_interval(0, 0)]
        [nan, nan]
    """
    if method == "clopper_pearson":
        return clopper_pearson(k, n, confidence)
    if method == "wilson":
        return wilson(k, n, confidence)
    raise ValueError(f"unknown binomial interval {method!r}; expected one of {BINOMIAL_METHODS}")


def effective_n_interval(
    value: ArrayLike,
    variance: ArrayLike,
    clusters: ArrayLike,
    events: ArrayLike,
    confidence: float = 0.95,
    method: str = "clopper_pearson",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interval for a proportion estimated from clustered events (Korn & Graubard 1998).

    Args:
        value: the estimate, in [0, 1].
        variance: its estimated variance from the clusters (e.g. a linearised sandwich variance).
        clusters: how many clusters (clips) the estimate rests on; the variance has
            ``clusters - 1`` degrees of freedom.
        events: how many events (cell, clip pairs); the cap of the effective sample size.
        confidence: nominal coverage.
        method: the binomial interval applied to the effective counts (``"clopper_pearson"``:
            Korn & Graubard's choice; ``"wilson"``).

    Returns:
        ``(lo, hi, n_eff)``; NaN where there is no estimate; ``[0, 1]`` with ``n_eff`` NaN where
        fewer than 2 clusters leave the variance unknown.

    Example:
        >>> lo, hi, n_eff = effective_n_interval(1.0, 0.0, 12, 72)
        >>> round(float(lo), 3), float(hi), round(float(n_eff), 2)
        (0.679, 1.0, 9.52)
    """
    conf = _check_confidence(confidence)
    value, variance, clusters, events = np.broadcast_arrays(
        *(np.asarray(v, np.float64) for v in (value, variance, clusters, events))
    )
    has = np.isfinite(value) & (clusters >= 1)
    known = has & (clusters >= 2)
    p = np.clip(np.where(has, value, 0.5), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(variance > 0, p * (1.0 - p) / variance, clusters)
    n_eff = np.where(n_eff > 0, n_eff, clusters)  # p in {0, 1} with a variance > 0 cannot occur
    z = normal_ppf(0.5 + conf / 2.0)
    df = np.where(known, clusters - 1.0, 1.0)
    n_eff = np.minimum(n_eff * (z / student_t_ppf(0.5 + conf / 2.0, df)) ** 2, events)
    lo, hi = binomial_interval(p * n_eff, n_eff, conf, method)
    lo = np.where(known, lo, np.where(has, 0.0, np.nan))
    hi = np.where(known, hi, np.where(has, 1.0, np.nan))
    return lo, hi, np.where(known, n_eff, np.nan)
