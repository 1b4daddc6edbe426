"""Batched responsibility search vs a one-candidate-per-call loop over the same jitted model.

The loop (``jsuff.search.responsibility_loop``) walks the same random trees (same key, same
settings) and queries the model one candidate per call, the way ReX queries 1-D data; both must
produce the same maps, which this script checks before it reports anything. Throughput is model
candidates per second of wall time; compilation is timed separately (a warm-up call), and the
batched search and the loop are each timed over ``--repeats`` runs (best and median reported; the
speed-up compares the bests).

Models (``--model``, on a 1 s, 16 kHz clip): ``cnn``, a small CNN (3 conv layers) on the
log-magnitude STFT; ``mlp``, a 2-layer MLP on 64 log band magnitudes of one rfft; ``raw``, a
2-layer strided 1-D CNN on the raw waveform. Grid: the 8001 rfft bins (``--domain stft``: n_fft
512, hop 128). Also times the batched search with
``linear_synthesis=False``. Results go to ``benchmarks/results/search_throughput_<model>_<domain>.json``.

Usage:
    python -m benchmarks.search_throughput [--model cnn|mlp|raw] [--domain rfft|stft] [--iters 20]
        [--max-batch 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jsuff
from jsuff.domains import RFFT, STFT
from jsuff.search import SearchConfig, responsibility_loop, responsibility_maps

SR = 16000
N_FFT, HOP = 512, 256
CLASSES = 10


def init_cnn(key: jax.Array, channels: tuple[int, ...] = (8, 16, 16)) -> dict:
    """He-initialised 3x3 conv stack + linear head."""
    params: dict = {}
    c_in = 1
    keys = jax.random.split(key, len(channels) + 1)
    for i, c in enumerate(channels):
        params[f"conv{i}"] = jax.random.normal(keys[i], (3, 3, c_in, c)) * np.sqrt(2.0 / (9 * c_in))
        params[f"bias{i}"] = jnp.zeros(c)
        c_in = c
    params["head"] = jax.random.normal(keys[-1], (c_in, CLASSES)) * np.sqrt(1.0 / c_in)
    params["head_bias"] = jnp.zeros(CLASSES)
    return params


def cnn(params: dict, x: jax.Array) -> jax.Array:
    """waveforms [B, T] -> logits [B, 10]: log |STFT| -> 3 strided convs -> mean pool -> linear."""
    frames = 1 + (x.shape[1] - N_FFT) // HOP
    idx = np.arange(frames)[:, None] * HOP + np.arange(N_FFT)[None, :]
    win = jnp.asarray(np.hanning(N_FFT).astype(np.float32))
    spec = jnp.abs(jnp.fft.rfft(x[:, idx] * win.reshape(1, 1, -1), axis=-1))  # [B, F, 257]
    h = jnp.log(spec + 1e-3)[..., None]  # NHWC
    for i in range(3):
        h = jax.lax.conv_general_dilated(
            h, params[f"conv{i}"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jax.nn.relu(h + params[f"bias{i}"].reshape(1, 1, 1, -1))
    return h.mean(axis=(1, 2)) @ params["head"] + params["head_bias"].reshape(1, -1)


def init_bands(key: jax.Array, bands: int = 64, hidden: int = 32) -> dict:
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (bands, hidden)) * np.sqrt(2.0 / bands),
        "w2": jax.random.normal(k2, (hidden, CLASSES)) * np.sqrt(1.0 / hidden),
    }


def bands_mlp(params: dict, x: jax.Array) -> jax.Array:
    """waveforms [B, T] -> logits: log band magnitudes of one rfft (64 bands) -> 2-layer MLP."""
    mag = jnp.abs(jnp.fft.rfft(x, axis=-1))[:, : (x.shape[1] // 2 // 64) * 64]
    feats = jnp.log(mag.reshape(x.shape[0], 64, -1).mean(-1) + 1e-3)
    return jax.nn.relu(feats @ params["w1"]) @ params["w2"]


def init_raw(key: jax.Array, channels: tuple[int, ...] = (16, 32)) -> dict:
    """He-initialised 1-D conv stack on the raw waveform + linear head."""
    k = jax.random.split(key, 3)
    return {
        "conv0": jax.random.normal(k[0], (64, 1, channels[0])) * np.sqrt(2.0 / 64),
        "conv1": jax.random.normal(k[1], (8, channels[0], channels[1])) * np.sqrt(2.0 / (8 * channels[0])),
        "head": jax.random.normal(k[2], (channels[1], CLASSES)) * np.sqrt(1.0 / channels[1]),
    }


def raw_cnn(params: dict, x: jax.Array) -> jax.Array:
    """waveforms [B, T] -> logits: conv 64 taps stride 16 -> conv 8 taps stride 4 -> log-energy pool -> linear
    (a small raw-waveform front end, as RawNet-style detectors have)."""
    h = x[:, :, None]  # NWC
    for name, stride in (("conv0", 16), ("conv1", 4)):
        h = jax.lax.conv_general_dilated(h, params[name], (stride,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"))
        h = jax.nn.relu(h)
    return jnp.log(jnp.mean(h * h, axis=1) + 1e-6) @ params["head"]


MODELS = {
    "cnn": (cnn, init_cnn, "3-layer CNN on log|STFT| (n_fft 512, hop 256), 10 classes"),
    "mlp": (bands_mlp, init_bands, "2-layer MLP on 64 log band magnitudes of the rfft, 10 classes"),
    "raw": (raw_cnn, init_raw, "2-layer strided 1-D CNN on the raw waveform (16, 32 channels), 10 classes"),
}


def clip(seed: int = 0) -> np.ndarray:
    """1 s: two harmonic tones, a chirp and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    x = 0.4 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 660 * t)
    x += 0.2 * np.sin(2 * np.pi * (300 + 1500 * t) * t) + 0.02 * rng.standard_normal(SR)
    return x.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="cnn")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--domain", choices=("rfft", "stft"), default="rfft", help="stft: n_fft 512, hop 128")
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/search_throughput_<model>_<domain>.json")
    args = ap.parse_args()

    model, init, description = MODELS[args.model]
    params = init(jax.random.key(0))
    x = clip()
    cfg = SearchConfig(iters=args.iters, max_batch=args.max_batch)
    key = jax.random.key(1)
    domain = RFFT() if args.domain == "rfft" else STFT(n_fft=512, hop=128)

    def timed(config: SearchConfig) -> tuple[float, list[float], object]:
        """Compile + first call, then ``repeats`` warm calls (each checked to give the same maps)."""
        t0 = time.perf_counter()
        first = responsibility_maps(model, params, x, domain=domain, config=config, key=key)
        compile_and_first = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = responsibility_maps(model, params, x, domain=domain, config=config, key=key)
            jax.block_until_ready(res.maps)
            times.append(time.perf_counter() - t0)
            assert np.array_equal(res.maps, first.maps)
        return compile_and_first, times, res

    compile_and_first, times, r = timed(cfg)
    queries = int(r.queries[0])
    # the same batched search synthesising every mutant on its own (linear_synthesis=False)
    direct_compile, direct_times, d = timed(dataclasses.replace(cfg, linear_synthesis=False))
    if int(d.queries[0]) != queries or not np.allclose(d.maps, r.maps, atol=1e-4):
        raise SystemExit("linear and direct synthesis disagree: refusing to report a speed-up")

    # the loop: compile its one-candidate function on a tiny walk first, then time the full walk
    t0 = time.perf_counter()
    responsibility_loop(model, params, x, domain=domain, config=SearchConfig(iters=1, tree_depth=0), key=key)
    loop_compile = time.perf_counter() - t0
    loop_times = []
    for _ in range(args.repeats):  # best of the same number of runs as the batched search
        t0 = time.perf_counter()
        ref = responsibility_loop(model, params, x, domain=domain, config=cfg, key=key)
        loop_times.append(time.perf_counter() - t0)
        if int(ref.queries[0]) != queries or not np.allclose(ref.maps, r.maps, atol=1e-4):
            raise SystemExit("the loop and the batched search disagree: refusing to report a speed-up")
    loop_time = min(loop_times)

    best = min(times)
    batched_rate = queries / best
    loop_rate = queries / loop_time
    result = {
        "device": str(jax.devices()[0]),
        "device_kind": jax.devices()[0].device_kind,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": {"jax": jax.__version__, "jsuff": jsuff.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "model": description,
        "clip_seconds": 1.0,
        "sample_rate": SR,
        "grid": domain.name,
        "grid_cells": int(np.prod(domain.grid_shape(SR))),
        "config": {"iters": cfg.iters, "tree_depth": cfg.tree_depth, "min_box_size": cfg.min_box_size,
                   "max_batch": cfg.max_batch},
        "target": int(r.targets[0]),
        "candidates": queries,
        "batched": {"compile_and_first_call_s": compile_and_first, "times_s": times, "best_s": best,
                    "median_s": statistics.median(times), "candidates_per_s": batched_rate},
        "batched_direct_synthesis": {"compile_and_first_call_s": direct_compile, "times_s": direct_times,
                                     "best_s": min(direct_times), "candidates_per_s": queries / min(direct_times)},
        "loop": {"compile_s": loop_compile, "times_s": loop_times, "best_s": loop_time,
                 "median_s": statistics.median(loop_times), "candidates_per_s": loop_rate},
        "load_average": list(os.getloadavg()),
        "speedup": batched_rate / loop_rate,
        "maps_equal": True,
    }
    out = args.out or Path(__file__).parent / "results" / f"search_throughput_{args.model}_{args.domain}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"device: {result['device']} ({result['cpu_count']} CPUs), jax {jax.__version__}")
    print(f"grid: {result['grid_cells']} {domain.name} cells, {queries} candidates, iters {cfg.iters}, max_batch {cfg.max_batch}")
    print(f"batched: compile+first {compile_and_first:.2f} s, best {best:.3f} s -> {batched_rate:,.0f} candidates/s")
    print(f"batched, each mutant synthesised (linear_synthesis=False): best {min(direct_times):.3f} s -> "
          f"{queries / min(direct_times):,.0f} candidates/s")
    print(f"loop:    compile {loop_compile:.2f} s, best {loop_time:.2f} s -> {loop_rate:,.0f} candidates/s")
    print(f"load average: {result['load_average'][0]:.2f}")
    print(f"speed-up: {batched_rate / loop_rate:.1f}x  (written to {out})")


if __name__ == "__main__":
    main()
