"""Masked candidates per second: jsuff's jitted batched candidate evaluation against PyTorch eager.

A *candidate* is one keep-mask over the rfft grid of a clip: synthesise ``irfft(z * mask, n=T)``
and classify it. Both sides get the same clip, the same ``batch`` random masks (mixed densities)
and the same converted model (a transformers model with seeded random weights, converted through
``converters.convert``):

* jsuff: one jitted call of ``masked_logits`` (the search's own evaluation: masks, synthesis by
  the ``RFFT`` domain, the model's ``apply`` with its JAX front end) and the argmax, compile time
  reported apart, ``block_until_ready`` on every call;
* PyTorch: ``torch.fft.irfft`` of the masked coefficients and the transformers forward in eager
  mode under ``torch.no_grad()``, batched, ``torch.set_num_threads(os.cpu_count())``. The front
  end is included on both sides: for wav2vec2/HuBERT/WavLM the zero-mean unit-variance normalisation (in
  torch); for AST the Hugging Face feature extractor's Kaldi fbank, which is NumPy (reported apart
  in ``torch_frontend_s``, since torchaudio cannot be used here).

It prints the median time per batch, candidates/s for both, their ratio (jsuff / PyTorch) and the
share of candidates on which the two give the same label (a sanity check, not a parity test).

Usage::

    python -m benchmarks.candidates_vs_torch                       # wav2vec2/HuBERT/WavLM mini, AST tiny
    python -m benchmarks.candidates_vs_torch --models wav2vec2-small --batch 8 --seconds 2
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


def run(name: str, *, batch: int, seconds: float, repeats: int) -> dict[str, Any]:
    import torch

    from benchmarks import _common as C

    bm = C.build(name)
    t = int(seconds * C.SAMPLE_RATE)
    x, masks = C.candidates(seconds, batch)
    grid = masks.shape[1]

    # jsuff: the search's evaluation path, jitted
    compile_s, run_jsuff, _ = C.candidate_logits(bm.model, x, masks)
    jsuff_labels = np.asarray(run_jsuff()).argmax(-1)
    jsuff_s = C.median_time(run_jsuff, repeats)

    # PyTorch eager: irfft + front end + model
    torch.set_num_threads(os.cpu_count() or 1)
    z = torch.from_numpy(np.fft.rfft(x.astype(np.float64)).astype(np.complex64))
    tm = torch.from_numpy(masks)
    is_ast = name.startswith("ast")

    def torch_batch() -> tuple[np.ndarray, float]:
        with torch.no_grad():
            waves = torch.fft.irfft(z[None] * tm, n=t)
            front = 0.0
            if is_ast:  # HF's fbank is NumPy: time it apart
                front, inputs = C.timed(lambda: bm.torch_inputs(waves.numpy()))
            else:  # Wav2Vec2FeatureExtractor's normalisation, in torch
                mean = waves.mean(-1, keepdim=True)
                var = waves.var(-1, keepdim=True, unbiased=False)
                inputs = {"input_values": (waves - mean) / torch.sqrt(var + 1e-7)}
            return bm.torch_model(**inputs).logits.argmax(-1).numpy(), front

    torch_labels, _ = torch_batch()  # warm-up
    times, fronts = [], []
    for _ in range(repeats):
        s, (_, front) = C.timed(torch_batch)
        times.append(s)
        fronts.append(front)
    torch_s = float(np.median(times))
    return {
        "model": name,
        "batch": batch,
        "seconds": seconds,
        "grid": grid,
        "jsuff_compile_s": compile_s,
        "jsuff_batch_s": jsuff_s,
        "torch_batch_s": torch_s,
        "torch_frontend_s": float(np.median(fronts)),
        "jsuff_cand_per_s": batch / jsuff_s,
        "torch_cand_per_s": batch / torch_s,
        "ratio": torch_s / jsuff_s,
        "label_agreement": float((jsuff_labels == torch_labels).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks import _common as C

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="wav2vec2-mini,hubert-mini,wavlm-mini,ast-tiny", help=f"of {C.model_names()[1:]}")
    p.add_argument("--batch", type=int, default=16, help="candidates per call (both sides)")
    p.add_argument("--seconds", type=float, default=1.0, help="clip length (16 kHz)")
    p.add_argument("--repeats", type=int, default=3, help="timed batches (median kept)")
    p.add_argument("--out", type=Path, default=C.RESULTS / "candidates_vs_torch.json")
    args = p.parse_args(argv)
    if "bandpower" in args.models.split(","):
        p.error("bandpower has no PyTorch counterpart")
    C.run_models(
        args.models, lambda name: run(name, batch=args.batch, seconds=args.seconds, repeats=args.repeats),
        ["model", "batch", "seconds", "jsuff_cand_per_s", "torch_cand_per_s", "ratio", "torch_frontend_s",
         "jsuff_compile_s", "label_agreement"],
        args.out, vars(args),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
