"""Throughput of ported models against the same PyTorch models: waveforms per second, side by side.

For every entry of :data:`ENTRIES` (a family at a size) the script builds the transformers model
from a config with seeded random weights, saves it with ``save_pretrained``, converts the folder
through the public path (``converters.convert``), then times, on the same batch of clips:

* jsuff: the jitted ``apply(params, waveforms)`` (front end included), compile time reported
  apart, ``block_until_ready`` after every call;
* PyTorch: the model's forward on CPU under ``torch.inference_mode()`` on the feature extractor's
  output (the NumPy front end is not timed; it costs microseconds next to the model).

It reports the median time per batch, waveforms/s for both, their ratio (jsuff / PyTorch) and the
largest logit difference (a sanity check, not a parity test), and records the devices and versions.
Adding a family is one list entry: an :class:`Entry` whose ``make_folder`` writes a Hugging Face
folder the converters understand and whose ``torch_forward`` runs the PyTorch model on waveforms.

Usage::

    python -m benchmarks.model_throughput                      # tiny and small, wav2vec2 + HuBERT
    python -m benchmarks.model_throughput --sizes base --batch 8 --seconds 2 --out results.json
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000

# Config overrides per size. "base" is the published base model's shape (wav2vec2-base / HuBERT
# base: 7 convs of 512 channels, 12 layers of 768); "small" has base widths and 4 layers (runs in
# under a minute on two CPU cores); "tiny" is the test suite's model.
W2V2_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=(8, 8),
        conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        classifier_proj_size=8,
    ),
    "small": dict(num_hidden_layers=4),
    "base": dict(),  # the config classes' defaults are the base model
}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of the benchmark.

    Attributes:
        family: the family name printed in the table.
        size: the size name (a key of the family's sizes table).
        make_folder: ``make_folder(folder) -> torch_model``: save a HF model folder (seeded random
            weights) and return the PyTorch model in eval mode.
        torch_forward: ``torch_forward(torch_model, folder, waveforms[B, T]) -> (run, logits)``:
            prepare the PyTorch inputs once, return a no-argument callable that runs the model
            (what is timed) and the logits it gives.
    """

    family: str
    size: str
    make_folder: Callable[[Path], Any]
    torch_forward: Callable[[Any, Path, np.ndarray], tuple[Callable[[], Any], np.ndarray]]


def _hf_waveform_classifier(config_cls: str, model_cls: str, overrides: dict[str, Any]) -> Callable[[Path], Any]:
    """``make_folder`` for transformers classifiers that take waveforms (wav2vec2-style front end)."""

    def make(folder: Path) -> Any:
        import torch
        import transformers

        torch.manual_seed(0)
        config = getattr(transformers, config_cls)(**overrides, num_labels=10)
        model = getattr(transformers, model_cls)(config).eval()
        model.save_pretrained(folder)
        transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
        return model

    return make


def _waveform_forward(model: Any, folder: Path, waveforms: np.ndarray) -> tuple[Callable[[], Any], np.ndarray]:
    import torch
    import transformers

    extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(folder)
    values = extractor(list(waveforms), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values

    def run() -> Any:
        with torch.inference_mode():
            return model(values).logits

    return run, run().numpy()


def _w2v2_entries(family: str, config_cls: str, model_cls: str) -> list[Entry]:
    return [
        Entry(family, size, _hf_waveform_classifier(config_cls, model_cls, overrides), _waveform_forward)
        for size, overrides in W2V2_SIZES.items()
    ]


#: Every benchmarked family and size; add a family with its own entries here.
ENTRIES: list[Entry] = [
    *_w2v2_entries("wav2vec2", "Wav2Vec2Config", "Wav2Vec2ForSequenceClassification"),
    *_w2v2_entries("hubert", "HubertConfig", "HubertForSequenceClassification"),
]


def _time(fn: Callable[[], Any], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run_entry(entry: Entry, *, batch: int, seconds: float, repeats: int) -> dict[str, Any]:
    """Time one entry; returns a flat result row."""
    import jax
    import jax.numpy as jnp

    from converters import convert

    rng = np.random.default_rng(0)
    waveforms = (0.1 * rng.normal(size=(batch, int(seconds * SAMPLE_RATE)))).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch_model = entry.make_folder(folder)
        model = convert(folder, None)
        torch_run, torch_logits = entry.torch_forward(torch_model, folder, waveforms)
    x = jnp.asarray(model.prepare(waveforms, SAMPLE_RATE))
    apply = jax.jit(model.apply)
    start = time.perf_counter()
    compiled = apply.lower(model.params, x).compile()
    compile_s = time.perf_counter() - start
    jsuff_logits = np.asarray(compiled(model.params, x).block_until_ready())  # warm-up
    jsuff_s = statistics.median(_time(lambda: compiled(model.params, x).block_until_ready(), repeats))
    torch_run()  # warm-up
    torch_s = statistics.median(_time(torch_run, repeats))
    return {
        "family": entry.family,
        "size": entry.size,
        "batch": batch,
        "seconds": seconds,
        "compile_s": round(compile_s, 3),
        "jsuff_batch_s": jsuff_s,
        "torch_batch_s": torch_s,
        "jsuff_waveforms_per_s": batch / jsuff_s,
        "torch_waveforms_per_s": batch / torch_s,
        "ratio": torch_s / jsuff_s,
        "max_abs_logit_diff": float(np.max(np.abs(jsuff_logits - torch_logits))),
    }


def environment() -> dict[str, Any]:
    """Devices and versions, recorded beside the figures."""
    import flax
    import jax
    import torch
    import transformers

    return {
        "jax_backend": jax.default_backend(),
        "jax_device": str(jax.devices()[0].device_kind),
        "torch_device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "flax": flax.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    families = sorted({e.family for e in ENTRIES})
    sizes = list(dict.fromkeys(e.size for e in ENTRIES))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--families", default=",".join(families), help=f"comma-separated, of {families}")
    p.add_argument("--sizes", default="tiny,small", help=f"comma-separated, of {sizes}")
    p.add_argument("--batch", type=int, default=4, help="clips per batch")
    p.add_argument("--seconds", type=float, default=1.0, help="clip length in seconds (16 kHz)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per model (the median is kept)")
    p.add_argument("--out", type=Path, help="write the rows and environment as JSON (and CSV beside it)")
    args = p.parse_args(argv)
    chosen_f, chosen_s = set(args.families.split(",")), set(args.sizes.split(","))
    unknown = (chosen_f - set(families)) | (chosen_s - set(sizes))
    if unknown:
        p.error(f"unknown families/sizes: {', '.join(sorted(unknown))}")
    env = environment()
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    header = f"{'family':<10} {'size':<6} {'batch':>5} {'sec':>4} {'compile_s':>9} {'jsuff wav/s':>12} {'torch wav/s':>12} {'ratio':>6} {'max|dlogit|':>11}"
    print(header)
    rows = []
    for entry in ENTRIES:
        if entry.family in chosen_f and entry.size in chosen_s:
            r = run_entry(entry, batch=args.batch, seconds=args.seconds, repeats=args.repeats)
            rows.append(r)
            print(
                f"{r['family']:<10} {r['size']:<6} {r['batch']:>5} {r['seconds']:>4g} {r['compile_s']:>9.2f} "
                f"{r['jsuff_waveforms_per_s']:>12.1f} {r['torch_waveforms_per_s']:>12.1f} {r['ratio']:>6.2f} "
                f"{r['max_abs_logit_diff']:>11.2e}",
                flush=True,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")
        with open(args.out.with_suffix(".csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["family"])
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
