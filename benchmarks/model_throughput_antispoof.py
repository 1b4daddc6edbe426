"""Throughput of the anti-spoofing and CNN families: AASIST, AASIST-L, RawNet2, mel-CNN.

Each jsuff model is jit-compiled (compilation timed on its own), warmed up, then timed over
``--repeats`` calls on a ``[batch, T]`` batch with ``block_until_ready``. The mel-CNN is compared
side by side with the PyTorch module the parity tests define from the documented key layout
(``tests/test_melcnn.py``): random torch weights, converted to jsuff through the public path,
torch timed in a separate process (XLA's CPU thread pool would otherwise compete with it), and the
two outputs compared. AASIST and RawNet2 are timed in jsuff alone: the only PyTorch
implementations are the reference code, which this project does not copy.

Weights are random (throughput does not depend on them); the sizes are the published configs
(``AASIST.conf``, ``AASIST-L.conf``) and the reduced RawNet2 of ``../shared/golden/rawnet2``.

Usage::

    python -m benchmarks.model_throughput_antispoof --batch 4 --repeats 3 --out bench.json

Writes a JSON file (device, versions, one row per model and engine) and a CSV beside it.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jsuff.models.base import build_model
from jsuff.models.melcnn import MelCnnConfig

AASIST = {
    "nb_samp": 64600,
    "first_conv": 128,
    "filts": [70, [1, 32], [32, 32], [32, 64], [64, 64]],
    "gat_dims": [64, 32],
    "pool_ratios": [0.5, 0.7, 0.5, 0.5],
    "temperatures": [2.0, 2.0, 100.0, 100.0],
}
AASIST_L = {**AASIST, "filts": [70, [1, 32], [32, 32], [32, 24], [24, 24]], "gat_dims": [24, 32],
            "pool_ratios": [0.4, 0.5, 0.7, 0.5]}
RAWNET2 = {
    "nb_samp": 64600, "first_conv": 1024, "in_channels": 1,
    "filts": [20, [20, 20], [20, 32], [32, 32]], "blocks": [2, 4],
    "nb_fc_node": 64, "gru_node": 64, "nb_gru_layer": 3, "nb_classes": 2,
}
MELCNN = MelCnnConfig(
    num_classes=2, n_fft=512, hop=160, n_mels=64, channels=(16, 32, 64), num_samples=64600
).to_json()

MODELS = {"aasist": ("aasist", AASIST), "aasist-l": ("aasist", AASIST_L), "rawnet2": ("rawnet2", RAWNET2),
          "melcnn": ("melcnn", MELCNN)}


def _time_calls(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bench_jsuff(name: str, batch: int, repeats: int, seed: int = 0) -> dict:
    """One jsuff model with random weights: compile time, then ``repeats`` timed calls."""
    arch, config = MODELS[name]
    model = build_model(arch, config, sample_rate=16000, labels=["c0", "c1"], seed=seed)
    x = jnp.asarray(np.random.default_rng(seed).standard_normal((batch, 64600)).astype(np.float32) * 0.1)
    t0 = time.perf_counter()
    compiled = jax.jit(model.apply).lower(model.params, x).compile()
    compile_s = time.perf_counter() - t0
    compiled(model.params, x).block_until_ready()  # warm-up
    times = _time_calls(lambda: compiled(model.params, x).block_until_ready(), repeats)
    return _row(name, "jsuff (jax.jit)", batch, compile_s, times)


def _torch_melcnn(
    pth: str, config: dict, x: np.ndarray, repeats: int, threads: int
) -> tuple[np.ndarray, list[float], str]:
    """Run in a fresh process, so that XLA's CPU thread pool does not compete with torch's."""
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_melcnn import TorchMelCnn  # the parity tests' module, written from the documented layout

    net = TorchMelCnn(config).eval()
    net.load_state_dict(torch.load(pth, weights_only=True))
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        out = net(xt).numpy()  # also the warm-up
        times = _time_calls(lambda: net(xt), repeats)
    return out, times, f"torch {torch.__version__} eager ({torch.get_num_threads()} threads)"


def bench_melcnn_pair(batch: int, repeats: int, workdir: Path, seed: int = 0) -> list[dict]:
    """The mel-CNN in PyTorch (random weights) and in jsuff, converted through the public path."""
    import torch

    import converters

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_melcnn import TorchMelCnn

    torch.manual_seed(seed)
    pth, cfg_path = workdir / "melcnn.pth", workdir / "melcnn.json"
    torch.save(TorchMelCnn(MELCNN).state_dict(), pth)
    cfg_path.write_text(json.dumps(MELCNN))
    x = (np.random.default_rng(seed).standard_normal((batch, 64600)) * 0.1).astype(np.float32)
    # torch at one thread and at all cores: on a busy 2-core machine its OpenMP threads can lose
    # more to contention than they gain.
    torch_runs = []
    for threads in sorted({1, os.cpu_count() or 1}):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            torch_runs.append(pool.submit(_torch_melcnn, str(pth), MELCNN, x, repeats, threads).result())
    want = torch_runs[0][0]

    model = converters.convert(pth, None, arch="melcnn", config=cfg_path)
    xj = jnp.asarray(x)
    t0 = time.perf_counter()
    compiled = jax.jit(model.apply).lower(model.params, xj).compile()
    compile_s = time.perf_counter() - t0
    got = np.asarray(compiled(model.params, xj))  # also the warm-up
    jax_times = _time_calls(lambda: compiled(model.params, xj).block_until_ready(), repeats)
    diff = {"max_abs_diff_vs_torch": float(np.abs(got - want).max())}
    rows = [_row("melcnn", "jsuff (jax.jit)", batch, compile_s, jax_times) | diff]
    return rows + [_row("melcnn", engine, batch, 0.0, times) | diff for _, times, engine in torch_runs]


def _row(name: str, engine: str, batch: int, compile_s: float, times: list[float]) -> dict:
    best = min(times)
    return {
        "model": name,
        "engine": engine,
        "batch": batch,
        "compile_s": round(compile_s, 3),
        "best_s": round(best, 4),
        "median_s": round(float(np.median(times)), 4),
        "clips_per_s": round(batch / best, 2),
        "audio_s_per_s": round(batch * 64600 / 16000 / best, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("model_throughput_antispoof.json"))
    args = p.parse_args(argv)

    rows: list[dict] = []
    for name in args.models:
        if name == "melcnn":
            with tempfile.TemporaryDirectory() as tmp:
                new = bench_melcnn_pair(args.batch, args.repeats, Path(tmp))
        else:
            new = [bench_jsuff(name, args.batch, args.repeats)]
        for row in new:
            print(json.dumps(row), flush=True)
        rows += new

    import torch

    meta = {
        "device": str(jax.devices()[0]),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],  # shared machines: context
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "torch": torch.__version__,
                     "numpy": np.__version__},
        "clip_samples": 64600,
        "repeats": args.repeats,
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    with open(args.out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(_row("", "", 1, 0.0, [1.0])) + ["max_abs_diff_vs_torch"])
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
