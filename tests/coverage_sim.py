"""Coverage simulations of jsuff's intervals: tests/test_coverage.py runs them small and seeded;
``python tests/coverage_sim.py`` prints the tables of docs/statistics.md (a few minutes).

Tasks are simulated as transfer outcomes ``hit[f, g, i]`` with known success probabilities:

* cells: 3 models, every cell succeeds with probability p on each clip, independently;
* aggregates: 3 models and a matrix of cell probabilities; with clip-correlated successes, clip i
  has a difficulty ``z_i ~ N(0, 1)`` shared by all its cells and cell c succeeds with probability
  ``expit(b_c + sigma z_i)``, ``b_c`` chosen so that the marginal rate is exactly p_c (so the true
  task mean and rates are known); the stress test instead makes a clip, with probability rho, one
  draw shared by all its cells (rare all-fail clips);
* information: label pairs from a joint distribution where y copies x with probability q and is
  uniform otherwise (q = 0: independent labels, MI = 0).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jsuff import info  # noqa: E402
from jsuff.intervals import binomial_interval  # noqa: E402
from jsuff.transfer import rate_estimates, transfer_analysis  # noqa: E402

P_GRID = (0.03, 0.1, 0.5, 0.8, 0.9, 0.97)
CELL_N = (12, 30)
AGGREGATE_N = (12, 30, 150)
M = 3
OFF = ~np.eye(M, dtype=bool)
#: Cell rates of the heterogeneous aggregate case (diagonal unused).
MIXED = np.array([[1.0, 0.97, 0.9], [0.5, 1.0, 0.8], [0.1, 0.97, 1.0]])


def _expit(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def _intercepts(p: np.ndarray, sigma: float) -> np.ndarray:
    """``b`` with ``E[expit(b + sigma z)] = p`` (z standard normal; Gauss-Hermite, bisection)."""
    lo, hi = np.full(p.shape, -40.0), np.full(p.shape, 40.0)
    for _ in range(100):
        mid = (lo + hi) / 2
        below = (_WEIGHTS * _expit(mid[..., None] + sigma * _NODES)).sum(-1) < p
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


def simulate_hits(p: np.ndarray, n: int, reps: int, rng: np.random.Generator, *, sigma: float = 0.0,
                  shared: float = 0.0, valid_fraction: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``hit, mask [reps, M, M, n]`` for cell success probabilities ``p[M, M]``: independent
    (default), with a clip difficulty of spread ``sigma`` (logit scale), or with a clip-wide
    shared draw with probability ``shared``. A source's clip is valid with ``valid_fraction``."""
    m = p.shape[0]
    u = rng.random((reps, m, m, n))
    if shared > 0:
        u = np.where(rng.random((reps, 1, 1, n)) < shared, rng.random((reps, 1, 1, n)), u)
    if sigma > 0:
        prob = _expit(_intercepts(np.clip(p, 1e-9, 1 - 1e-9), sigma)[..., None] + sigma * rng.standard_normal((reps, 1, 1, n)))
    else:
        prob = p[..., None]
    hit = u < prob
    mask = np.broadcast_to(rng.random((reps, m, 1, n)) < valid_fraction, hit.shape)
    return hit, mask


def _covered(lo: np.ndarray, hi: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return (lo <= truth + 1e-12) & (truth <= hi + 1e-12)


def cell_coverage(p: float, n: int, reps: int, seed: int, interval: str = "clopper_pearson") -> tuple[float, float]:
    """Coverage and mean width of the nominal 95% cell interval (the 6 off-diagonal cells of each
    of ``reps`` simulated 3-model tasks)."""
    rng = np.random.default_rng(seed)
    hit, mask = simulate_hits(np.full((M, M), p), n, reps, rng)
    if interval == "bootstrap":
        lo, hi = _bootstrap_loop(hit, mask, seed)["matrix"]
    else:
        e = rate_estimates(hit, mask, interval=interval).matrix
        lo, hi = e.lo, e.hi
    return float(_covered(lo, hi, p)[:, OFF].mean()), float((hi - lo)[:, OFF].mean())


def exact_cell_coverage(n: int, ps: np.ndarray, interval: str = "clopper_pearson") -> np.ndarray:
    """The exact coverage of the nominal 95% cell interval at each p of ``ps``: the binomial
    probability of the counts k whose interval contains p (no simulation)."""
    k = np.arange(n + 1)
    lo, hi = binomial_interval(k, n, 0.95, interval)
    log_comb = np.array([math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) for j in k])
    ps = np.asarray(ps, float)[:, None]
    pmf = np.exp(log_comb + k * np.log(ps) + (n - k) * np.log1p(-ps))
    return (pmf * ((lo <= ps) & (ps <= hi))).sum(1)


def _truths(p: np.ndarray) -> dict[str, np.ndarray]:
    pm = np.where(OFF, p, np.nan)
    return {"task": np.nanmean(pm), "outgoing": np.nanmean(pm, 1), "incoming": np.nanmean(pm, 0)}


def aggregate_coverage(p: np.ndarray, n: int, reps: int, seed: int, *, sigma: float = 0.0, shared: float = 0.0,
                       valid_fraction: float = 1.0, interval: str = "clopper_pearson") -> dict[str, float]:
    """Coverage of the nominal 95% intervals of the task mean and the outgoing and incoming rates
    (pooled over the 3 models) for cell probabilities ``p``."""
    rng = np.random.default_rng(seed)
    hit, mask = simulate_hits(p, n, reps, rng, sigma=sigma, shared=shared, valid_fraction=valid_fraction)
    out = {}
    rates = None if interval == "bootstrap" else rate_estimates(hit, mask, interval=interval)
    boot = _bootstrap_loop(hit, mask, seed) if rates is None else {}
    for kind, truth in _truths(p).items():
        if rates is None:
            lo, hi = boot[kind]
        else:
            e = rates.task_mean if kind == "task" else getattr(rates, kind)
            lo, hi = e.lo, e.hi
        out[kind] = float(_covered(lo, hi, truth).mean())
    return out


def _bootstrap_loop(hit: np.ndarray, mask: np.ndarray, seed: int, n_boot: int = 500):
    """``{kind: (lo, hi)}`` of the percentile bootstrap of
    :func:`jsuff.transfer.transfer_analysis`, task by task."""
    bounds: dict[str, list] = {"matrix": [], "task": [], "outgoing": [], "incoming": []}
    for r in range(hit.shape[0]):
        labels = np.where(hit[r], 0, 1)  # label 0 is the original label: success
        res = transfer_analysis(labels, np.zeros(labels.shape[::2], int), valid=mask[r, :, 0],
                                interval="bootstrap", n_boot=n_boot, seed=seed + r).overall
        for kind, e in zip(bounds, res):
            bounds[kind].append((e.lo, e.hi))
    return {kind: tuple(np.stack(v) for v in zip(*pairs)) for kind, pairs in bounds.items()}


# ----------------------------------------------------------------------------------------------
# Information statistics
# ----------------------------------------------------------------------------------------------


def joint(c: int, q: float, px: np.ndarray | None = None) -> np.ndarray:
    """``P[x, y]``: x from ``px`` (uniform by default); y = x with probability q, else uniform."""
    px = np.full(c, 1.0 / c) if px is None else np.asarray(px, float)
    return px[:, None] * (q * np.eye(c) + (1.0 - q) / c)


def mutual_information_bits(p: np.ndarray) -> float:
    """Exact MI of a joint distribution, in bits (float64 NumPy)."""
    px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return max(float((p[nz] * np.log2(p[nz] / (px @ py)[nz])).sum()), 0.0)  # 0.0, not -1e-17


def macro_precision_recall(p: np.ndarray) -> tuple[float, float]:
    """Macro precision and recall of predictions y for truth x under the joint ``p[x, y]``."""
    tp = np.diag(p)
    return float(np.mean(tp / p.sum(0))), float(np.mean(tp / p.sum(1)))


def information_coverage(p: np.ndarray, n: int, reps: int, seed: int, n_boot: int = 200,
                         metrics: bool = False) -> tuple[float, ...]:
    """Coverage of the 95% MI interval the information tables give (basic bootstrap), and of the
    percentile bootstrap, for ``reps`` samples of ``n`` label pairs from ``p``; with ``metrics``
    also that of macro precision and recall (x the truth, y the prediction; percentile bootstrap,
    as the metrics table gives them)."""
    rng = np.random.default_rng(seed)
    c = p.shape[0]
    cells = rng.choice(c * c, size=(reps, n), p=p.ravel())
    x, y = cells // c, cells % c
    ok = np.ones_like(x, bool)
    s = info._stats_with_intervals(x, y, ok, c, variants=(), classification=metrics, n_boot=n_boot,
                                   confidence=0.95, seed=seed, min_n=0)
    truth = mutual_information_bits(p)
    basic = float(_covered(s["mi_lo"], s["mi_hi"], truth).mean())
    if metrics:
        prec, rec = macro_precision_recall(p)
        return (basic, float(_covered(s["precision_lo"], s["precision_hi"], prec).mean()),
                float(_covered(s["recall_lo"], s["recall_hi"], rec).mean()))
    # the percentile interval of the same resamples, for comparison
    idx = info.bootstrap_indices(n, n_boot, seed)
    boot = np.concatenate([
        np.asarray(info._table_stats(jnp.asarray(
            info._histograms(cells[r : r + 20][:, idx], c * c).reshape(-1, n_boot, c, c)), (), False)["mi"])
        for r in range(0, reps, 20)
    ])
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=1)
    return basic, float(_covered(lo, hi, truth).mean())


MI_CASES = (
    ("2 classes, independent", 2, 0.0, None),
    ("2 classes, q = 0.3", 2, 0.3, None),
    ("2 classes, q = 0.9", 2, 0.9, None),
    ("2 classes, q = 0.9, 90/10 skew", 2, 0.9, (0.9, 0.1)),
    ("5 classes, independent", 5, 0.0, None),
    ("5 classes, q = 0.3", 5, 0.3, None),
    ("5 classes, q = 0.6", 5, 0.6, None),
    ("5 classes, q = 0.9", 5, 0.9, None),
    ("10 classes, q = 0.5", 10, 0.5, None),
    ("10 classes, q = 0.9", 10, 0.9, None),
)
MI_N = (12, 30, 150, 500, 2000)


# ----------------------------------------------------------------------------------------------
# The tables of docs/statistics.md
# ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4000, help="replicates per setting (interval methods)")
    parser.add_argument("--boot-reps", type=int, default=200, help="replicates per setting (bootstrap columns)")
    parser.add_argument("--mi-reps", type=int, default=300)
    args = parser.parse_args()
    t0 = time.perf_counter()
    ps = np.linspace(0.001, 0.999, 999)
    inner = (ps >= 0.02) & (ps <= 0.98)
    print("Cells, exact coverage of nominal 95% over p = 0.001 ... 0.999 (999 points): the lowest, "
          "where, and the lowest for 0.02 <= p <= 0.98\n")
    print("| n | Clopper–Pearson | Wilson |\n|---|---|---|")
    for n in (10, 12, 20, 30, 40, 150):
        cells = []
        for method in ("clopper_pearson", "wilson"):
            cov = exact_cell_coverage(n, ps, method)
            cells.append(f"{cov.min():.3f} at p = {ps[cov.argmin()]:.3f}; {cov[inner].min():.3f}")
        print(f"| {n} | " + " | ".join(cells) + " |")
    print(f"\nCells: coverage of nominal 95% (mean width); {args.reps} replicates x 6 cells, "
          f"bootstrap {args.boot_reps} x 6\n")
    print("| n | p | Clopper–Pearson | Wilson | percentile bootstrap |\n|---|---|---|---|---|")
    for n in CELL_N:
        for p in P_GRID:
            cols = [cell_coverage(p, n, args.reps, 1) , cell_coverage(p, n, args.reps, 1, "wilson"),
                    cell_coverage(p, n, args.boot_reps, 1, "bootstrap")]
            print(f"| {n} | {p} | " + " | ".join(f"{c:.3f} ({w:.2f})" for c, w in cols) + " |", flush=True)
    settings = [("independent", {}), ("clip effect sigma = 1", {"sigma": 1.0}),
                ("clip effect sigma = 2", {"sigma": 2.0})]
    cases = [(str(p), np.full((M, M), p)) for p in P_GRID] + [("mixed", MIXED)]
    print("\nAggregates (task mean / outgoing / incoming), Korn–Graubard, then the percentile "
          f"bootstrap; {args.reps} and {args.boot_reps} replicates\n")
    print("| successes | n | p | Korn–Graubard | Wilson on effective n | percentile bootstrap |\n"
          "|---|---|---|---|---|---|")
    for label, kw in settings:
        for n in AGGREGATE_N:
            for name, p in cases:
                cols = [aggregate_coverage(p, n, args.reps, 2, **kw),
                        aggregate_coverage(p, n, args.reps, 2, interval="wilson", **kw),
                        aggregate_coverage(p, n, args.boot_reps, 2, interval="bootstrap", **kw)]
                print(f"| {label} | {n} | {name} | " + " | ".join(
                    "/".join(f"{v:.3f}" for v in c.values()) for c in cols) + " |", flush=True)
    print("\nStress test: a clip is one draw for all its cells with probability rho (rare all-fail "
          f"clips); Korn–Graubard, 80% of source clips valid; {args.reps} replicates\n")
    print("| rho | n | p | task / outgoing / incoming |\n|---|---|---|---|")
    for rho in (0.5, 0.9):
        for n in AGGREGATE_N:
            for name, p in cases:
                c = aggregate_coverage(p, n, args.reps, 3, shared=rho, valid_fraction=0.8)
                print(f"| {rho} | {n} | {name} | " + "/".join(f"{v:.3f}" for v in c.values()) + " |", flush=True)
    print(f"\nMutual information: coverage of the 95% interval, basic (jsuff) / percentile bootstrap; "
          f"{args.mi_reps} replicates, 200 resamples\n")
    print("| labels | MI (bits) | " + " | ".join(f"n = {n}" for n in MI_N) + " |\n|---|---|" + "---|" * len(MI_N))
    for name, c, q, px in MI_CASES:
        p = joint(c, q, None if px is None else np.array(px))
        cols = [information_coverage(p, n, args.mi_reps, 4) for n in MI_N]
        print(f"| {name} | {mutual_information_bits(p):.3f} | "
              + " | ".join(f"{b:.2f} / {pc:.2f}" for b, pc in cols) + " |", flush=True)
    print(f"\nMacro precision / recall (y predicts x): coverage of the 95% percentile bootstrap "
          f"interval; {args.mi_reps} replicates\n")
    print("| labels | " + " | ".join(f"n = {n}" for n in MI_N) + " |\n|---|" + "---|" * len(MI_N))
    for name, c, q, px in MI_CASES:
        if q == 0.0:
            continue
        p = joint(c, q, None if px is None else np.array(px))
        cols = [information_coverage(p, n, args.mi_reps, 5, metrics=True)[1:] for n in MI_N]
        print(f"| {name} | " + " | ".join(f"{a:.2f} / {b:.2f}" for a, b in cols) + " |", flush=True)
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
