"""bfloat16 against float32 candidate evaluation (``SearchConfig(compute_dtype="bfloat16")``).

On the same clip and the same ``batch`` random keep-masks over its rfft grid, the search's
candidate evaluation (``jsuff.evaluate.masked_logits``: masks, rfft synthesis in float32, the model)
runs once in float32 and once in bfloat16. Reported per model: the share of candidates whose
top-1 label agrees, the largest logit difference, time per batch in each dtype and the speed-up.
Then one search per dtype on the same clip and key: whether the target agrees, the overlap of
the top-1% cells of the target's maps, and the search time.

CPU bfloat16 speed is **not** representative: x86 CPUs without AMX/AVX512-BF16 emulate bfloat16
arithmetic (convert, compute in float32, round), so it is often slower than float32 here. The
speed that matters is on an accelerator (``benchmarks/gpu_peak.py``). What this script does show
on any machine is agreement. Which layers really run in bfloat16 depends on the model (see
``jsuff.evaluate.model_logits``): wav2vec2/HuBERT run their convolutions and transformer in
bfloat16; AST computes its fbank in float32 and its layers then promote to float32 with
bfloat16-rounded weights; ``bandpower``'s FFT needs float32 input and is refused.

Usage::

    python -m benchmarks.precision
    python -m benchmarks.precision --models wav2vec2-small --batch 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np


def run(name: str, *, batch: int, seconds: float, repeats: int, iters: int) -> dict[str, Any]:
    import jax

    from benchmarks import _common as C
    from jsuff import SearchConfig, responsibility_maps

    bm = C.build(name)
    x, masks = C.candidates(seconds, batch)
    row: dict[str, Any] = {"model": name, "batch": batch, "seconds": seconds}
    out = {}
    for dt in ("float32", "bfloat16"):
        compile_s, run_fn, _ = C.candidate_logits(bm.model, x, masks, dt)
        out[dt] = np.asarray(run_fn())
        row[f"{dt}_compile_s"] = compile_s
        row[f"{dt}_batch_s"] = C.median_time(run_fn, repeats)
    f32, b16 = out["float32"], out["bfloat16"]
    row["label_agreement"] = float((f32.argmax(-1) == b16.argmax(-1)).mean())
    row["distinct_labels_f32"] = int(len(np.unique(f32.argmax(-1))))
    row["max_abs_logit_diff"] = float(np.abs(f32 - b16).max())
    row["logit_range_f32"] = float(np.ptp(f32))
    row["bf16_speedup"] = row["float32_batch_s"] / row["bfloat16_batch_s"]

    key = jax.random.key(0)
    maps = {}
    for dt in ("float32", "bfloat16"):
        cfg = SearchConfig(iters=iters, compute_dtype=dt)
        responsibility_maps(bm.model.apply, bm.model.params, x, config=cfg, key=key)  # compile
        row[f"{dt}_search_s"], maps[dt] = C.timed(
            lambda cfg=cfg: responsibility_maps(bm.model.apply, bm.model.params, x, config=cfg, key=key)
        )
    a, b = maps["float32"], maps["bfloat16"]
    row["search_target_agrees"] = bool(a.targets[0] == b.targets[0])
    top = max(1, a.maps.shape[-1] // 100)
    ta = set(np.argsort(-a.maps[0, a.targets[0]], kind="stable")[:top].tolist())
    tb = set(np.argsort(-b.maps[0, b.targets[0]], kind="stable")[:top].tolist())
    row["top1pct_cell_overlap"] = len(ta & tb) / top
    row["search_queries_f32"], row["search_queries_bf16"] = int(a.queries[0]), int(b.queries[0])
    return row


def main(argv: list[str] | None = None) -> int:
    from benchmarks import _common as C

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="wav2vec2-mini,ast-tiny", help=f"of {C.model_names()[1:]}")
    p.add_argument("--batch", type=int, default=32, help="candidates compared (and per timed call)")
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--iters", type=int, default=3, help="iterations of the search comparison")
    p.add_argument("--out", type=Path, default=C.RESULTS / "precision.json")
    args = p.parse_args(argv)
    C.run_models(
        args.models,
        lambda name: run(name, batch=args.batch, seconds=args.seconds, repeats=args.repeats, iters=args.iters),
        ["model", "batch", "label_agreement", "distinct_labels_f32", "max_abs_logit_diff", "float32_batch_s",
         "bfloat16_batch_s", "bf16_speedup", "search_target_agrees", "top1pct_cell_overlap"],
        args.out, vars(args),
    )
    print("note: CPU bfloat16 speed is not representative (emulated on CPUs without native bf16).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
