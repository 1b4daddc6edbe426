"""Queries per explanation, old settings against new, on trained models: the zoo and real speech detectors.

Issue 20 asks for fewer model queries at equal quality: extraction scans that grow instead of asking
256 prefixes at once, and a search that stops once its top set is stable. This script measures
both against the settings before it, over the same clips and keys:

* **settings** (``--settings``, compared in the order given):

  - ``old``: the defaults before issue 20, spelled out: one round of all iterations
    (``round_iters=None``, ``stop_overlap=None``), 64 candidates per call, and scans whose first
    call is their widest (``prefixes_first_call=256``). The code is today's, so its calls are no
    longer padded (``benchmarks/README.md`` also times the commit before the change);
  - ``default``: the installed jsuff's defaults (the new ones on this branch; on an older checkout,
    that checkout's, which is how the README times the code before the change);
  - ``rounds``, ``scans``, ``batch``: ``old`` with one of the three changes: the search in rounds
    that stop (at 64 candidates per call), the growing extraction scans, or the platform's
    candidates per call (14 on a CPU);
  - any of them with search fields changed, ``NAME:field=value:...`` (``default:round_iters=1``,
    ``default:stop_overlap=0.6:stop_cells=10``; ``None`` for none): how the defaults were chosen.

* **models** (``--models``): ``zoo:ast``, ``zoo:wav2vec2``, ``zoo:melcnn``, ``zoo:rawnet2`` (clips
  from the zoo's test split whose label differs from the empty signal's) and the realdemo's speech
  detectors ``speech:silero_jit`` ... (the speech study's clips that they call speech). Any model of
  ``benchmarks/_common.py`` works.

* **per explanation** (:func:`jsuff.explain`, one clip at a time, the settings alternating clip by
  clip so that the shared machine's load falls on all of them): model queries (all, the search's,
  the extraction's), the search's iterations, seconds (warm; compile time apart), verified,
  set size (fraction of bins), 1-minimal (the certificate). For the first ``--count`` clips also
  the rows the model really evaluated, padding included (a counting wrapper around the model).

* **the speech study** (``--study``): the realdemo's speech study (:func:`jsuff.app.study.run_study`,
  5 detectors x 12 clips) once per setting, with its own search settings (``iters=1``,
  ``tree_depth=4``, ``min_box_size=16``) and, with ``--study-search default``, with the default
  search; prints each transfer matrix with its Clopper-Pearson intervals and whether every cell
  of one setting lies in the other's interval.

Usage::

    python -m benchmarks.queries --models zoo:ast,zoo:wav2vec2,zoo:melcnn,zoo:rawnet2 --clips 12
    python -m benchmarks.queries --models speech:silero_jit,speech:javad_tiny --clips 6
    python -m benchmarks.queries --models none --study --study-search default
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: Setting name -> (SearchConfig overrides, ExtractConfig overrides). ``default``: none.
_OLD_SEARCH = {"round_iters": None, "stop_overlap": None, "max_batch": 64}
_OLD_EXTRACT = {"prefixes_first_call": 256}
PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "old": (_OLD_SEARCH, _OLD_EXTRACT),
    "default": ({}, {}),
    "rounds": ({**_OLD_SEARCH, "round_iters": 2, "stop_overlap": 0.7}, _OLD_EXTRACT),
    "scans": (_OLD_SEARCH, {}),
    "batch": ({**_OLD_SEARCH, "max_batch": None}, _OLD_EXTRACT),
}


def configs(name: str, **search: Any) -> tuple[Any, Any]:
    """The ``(SearchConfig, ExtractConfig)`` of a preset, ``search`` applied on top; an error names
    the fields this jsuff lacks (an older checkout has only ``default``)."""
    from jsuff import ExtractConfig, SearchConfig

    base, *changes = name.split(":")
    s_over, e_over = PRESETS[base]
    s_over = {**s_over, **dict(_field(c) for c in changes)}
    out = []
    for cls, over in ((SearchConfig, {**s_over, **search}), (ExtractConfig, e_over)):
        missing = sorted(set(over) - {f.name for f in dataclasses.fields(cls)})
        if missing:
            sys.exit(f"setting {name!r} needs {cls.__name__} fields this jsuff lacks: {missing}")
        out.append(cls(**over))
    return out[0], out[1]


def _field(change: str) -> tuple[str, Any]:
    """``"field=value"`` as ``(field, value)``: an int, a float or ``None``."""
    key, _, text = change.partition("=")
    value: Any = None if text == "None" else float(text) if "." in text else int(text)
    return key, value


def _clips(bm: Any, n: int) -> list[tuple[str, np.ndarray]]:
    from benchmarks import _common as C

    if bm.name.startswith("speech:"):
        return C.speech_clips(bm.model, n)
    if bm.name.startswith("zoo:"):
        return C.zoo_clips(bm.model, n)
    return C._not_trivial(bm.model, [(f"clip_{s}", C.clip(s)) for s in range(200)], n)


def explain_rows(name: str, settings: list[str], n: int, count: int, key_offset: int = 0) -> list[dict[str, Any]]:
    """One row per (clip, setting) of model ``name``."""
    import jax

    from benchmarks import _common as C
    from jsuff import explain

    bm = C.build(name)
    clips = _clips(bm, n)
    cfgs = {s: configs(s) for s in settings}

    def run(apply_fn: Any, s: str, i: int) -> Any:
        search, ext = cfgs[s]
        return explain(apply_fn, bm.model.params, clips[i][1], config=search, extract=ext,
                       key=jax.random.key(key_offset + i), quiet=True)

    compile_s = {}
    for s in settings:  # compile every stage once per setting
        compile_s[s], _ = C.timed(lambda: run(bm.model.apply, s, 0))
    counted, counter = C.counting(bm.model.apply)
    rows = []
    for i, (clip, x) in enumerate(clips):
        for s in settings if i % 2 == 0 else settings[::-1]:  # alternate the order clip by clip
            seconds, e = C.timed(lambda: run(bm.model.apply, s, i))
            rows.append({
                "model": name, "clip": clip, "setting": s, "bins": int(e.mask.size), "seconds": seconds,
                "compile_s": compile_s[s] - seconds if i == 0 else None,
                "queries": e.queries, "search_queries": e.search_queries,
                "extract_queries": e.queries - e.search_queries - 3,  # less the clip, its empty and full signals
                "iterations": getattr(e, "search_iterations", None),
                "verified": bool(e.verified and e.found), "minimal": bool(e.minimal),
                "size": e.size_fraction, "cells": int(e.mask.sum()),
            })
            if i < count:
                counter[0] = 0
                again = run(counted, s, i)
                assert again.queries == e.queries  # the same explanation
                rows[-1]["rows_evaluated"] = counter[0]
            C.print_row(rows[-1])
    return rows


def summarise(rows: list[dict[str, Any]], settings: list[str]) -> list[dict[str, Any]]:
    """Per model and setting: medians and rates; against the first setting: ratios of medians."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        base = None
        for s in settings:
            mine = [r for r in rows if r["model"] == model and r["setting"] == s]
            med = {k: statistics.median(r[k] for r in mine) for k in
                   ("queries", "search_queries", "extract_queries", "seconds", "size", "cells")}
            counted = [r for r in mine if "rows_evaluated" in r]
            row = {
                "model": model, "setting": s, "clips": len(mine),
                **{f"{k}_median": v for k, v in med.items()},
                "iterations_median": statistics.median(r["iterations"] for r in mine)
                if all(r["iterations"] is not None for r in mine) else None,
                "verified_rate": sum(r["verified"] for r in mine) / len(mine),
                "minimal_rate": sum(r["minimal"] for r in mine) / len(mine),
                "rows_per_query": sum(r["rows_evaluated"] for r in counted) / sum(r["queries"] for r in counted)
                if counted else None,
                "compile_s": mine[0]["compile_s"],
            }
            if base is None:
                base = med
            else:
                row |= {f"{k}_ratio": med[k] / base[k] if base[k] else None for k in ("queries", "seconds", "size")}
            out.append(row)
    return out


def study(settings: list[str], search: str, out_root: Path) -> list[dict[str, Any]]:
    """The realdemo's speech study once per setting; the transfer matrices and whether they agree
    within their intervals."""
    import pandas as pd

    from benchmarks import _common as C
    from jsuff.app.realdemo import SPEECH_MODELS, convert_models
    from jsuff.app.config import config_to_dict
    from jsuff.app.study import config_from_dict, load_arrays, run_study
    from jsuff.app.tables import compute_tables

    manifest, rd = C.speech_task()
    paths = convert_models(list(SPEECH_MODELS.items()), C.RESULTS / "models")
    study_search = {"iters": rd.iters, "tree_depth": rd.tree_depth, "min_box_size": rd.min_box_size}
    frames, rows = {}, []
    for s in settings:
        search_cfg, ext = configs(s, **(study_search if search == "study" else {}))
        raw = {
            "task": "speech", "seed": rd.seed, "models": [str(p) for p in paths],
            "data": {"path": str(manifest), "duration": rd.speech_duration, "sample_rate": 16000},
            "clips_per_batch": rd.clips_per_batch, "n_boot": rd.n_boot,
        }
        cfg = config_from_dict(raw)
        cfg = dataclasses.replace(cfg, search=search_cfg, extract=ext)
        out = out_root / f"study_{search}_{s}"
        seconds, _ = C.timed(lambda: run_study(cfg, out, resume=False, quiet=True) if not out.exists()
                             else run_study(cfg, out, resume=True, quiet=True))
        arrays = load_arrays(out)
        pairs = compute_tables(arrays, cfg)["pairs"]
        frames[s] = pairs.set_index(["source", "target"])
        rows.append({"setting": s, "study_search": search, "seconds": seconds,
                     "mean_queries": float(arrays.queries.mean()), "verified": float(arrays.valid.mean()),
                     "config": config_to_dict(cfg)})
        print(f"\nspeech study, setting {s} ({search} search): {seconds:.0f} s, "
              f"mean queries {arrays.queries.mean():.0f}")
        print(pd.pivot_table(pairs, index="source", columns="target", values="rate").round(2).to_string())
    first = settings[0]
    for s in settings[1:]:
        a, b = frames[first], frames[s]
        inside = ((b["rate"] >= a["lo"]) & (b["rate"] <= a["hi"]) & (a["rate"] >= b["lo"]) & (a["rate"] <= b["hi"]))
        diff = (b["rate"] - a["rate"]).abs()
        print(f"\n{s} against {first}: {int(inside.sum())} of {len(inside)} cells each inside the other's "
              f"Clopper-Pearson interval; largest change {diff.max():.2f}; cells identical: {int((diff == 0).sum())}")
        rows.append({"setting": f"{s} vs {first}", "study_search": search, "cells_inside": int(inside.sum()),
                     "cells": int(len(inside)), "max_change": float(diff.max()), "identical": int((diff == 0).sum())})
    return rows


def main(argv: list[str] | None = None) -> int:
    from benchmarks import _common as C

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="zoo:ast,zoo:wav2vec2,zoo:melcnn,zoo:rawnet2",
                   help="comma-separated benchmark models, or 'none'")
    p.add_argument("--settings", default="old,default", help=f"comma-separated, of {sorted(PRESETS)}")
    p.add_argument("--clips", type=int, default=12, help="clips per model")
    p.add_argument("--count", type=int, default=2, help="clips per model whose evaluated rows are counted")
    p.add_argument("--key-offset", type=int, default=0,
                   help="clip i is explained with key(offset + i): another offset measures the keys' own spread")
    p.add_argument("--study", action="store_true", help="also run the speech study once per setting")
    p.add_argument("--study-search", choices=("study", "default"), default="study",
                   help="the study's own search settings (iters 1, depth 4, min box 16) or the default search")
    p.add_argument("--out", type=Path, default=C.RESULTS / "queries.json")
    args = p.parse_args(argv)
    settings = args.settings.split(",")
    for s in settings:
        if s.split(":")[0] not in PRESETS:
            p.error(f"unknown setting {s!r}; choose from {sorted(PRESETS)}")
    env = C.environment()
    C.print_env(env)
    rows: list[dict[str, Any]] = []
    if args.models != "none":
        for name in args.models.split(","):
            rows += explain_rows(name, settings, args.clips, args.count, args.key_offset)
    summary = summarise(rows, settings) if rows else []
    if summary:
        print("\nsummary (medians over clips; ratios against the first setting)")
        C.print_table(summary, list(dict.fromkeys(k for r in summary for k in r)))
    studies = study(settings, args.study_search, args.out.parent) if args.study else []
    env["loadavg_end"] = C.environment()["loadavg_1_5_15"]
    C.write_results(args.out, env, rows, summary=summary, studies=studies, settings=vars(args) | {"out": str(args.out)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
