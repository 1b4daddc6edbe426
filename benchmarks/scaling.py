"""How the cost of an explanation grows: candidates per call, clip length, grid, devices, memory.

Every case runs in its own subprocess (so its peak memory is its own, and the host device count
can be forced with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before jax starts). A
case builds the model, explains a clip once to compile (``compile_s`` = first call - warm call),
then times, warm: :func:`jsuff.explain` (search + global-insertion extraction, no certificate) and
:func:`jsuff.responsibility_maps` alone (``search_s``; ``extract_s`` is the difference: extraction
plus the clip, empty-signal and full-signal checks). It reports the model queries, the depth
levels the lock-step walk ran (``min(deepest passing depth + 2, tree_depth + 1)``), seconds per
level, the process's peak RSS (``getrusage``) and its RSS before the first search, and JAX's
device memory statistics where the backend has them (not on CPU).

Sweeps (each against a baseline of the ``bandpower`` toy on a 1 s, 16 kHz clip, rfft grid,
``max_batch`` 64, 20 iterations; the toy keeps 30 s clips affordable on two cores):

* ``batch``: candidates per model call (``max_batch``) 8 .. 512;
* ``length``: clip length 1, 5, 10, 30 s (rfft grid 8001 .. 240001 bins), with the growth
  exponent of time against length fitted on a log-log scale;
* ``grid``: rfft against stft (``n_fft`` 512, ``hop`` 128: 257 x frames tiles) at 1 s and 5 s;
* ``devices``: 1, 2, 4 forced host devices, ``explain_many`` of 4 clips with the candidate batch
  sharded over a mesh. Host devices share the machine's cores: on a 2-core CPU more of them
  cannot be faster, this only shows the sharded path works and what it costs;
* ``processes``: a whole ``jsuff study`` (two bandpower models, 16 clips of 1 s, 2 clips per unit:
  16 explanation units) run by 1 and by 2 local processes (``jax.distributed`` over 127.0.0.1, one
  CPU device each), timed from the first start to the last exit, per explanation. Every process
  compiles its own programs (JAX's persistent compilation cache would not help process 1: it is
  keyed by device and written by process 0 only), so the time includes that; ``fixed_s`` is the
  wall time of the same study resumed with nothing left to do (starting Python and JAX, loading
  the models, the tables), and ``work_s_per_explanation`` the rest per explanation.

Usage::

    python -m benchmarks.scaling            # every sweep (about 10 minutes on two cores)
    python -m benchmarks.scaling --quick    # fewer points, fewer iterations (about 3 minutes)
    python -m benchmarks.scaling --sweeps length,devices --model ast-tiny
    python -m benchmarks.scaling --sweeps processes
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """One measurement (runs inside the subprocess)."""
    import jax

    from benchmarks import _common as C
    from jsuff import STFT, ExtractConfig, RFFT, SearchConfig, explain_many, responsibility_maps

    bm = C.build(case["model"])
    apply_fn, params = bm.model.apply, bm.model.params
    domain = RFFT() if case["grid"] == "rfft" else STFT(n_fft=512, hop=128)
    config = SearchConfig(iters=case["iters"], max_batch=case["max_batch"])
    ext = ExtractConfig(certify=False, prefixes_per_call=case["max_batch"])
    n = case["clips"]
    clips = np.stack([C.clip(seed, case["seconds"]) for seed in range(n)])
    mesh = None
    if case["devices"] > 1:
        from jax.sharding import Mesh

        mesh = Mesh(np.array(jax.devices()[: case["devices"]]), ("d",))
    key = jax.random.key(0)
    rss_before = C.max_rss_mib()

    def explain() -> Any:
        return explain_many(apply_fn, params, clips, domain=domain, config=config, extract=ext, key=key, mesh=mesh,
                            quiet=True)

    first_s, _ = C.timed(explain)
    explain_s, exps = C.timed(explain)
    def search() -> Any:
        return responsibility_maps(apply_fn, params, clips, domain=domain, config=config, key=key, mesh=mesh)

    search()  # its own warm-up: the host-side set-up differs from explain's
    search_s, res = C.timed(search)
    levels = int(min(int(res.depth.max()) + 2, config.tree_depth + 1))
    stats = jax.devices()[0].memory_stats()
    return {
        **case,
        "cells": int(np.prod(domain.grid_shape(clips.shape[1]))),
        "jax_devices": jax.device_count(),
        "compile_s": first_s - explain_s,
        "explain_s": explain_s,
        "explain_s_per_clip": explain_s / n,
        "search_s": search_s,
        "extract_s": explain_s - search_s,
        "levels": levels,
        "s_per_level": search_s / levels,
        "search_queries": int(res.queries.sum()),
        "queries": int(sum(e.queries for e in exps)),
        "ms_per_query": 1e3 * explain_s / sum(e.queries for e in exps),
        "size_fraction": float(np.mean([e.size_fraction for e in exps])),
        "verified": all(e.verified for e in exps),
        "rss_before_mib": rss_before,
        "peak_rss_mib": C.max_rss_mib(),
        "jax_peak_bytes": None if not stats else stats.get("peak_bytes_in_use"),
    }


def cases(sweeps: list[str], quick: bool, model: str) -> list[dict[str, Any]]:
    base = dict(model=model, seconds=1.0, grid="rfft", max_batch=64, iters=8 if quick else 20, devices=1, clips=1)
    out = []
    if "batch" in sweeps:
        out += [dict(base, sweep="batch", max_batch=b) for b in ((16, 64, 256) if quick else (8, 32, 64, 128, 512))]
    if "length" in sweeps:
        out += [dict(base, sweep="length", seconds=s) for s in ((1.0, 5.0, 30.0) if quick else (1.0, 5.0, 10.0, 30.0))]
    if "grid" in sweeps:
        out += [dict(base, sweep="grid", grid=g, seconds=s) for s in ((1.0,) if quick else (1.0, 5.0))
                for g in ("rfft", "stft")]
    if "devices" in sweeps:
        out += [dict(base, sweep="devices", devices=d, clips=4) for d in (1, 2, 4)]
    if "processes" in sweeps:
        out += [dict(base, sweep="processes", processes=n, clips=16) for n in (1, 2)]
    return out


def _study_workspace(root: Path, case: dict[str, Any]) -> Path:
    """Two bandpower models (band edges apart by 10%) and ``clips`` clips of the benchmark; the TOML."""
    from benchmarks import _common as C
    from jsuff.models import build_model, save_model

    for name, shift in (("bands", 1.0), ("shifted", 1.1)):
        edges = np.geomspace(50.0 * shift, C.SAMPLE_RATE / 2 / 1.1 * shift, C.NUM_LABELS + 1)
        config = {"sample_rate": C.SAMPLE_RATE, "bands": [[float(a), float(b)] for a, b in zip(edges[:-1], edges[1:])]}
        model = build_model("bandpower", config, sample_rate=C.SAMPLE_RATE,
                            labels=[f"band{i}" for i in range(C.NUM_LABELS)])
        save_model(model, root / "models" / name)
    import soundfile as sf

    for i in range(case["clips"]):
        (root / "data").mkdir(exist_ok=True)
        sf.write(root / "data" / f"clip_{i:03d}.wav", C.clip(i, case["seconds"]), C.SAMPLE_RATE)
    toml = root / "study.toml"
    toml.write_text(
        'task = "scaling"\nmodels = ["models/bands", "models/shifted"]\nclips_per_batch = 2\nn_boot = 50\n'
        f'[data]\npath = "data"\nduration = {case["seconds"]}\nsample_rate = {C.SAMPLE_RATE}\n'
        f'[search]\niters = {case["iters"]}\nmax_batch = {case["max_batch"]}\n'
    )
    return toml


def _run_study(toml: Path, out: Path, processes: int, env: dict[str, str], timeout: float, *extra: str) -> float:
    """Wall seconds of ``jsuff study`` run by ``processes`` local processes (first start to last exit)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = [sys.executable, "-m", "jsuff", "study", str(toml), "--out", str(out), "--quiet", "--no-report", *extra]
    many = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes)]
    cmds = [base] if processes == 1 else [base + many + ["--process-id", str(i)] for i in range(processes)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError((err.strip().splitlines() or ["no output"])[-1])
    return time.perf_counter() - t0


def run_processes(case: dict[str, Any], timeout: float, scratch: Path) -> dict[str, Any]:
    """The ``processes`` sweep's case: one study, timed as a whole (see the module docstring)."""
    ws = scratch / "workspace"
    toml = ws / "study.toml" if (ws / "study.toml").exists() else _study_workspace(ws, case)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        out = scratch / f"out_{case['processes']}"
        wall = _run_study(toml, out, case["processes"], env, timeout)
        summary = json.loads((out / "summary.json").read_text())
        fixed = _run_study(toml, out, case["processes"], env, timeout, "--resume")  # nothing left to do
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return {**case, "error": str(e)}
    n = len(summary["models"]) * summary["clips"]
    return {**case, "explanations": n, "wall_s": wall, "wall_s_per_explanation": wall / n, "fixed_s": fixed,
            "work_s_per_explanation": (wall - fixed) / n, "explain_s_process0": summary["explain_seconds_this_run"]}


def _subprocess(case: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={case['devices']}",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "benchmarks.scaling", "--case", json.dumps(case)]
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**case, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {**case, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def growth_exponent(xs: list[float], ys: list[float]) -> float:
    """Slope of log(y) against log(x): time ~ x**slope."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sweeps", default="batch,length,grid,devices,processes")
    p.add_argument("--model", default="bandpower")
    p.add_argument("--quick", action="store_true", help="fewer points and iterations")
    p.add_argument("--timeout", type=float, default=300, help="seconds per case")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print its JSON
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0

    from benchmarks import _common as C

    out = args.out or C.RESULTS / ("scaling_quick.json" if args.quick else "scaling.json")
    sweeps = args.sweeps.split(",")
    unknown = set(sweeps) - {"batch", "length", "grid", "devices", "processes"}
    if unknown:
        p.error(f"unknown sweeps {sorted(unknown)}")
    env = C.environment()
    C.print_env(env)
    cols = ["sweep", "seconds", "grid", "cells", "max_batch", "devices", "processes", "clips", "compile_s",
            "explain_s_per_clip", "search_s", "extract_s", "levels", "s_per_level", "queries", "ms_per_query",
            "peak_rss_mib", "explanations", "wall_s", "wall_s_per_explanation", "fixed_s", "work_s_per_explanation",
            "error"]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for case in cases(sweeps, args.quick, args.model):
            if case["sweep"] == "processes":
                row = run_processes(case, args.timeout, Path(scratch))
            else:
                row = _subprocess(case, args.timeout)
            rows.append(row)
            C.print_row(row, cols)
    growth = {}
    ok = [r for r in rows if r["sweep"] == "length" and "error" not in r]
    if len(ok) >= 2:
        secs = [r["seconds"] for r in ok]
        growth = {
            "explain_vs_length": growth_exponent(secs, [r["explain_s_per_clip"] for r in ok]),
            "search_vs_length": growth_exponent(secs, [r["search_s"] for r in ok]),
            "per_query_vs_length": growth_exponent(secs, [r["ms_per_query"] for r in ok]),
        }
    print()
    C.print_table(rows, [c for c in cols if any(c in r for r in rows)])
    if growth:
        print("growth exponents (time ~ seconds**k): " + ", ".join(f"{k} {v:.2f}" for k, v in growth.items()))
    settings = {"sweeps": sweeps, "quick": args.quick, "model": args.model}
    C.write_results(out, env, rows, growth=growth, settings=settings)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
