"""How long ``import jsuff`` takes against ``import jax``, each in a fresh interpreter.

Each statement runs in its own new process (nothing cached in ``sys.modules``; the OS file cache is
warm after the first round, as on a working machine), timed inside that process from just before
the import to just after it. The statements are run in alternation, ``--repeats`` rounds, so a
change in the machine's load hits all of them alike; the table gives the median and the best of
each, and the ratio of each to ``import jax`` (the issue's target: ``import jsuff`` at most 1.5x).
``--root DIR`` times the ``jsuff`` of another checkout (for a before/after comparison), which is
put first on ``PYTHONPATH``.

Usage:
    python -m benchmarks.import_time [--repeats 7] [--root DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks import _common as C

ROOT = Path(__file__).resolve().parents[1]

STATEMENTS = {
    "import jax": "import jax",
    "import jsuff": "import jsuff",
    "jsuff + explain API": "import jsuff; jsuff.explain, jsuff.SearchConfig, jsuff.RFFT",
    "jsuff + statistics": "import jsuff; jsuff.transfer_analysis, jsuff.pairwise_information",
    "jsuff + load_model": "import jsuff; jsuff.load_model",
}


def time_statement(stmt: str, root: Path) -> float:
    """Seconds ``stmt`` takes in a fresh interpreter with ``root`` first on the path."""
    code = f"import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=root)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7, help="rounds of all statements (default: %(default)s)")
    p.add_argument("--root", type=Path, default=ROOT, help="the checkout whose jsuff is timed (default: this one)")
    p.add_argument("--out", type=Path, default=C.RESULTS / "import_time.json")
    args = p.parse_args(argv)
    env = C.environment()
    C.print_env(env)
    times: dict[str, list[float]] = {k: [] for k in STATEMENTS}
    load = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name, stmt in STATEMENTS.items():
            times[name].append(time_statement(stmt, args.root.resolve()))
        load.append(os.getloadavg()[0])
    jax_median, jax_best = statistics.median(times["import jax"]), min(times["import jax"])
    rows = [
        {
            "statement": name,
            "median_s": statistics.median(t),
            "best_s": min(t),
            "median_vs_jax": statistics.median(t) / jax_median,
            "best_vs_jax": min(t) / jax_best,
            "runs": len(t),
        }
        for name, t in times.items()
    ]
    C.print_table(rows, ["statement", "median_s", "best_s", "median_vs_jax", "best_vs_jax", "runs"])
    print(f"load average (1 min) during the runs: {min(load):.2f}-{max(load):.2f}")
    C.write_results(args.out, env, rows, root=str(args.root), load_1min=load, times=times)
    return 0


if __name__ == "__main__":
    sys.exit(main())
