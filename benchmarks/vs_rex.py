"""jsuff against ReX 0.4.1 (pip ``rex-xai``) on the same model, clips and settings: only the search differs.

Both tools explain the model's top-1 label on each clip over the 1-D rfft grid of the whole clip
(a 1 s, 16 kHz clip has 8001 bins), with the same ``iters``, ``tree_depth`` and ``min_box_size``
(extraction ``chunk_size`` = ``min_box_size``, both tools' default), mask value 0:

* **ReX** runs in its own "spectral" mode, programmatically: a ``CausalArgs``, a ``Data`` holding
  the clip's rfft coefficients (a complex tensor ``[1, G]``), ReX's ``predict_target``,
  ``calculate_responsibility`` and ``Explanation.extract`` (global strategy). Its prediction
  function receives ReX's masked coefficients, synthesises them with jsuff's ``RFFT`` domain and
  classifies them with a jitted call of the same ``apply(params, waveforms)`` that jsuff searches
  with (compiled before timing; batches padded to a fixed size so nothing recompiles); it counts
  the model queries. ReX queries its 1-D search one mutant per call; its extraction is given
  ``batch_size`` = ``--rex-batch`` (64).
* **jsuff** runs :func:`jsuff.explain` with its default settings (batched search in rounds that
  stop once the top set is stable, global insertion with a growing scan) except the minimality
  certificate, which is off as ReX has none; ``--max-batch`` overrides its candidates per call.
  Timed warm; the first call's compile time is reported apart.

Models: the random-weight benchmark models and the trained ones (``zoo:ast``, ``zoo:wav2vec2``,
``zoo:melcnn``, ``zoo:rawnet2``, whose clips come from the zoo's test split, and the real speech
detectors ``speech:<name>`` on the speech study's clips); every clip's label differs from the
empty signal's (else the explanation is trivial).

Reported per clip: wall time per explanation, model queries, sufficient-set size (fraction of
bins), and cross-verification: ReX's set checked by jsuff (its synthesis through jsuff's
``predict`` keeps the target), jsuff's set checked ReX-style (ReX's ``_apply_to_data`` and the
same prediction function). Also the size of the set that jsuff's extraction takes from *ReX's*
map: ReX's 1-D extraction reveals a prefix ``[0, c)`` of the spectrum for each ranked bin ``c``
(SPEC §3 quirks), so its own sets are low-pass prefixes; the third size separates that from the
quality of its responsibility map. ReX's map style is its programmatic default (multiplicative).

Set-up: ``bash benchmarks/setup_rex.sh`` installs rex-xai 0.4.1 and the packages its import path
needs into ``benchmarks/.rex/`` with ``--no-deps`` (ReX pins numpy 1.26; jax needs 2.x). This
script puts that folder on ``sys.path``; nothing in ReX had to be patched for numpy 2 on this path.

Usage::

    bash benchmarks/setup_rex.sh
    python -m benchmarks.vs_rex                                   # ast-tiny and bandpower, 3 clips
    python -m benchmarks.vs_rex --models wav2vec2-mini --iters 5 --clips 2
    python -m benchmarks.vs_rex --seconds 5 --models bandpower    # a longer clip (40001 bins)
    python -m benchmarks.vs_rex --models zoo:ast,zoo:wav2vec2,zoo:melcnn,zoo:rawnet2 --clips 8
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REX_DIR = Path(__file__).resolve().parent / ".rex"


def _import_rex() -> Any:
    """Put the ReX overlay on the path and import the parts used here (quietly)."""
    if not (REX_DIR / "rex_xai").is_dir():
        sys.exit(f"ReX is not installed at {REX_DIR}: run `bash benchmarks/setup_rex.sh` first")
    os.environ.setdefault("TQDM_DISABLE", "1")  # ReX's extraction opens a progress bar per call
    sys.path.insert(0, str(REX_DIR))
    import rex_xai.explanation.rex as rex
    from rex_xai.explanation.explanation import Explanation
    from rex_xai.input.config import CausalArgs
    from rex_xai.input.input_data import Data
    from rex_xai.mutants.mutant import _apply_to_data
    from rex_xai.responsibility.prediction import Prediction

    logging.getLogger("ReX").setLevel(logging.ERROR)
    return argparse.Namespace(
        rex=rex, Explanation=Explanation, CausalArgs=CausalArgs, Data=Data, apply_to_data=_apply_to_data,
        Prediction=Prediction,
    )


class RexPrediction:
    """ReX's prediction function over masked rfft coefficients ``[..., G]`` (complex torch tensors).

    Synthesises with jsuff's ``RFFT`` domain and classifies with one jitted call of the model per
    ReX call, padded to a fixed batch (1 or ``batch``) so that it compiles twice at most. Counts the
    real (unpadded) candidates in ``queries``.
    """

    def __init__(self, R: Any, apply_fn: Any, params: Any, num_samples: int, batch: int) -> None:
        import jax
        import jax.numpy as jnp

        from jsuff.domains import RFFT, Coefficients
        from jsuff.evaluate import class_logits

        self.R, self.params, self.batch, self.queries = R, params, batch, 0
        grid = RFFT().grid_shape(num_samples)
        keep = jnp.ones(grid, bool)

        def probs(p: Any, values: jax.Array) -> jax.Array:
            coeffs = Coefficients(values, jnp.zeros_like(values), num_samples)
            waves = jax.vmap(RFFT().synthesize, in_axes=(0, None))(coeffs, keep)
            return jax.nn.softmax(class_logits(apply_fn(p, waves)), axis=-1)

        self._probs = jax.jit(probs)
        for b in (1, batch):  # compile before anything is timed
            jax.block_until_ready(self._probs(params, jnp.zeros((b, *grid), jnp.complex64)))

    def __call__(self, mutants: Any, target: Any = None, raw: bool = False) -> Any:
        import jax.numpy as jnp

        z = mutants.detach().cpu().numpy()
        z = z.reshape(-1, z.shape[-1])
        n = z.shape[0]
        if n == 1:  # the search: one mutant per call
            p = np.asarray(self._probs(self.params, jnp.asarray(z)))
        else:  # extraction: padded to whole batches of ``batch`` (the padding is discarded)
            padded = np.zeros((-(-n // self.batch) * self.batch, z.shape[1]), np.complex64)
            padded[:n] = z
            p = np.concatenate([
                np.asarray(self._probs(self.params, jnp.asarray(padded[i : i + self.batch])))
                for i in range(0, len(padded), self.batch)
            ])[:n]
        self.queries += n
        if raw:
            import torch

            return torch.from_numpy(p)
        out = []
        for row in p:
            pred = self.R.Prediction(int(row.argmax()), float(row.max()))
            if target is not None:
                pred.target = target.classification
                pred.target_confidence = float(row[target.classification])
            out.append(pred)
        return out


def run_rex(R: Any, predict: RexPrediction, x: np.ndarray, *, iters: int, depth: int, min_box: int,
            batch: int, seed: int) -> dict[str, Any]:
    """One ReX explanation of clip ``x``: timings, queries, its mask and map."""
    import torch

    args = R.CausalArgs()
    args.mode = "spectral"
    args.iters, args.tree_depth, args.min_box_size = iters, depth, min_box
    args.chunk_size = min_box
    args.batch_size = batch
    args.mask_value = 0
    args.seed = seed
    args.progress_bar = False
    coeffs = torch.from_numpy(np.fft.rfft(x.astype(np.float64)).astype(np.complex64)[None])  # [1, G]
    predict.queries = 0
    start = time.perf_counter()
    data = R.Data(coeffs, tuple(coeffs.shape), "cpu", mode="spectral", process=True)
    data.set_mask_value(args.mask_value)
    data.target = R.rex.predict_target(data, args, predict)
    maps, stats = R.rex.calculate_responsibility(data, args, predict)
    mid = time.perf_counter()
    search_queries = predict.queries
    exp = R.Explanation(maps, predict, data, args, stats)
    exp.extract()
    end = time.perf_counter()
    mask = exp.sufficiency_mask.detach().cpu().numpy().reshape(-1).astype(bool)
    return {
        "target": int(data.target.classification),
        "seconds": end - start,
        "search_seconds": mid - start,
        "queries": predict.queries,
        "search_queries": search_queries,
        "mask": mask,
        "map": np.asarray(exp.target_map.detach().cpu().numpy(), np.float64).reshape(-1),
        "data": data,
    }


def rex_check(R: Any, predict: RexPrediction, data: Any, mask: np.ndarray) -> bool:
    """ReX-style sufficiency of ``mask``: ReX's masking and prediction function keep its target."""
    import torch

    p = predict(R.apply_to_data(torch.from_numpy(mask), data))[0]
    # ReX's minimum_confidence_threshold is 0 here (as jsuff's tau): the label decides
    return p.classification == data.target.classification


def main(argv: list[str] | None = None) -> int:
    from benchmarks import _common as C

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="ast-tiny,bandpower", help=f"comma-separated, of {C.model_names()}")
    p.add_argument("--clips", type=int, default=3, help="clips per model (median reported)")
    p.add_argument("--seconds", type=float, default=1.0, help="clip length (16 kHz)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--min-box", type=int, default=10)
    p.add_argument("--max-batch", type=int, default=None, help="jsuff candidates per call (default: jsuff's)")
    p.add_argument("--rex-batch", type=int, default=64, help="ReX's extraction batch_size")
    p.add_argument("--out", type=Path, default=C.RESULTS / "vs_rex.json")
    args = p.parse_args(argv)

    import jax

    from jsuff import ExtractConfig, SearchConfig, explain
    from jsuff.domains import RFFT
    from jsuff.extract import extract, for_clips

    R = _import_rex()
    from importlib.metadata import version

    env = {**C.environment(), "rex_xai": version("rex-xai"), "rex_numpy_note": "numpy from the venv (2.x)"}
    C.print_env(env)
    batch = {} if args.max_batch is None else {"max_batch": args.max_batch}
    config = SearchConfig(iters=args.iters, tree_depth=args.depth, min_box_size=args.min_box, **batch)
    ext = ExtractConfig(certify=False)  # ReX has no certificate
    rows, summary = [], []
    for name in args.models.split(","):
        bm = C.build(name)
        apply_fn, params = bm.model.apply, bm.model.params
        clips = _pick_clips(bm, args.clips, args.seconds)
        t = clips[0][1].size
        predict = RexPrediction(R, apply_fn, params, t, args.rex_batch)
        compile_s = None
        for i, (seed, x, _) in enumerate(clips):
            key = jax.random.key(seed)
            def run() -> Any:  # quiet: no progress lines or cost calibration inside the timing
                return explain(apply_fn, params, x, config=config, extract=ext, key=key, quiet=True)

            if compile_s is None:  # first call compiles every stage of the search and extraction
                compile_s, _ = C.timed(run)
            js_s, e = C.timed(run)
            r = run_rex(R, predict, x, iters=args.iters, depth=args.depth, min_box=args.min_box,
                        batch=args.rex_batch, seed=seed)
            coeffs = RFFT().analyze(jax.numpy.asarray(x))
            rex_wave = RFFT().synthesize(coeffs, jax.numpy.asarray(r["mask"]))[None]
            rex_ok_by_jsuff = C.top1(apply_fn, params, rex_wave)[0] == e.target
            problem, _ = for_clips(apply_fn, params, RFFT(), x, dataclasses.replace(ext, chunk_size=args.min_box),
                                   targets=r["target"], **batch)
            (from_rex_map,) = extract(problem, r["map"][None])
            row = {
                "model": name, "clip": clips[i][2], "clip_seed": seed, "seconds_audio": t / bm.model.sample_rate,
                "bins": e.mask.size,
                "iters": args.iters, "depth": args.depth, "min_box": args.min_box,
                "target_jsuff": e.target, "target_rex": r["target"],
                "jsuff_s": js_s, "rex_s": r["seconds"], "speedup": r["seconds"] / js_s,
                "rex_search_s": r["search_seconds"], "jsuff_compile_s": compile_s - js_s if i == 0 else None,
                "jsuff_queries": e.queries, "jsuff_search_queries": e.search_queries,
                "jsuff_iterations": getattr(e, "search_iterations", None),
                "rex_queries": r["queries"], "rex_search_queries": r["search_queries"],
                "jsuff_size": e.size_fraction, "rex_size": float(r["mask"].mean()),
                "rex_map_jsuff_extract_size": float(from_rex_map.mask.mean()) if from_rex_map.found else 1.0,
                "jsuff_verified_by_jsuff": e.verified,
                "jsuff_verified_by_rex": rex_check(R, predict, r["data"], e.mask),
                "rex_verified_by_jsuff": rex_ok_by_jsuff,
                "rex_ms_per_query": 1e3 * r["seconds"] / r["queries"], "jsuff_ms_per_query": 1e3 * js_s / e.queries,
            }
            rows.append(row)
            C.print_row(row)
        mine = [r for r in rows if r["model"] == name]
        summary.append({
            "model": name, "clips": len(mine),
            "jsuff_s_median": statistics.median(r["jsuff_s"] for r in mine),
            "rex_s_median": statistics.median(r["rex_s"] for r in mine),
            "speedup_median": statistics.median(r["speedup"] for r in mine),
            "speedup_of_medians": statistics.median(r["rex_s"] for r in mine)
            / statistics.median(r["jsuff_s"] for r in mine),
            "jsuff_compile_s": mine[0]["jsuff_compile_s"],
            "jsuff_queries_median": statistics.median(r["jsuff_queries"] for r in mine),
            "jsuff_search_queries_median": statistics.median(r["jsuff_search_queries"] for r in mine),
            "rex_queries_median": statistics.median(r["rex_queries"] for r in mine),
            "jsuff_size_median": statistics.median(r["jsuff_size"] for r in mine),
            "rex_size_median": statistics.median(r["rex_size"] for r in mine),
            "rex_map_jsuff_extract_size_median": statistics.median(r["rex_map_jsuff_extract_size"] for r in mine),
            "jsuff_verified": sum(r["jsuff_verified_by_jsuff"] for r in mine) / len(mine),
            "cross_verified": all(r["jsuff_verified_by_rex"] and r["rex_verified_by_jsuff"] for r in mine),
        })
    print("\nsummary (medians over clips)")
    C.print_table(summary, list(summary[0]))
    C.write_results(args.out, env, rows, summary=summary, settings=vars(args) | {"out": str(args.out)})
    return 0


def _pick_clips(bm: Any, n: int, seconds: float) -> list[tuple[int, np.ndarray, str]]:
    """``(seed, clip, name)`` of ``n`` clips whose label differs from the empty signal's (else the
    answer is trivial): the zoo's test split for zoo models, the speech study's clips for the
    speech detectors (at most its speech clips), else ``_common.clip(seed)`` for seeds 0, 1, ...."""
    from benchmarks import _common as C

    if bm.name.startswith("zoo:"):
        return [(i, x, name) for i, (name, x) in enumerate(C.zoo_clips(bm.model, n))]
    if bm.name.startswith("speech:"):
        return [(i, x, name) for i, (name, x) in enumerate(C.speech_clips(bm.model, n))]
    named = [(f"clip_{seed}", C.clip(seed, seconds)) for seed in range(200)]
    return [(int(name.removeprefix("clip_")), x, name) for name, x in C._not_trivial(bm.model, named, n)]


if __name__ == "__main__":
    sys.exit(main())
