"""The ``jsuff`` command line: thin, it parses, calls the library and prints.

Each subcommand is a pair ``_add_<name>(subparsers)`` / ``_cmd_<name>(args) -> int`` listed in
``_COMMANDS``. Errors that jsuff raises for bad input (``ModelError``, ``AudioError`` ...) are
printed as one line on stderr with exit code 2; anything else is a bug and keeps its traceback.
``predict`` reports a bad file per file and goes on with the others (exit code 1 if any failed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["build_parser", "main", "UsageError"]


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the supported architectures and converters")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from jsuff.models import architectures

    archs = architectures()
    try:
        from converters import supported
    except ImportError:  # the torch extra is optional
        convs = {}
    else:
        convs = supported()
    width = max([len(n) for n in archs] + [len("architecture")])
    print(f"{'architecture':<{width}}  {'convert':<7}  description")
    for name, a in archs.items():
        mark = "yes" if name in convs else "no"
        print(f"{name:<{width}}  {mark:<7}  {a.description}")
    print(f"\nconvert: yes = `jsuff convert SRC --arch NAME` turns its PyTorch checkpoints into a jsuff model")
    return 0


def _add_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="run a transferability study from a TOML config")
    p.add_argument("config", help="study TOML file")
    p.add_argument("--out", help="output directory (default: the config's 'out')")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    p.add_argument("--quiet", action="store_true",
                   help="no progress: by default a bar on a terminal, else a line with done/total and an ETA "
                        "at most every 30 s (through logging when it is set up for INFO, else on stderr)")
    p.add_argument("--devices", type=int, help="use the first N devices of each process (default: all)")
    p.add_argument("--no-report", action="store_true", help="skip writing the HTML report")
    d = p.add_argument_group(
        "several processes (docs/distributed.md)",
        "Run one study with N processes, on one host or many: start every process with the same config, "
        "--out (a folder all of them see) and --coordinator, each with its own --process-id. Units are "
        "shared out; process 0 reads the data and writes the tables and the report.",
    )
    d.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address for jax.distributed")
    d.add_argument("--num-processes", type=_positive, metavar="N", help="how many processes run the study")
    d.add_argument("--process-id", type=_count, metavar="I", help="this process's index, 0..N-1")
    d.add_argument("--distributed", action="store_true",
                   help="join the processes that jax.distributed detects by itself (SLURM, Open MPI, a TPU pod slice)")
    d.add_argument("--heartbeat-timeout", type=_positive, default=100, metavar="S",
                   help="seconds after which a silent process counts as dead and the others stop (default: %(default)s)")
    p.set_defaults(func=_cmd_study)


def _cmd_study(args: argparse.Namespace) -> int:
    import dataclasses

    from jsuff.app.distributed import SINGLE, connect

    processes = SINGLE
    if args.distributed or args.coordinator or args.num_processes is not None or args.process_id is not None:
        # first: jax.distributed must be joined before JAX is used
        processes = connect(args.coordinator, args.num_processes, args.process_id,
                            heartbeat_timeout=args.heartbeat_timeout)

    from jsuff.app.report import ONE_MODEL_NOTE, summary_text, write_report
    from jsuff.app.study import load_config, run_study

    cfg = load_config(args.config)
    if args.devices is not None:
        cfg = dataclasses.replace(cfg, devices=args.devices)
    out = args.out or cfg.out
    if len(cfg.models) < 2 and processes.leader:
        print(f"jsuff: note: {ONE_MODEL_NOTE.format(name=cfg.models[0].name)}", file=sys.stderr)
    run_study(cfg, out, resume=args.resume, quiet=True if args.quiet else None, processes=processes)
    if not processes.leader:  # process 0 prints the summary and writes the report
        print(f"process {processes.index} of {processes.count}: done")
        return 0
    print(summary_text(out))
    if not args.no_report:
        print(f"report: {write_report(out)}")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    from jsuff.app.report import MAX_CLIPS_PER_MODEL

    p = sub.add_parser(
        "report",
        help="write the HTML report of a finished study (DIR/report/index.html)",
        description="Write DIR/report/: index.html (settings, versions, tables with every column defined, "
        "figures, every clip, and per model the first --max-clips clips to listen to), a page per model "
        "and per clip, the figures and the WAV files. The folder is self-contained: copy or zip it whole.",
    )
    p.add_argument("study_dir", metavar="DIR", help="a study's output directory (the --out of `jsuff study`)")
    p.add_argument(
        "--max-clips", type=_count, default=MAX_CLIPS_PER_MODEL, metavar="N",
        help="clips per model shown, with a figure each, on the index page (default: %(default)s); "
        "every clip is still listed and playable on the model's and the clip's pages",
    )
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from jsuff.app.report import write_report

    print(write_report(args.study_dir, max_clips=args.max_clips))
    return 0


def _count(text: str) -> int:
    """An argparse type: an integer >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {v}")
    return v


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    v = _count(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {v}")
    return v


def _fraction(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {v:g}")
    return v


# What a grid cell is called in each domain, for the summary line.
_CELLS = {"rfft": "bins", "stft": "tiles", "time": "segments"}


class UsageError(ValueError):
    """A command line that cannot be carried out as given; the message says why and what to do."""


def _add_explain(sub: argparse._SubParsersAction) -> None:
    from jsuff.domains import DOMAINS
    from jsuff.extract import MODES, ExtractConfig
    from jsuff.search import SearchConfig

    search, extract = SearchConfig(), ExtractConfig()
    p = sub.add_parser(
        "explain",
        help="explain one model's label on one clip (summary, figure, WAV, JSON)",
        description="Find a minimal sufficient signal for MODEL's label on AUDIO and write it to --out: "
        "sufficient.wav, explanation.png, summary.json and arrays.npz. Prints a short summary (--json: "
        "the summary as JSON). The options are named as the keys of a study's TOML config.",
    )
    p.add_argument("model", help="a jsuff model directory (see `jsuff convert`)")
    p.add_argument("audio", help="an audio file")
    p.add_argument("--out", metavar="DIR", help="output folder: new or empty (else see --overwrite); required "
                   "unless --estimate")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out, replacing the explanation files there")
    p.add_argument("--domain", default="rfft", choices=list(DOMAINS),
                   help="the grid the signal is made of, with its default settings (default: %(default)s)")
    p.add_argument("--iters", type=_positive, default=search.iters, metavar="N",
                   help="random partition trees of the search (default: %(default)s)")
    p.add_argument("--tree-depth", "--depth", dest="tree_depth", type=_count, default=search.tree_depth, metavar="N",
                   help="deepest box depth refined (default: %(default)s)")
    p.add_argument("--min-box-size", "--min-box", dest="min_box_size", type=_positive, default=search.min_box_size,
                   metavar="N", help="a box with fewer cells is not split (default: %(default)s)")
    p.add_argument("--round-iters", dest="round_iters", type=_positive, default=search.round_iters, metavar="N",
                   help="iterations per round; after each round a clip may stop (default: %(default)s)")
    p.add_argument("--stop-cells", dest="stop_cells", type=_positive, default=search.stop_cells, metavar="N",
                   help="the top set the stopping rule watches: this many top cells (default: %(default)s)")
    p.add_argument("--stop-overlap", dest="stop_overlap", type=_fraction, default=search.stop_overlap, metavar="F",
                   help="stop once this share of the top set was already the top set with half the rounds, "
                        "in (0, 1] (default: %(default)s)")
    p.add_argument("--no-stop", action="store_true",
                   help="walk all --iters iterations (ReX's behaviour; --round-iters and --stop-* are ignored)")
    p.add_argument("--mode", default=extract.mode, choices=list(MODES),
                   help="which set to extract from the responsibility map (default: %(default)s)")
    p.add_argument("--target", metavar="LABEL",
                   help="the label to explain, by name or index (default: the model's label on the clip)")
    p.add_argument("--seed", type=_count, default=0, metavar="N", help="seed of the search (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of text")
    p.add_argument("--estimate", action="store_true",
                   help="only say what the explanation would cost (grid, model queries, time from a short "
                        "calibration) and stop")
    p.add_argument("--quiet", action="store_true",
                   help="no progress: by default the cost before the run, then lines with done/total and an ETA "
                        "(through logging when it is set up for INFO, else on stderr)")
    p.set_defaults(func=_cmd_explain)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(
            f"--out {out} is not empty; pass --overwrite to write the explanation into it (its explanation "
            "files are replaced, other files are left alone) or choose a new folder"
        )


def _target_index(target: str | None, labels: Sequence[str]) -> int | None:
    if target is None:
        return None
    if target in labels:
        return list(labels).index(target)
    if target.isdigit() and int(target) < len(labels):
        return int(target)
    raise UsageError(f"--target {target!r} is not one of the model's labels: {', '.join(labels)} (or 0..{len(labels) - 1})")


def _cli_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    """``warnings.showwarning`` for the CLI: one line on stderr."""
    print(f"jsuff: warning: {message}", file=sys.stderr, flush=True)


def _cmd_explain(args: argparse.Namespace) -> int:
    import dataclasses
    import warnings

    import numpy as np

    from jsuff._files import atomic_write, write_json
    from jsuff.app.report import clip_figure
    from jsuff.audio import load_audio
    from jsuff.cost import CostWarning, estimate_cost
    from jsuff.domains import get_domain
    from jsuff.explain import explain
    from jsuff.models import load_model
    from jsuff.search import SearchConfig

    if args.out is None and not args.estimate:
        raise UsageError("--out DIR is required (or --estimate, to see the cost and stop)")
    out = Path(args.out) if args.out is not None else None
    if out is not None and not args.estimate:
        _check_out(out, args.overwrite)  # before minutes of work
    model = load_model(args.model)
    target = _target_index(args.target, model.labels)
    x, _ = load_audio(args.audio, model.sample_rate)
    x = model.prepare(x)  # what explain(model, x) explains; the figure shows it
    domain = get_domain(args.domain)
    cfg = SearchConfig(iters=args.iters, tree_depth=args.tree_depth, min_box_size=args.min_box_size,
                       round_iters=None if args.no_stop else args.round_iters, stop_cells=args.stop_cells,
                       stop_overlap=None if args.no_stop else args.stop_overlap)
    with warnings.catch_warnings():
        warnings.simplefilter("always", CostWarning)
        warnings.showwarning = _cli_warning  # a grid far larger than usual: said before the run
        if args.estimate:
            cost = estimate_cost(model, x, domain=domain, config=cfg, extract=args.mode)
            print(json.dumps(dataclasses.asdict(cost), indent=2) if args.json else cost.describe())
            return 0
        e = explain(model, x, domain=domain, config=cfg, extract=args.mode, key=args.seed, target=target,
                    quiet=True if args.quiet else False)
    e.save(out, model.sample_rate)
    label = model.labels[int(e.target)]
    png = clip_figure(x, e.mask, e.responsibility, model.sample_rate, f"{Path(args.audio).name} -> {label}", domain=domain)
    atomic_write(out / "explanation.png", lambda f: f.write(png))
    summary = {
        **json.loads((out / "summary.json").read_text()),
        "label": label,
        "audio": str(Path(args.audio).resolve()),
        "model": str(Path(args.model).resolve()),
    }
    write_json(out / "summary.json", summary)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    top = label if target is None else model.labels[int(np.argmax(np.asarray(model(x[None]))[0]))]
    print(_explain_text(summary, model.labels, top, Path(args.audio).name, out))
    return 0


def _explain_text(s: dict, labels: Sequence[str], top: str, audio: str, out: Path) -> str:
    """The few lines ``jsuff explain`` prints about a summary (``--json`` prints it all)."""
    cells = math.prod(s["grid_shape"])
    unit = _CELLS.get(s["settings"]["domain"]["name"], "cells")
    said = f"{audio}: the model says {top!r}"
    lines = [said + (f", explaining {s['label']!r}" if s["label"] != top else "")
             + f" (its confidence {s['target_confidence']:.3f})"]
    if s["empty_is_target"]:
        lines.append(f"the empty signal (everything removed) already gets {s['label']!r}: the sufficient set is "
                     "empty (a finding about the model, not an error)")
    elif not s["found"]:
        lines.append(f"no {s['mode']} set was found; the files hold the whole clip")
    else:
        k = len(s["removable_chunks"])
        minimal = {True: "yes (certified)", False: f"no ({k} removable chunk{'s' * (k != 1)})", None: "not checked"}
        lines.append(
            f"{s['mode']} signal: {s['kept_cells']} of {cells} {unit} ({100 * s['size_fraction']:.2f}%), "
            f"{100 * s['energy_fraction']:.1f}% of the energy"
        )
        lines.append(f"verified: {'yes' if s['verified'] else 'no'}; 1-minimal: {minimal[s['minimal']]}; "
                     f"removing it changes the label: {'yes' if s['necessary'] else 'no'}")
    lines.append(f"model calls: {s['queries']}")
    lines.append(f"wrote {out}/: sufficient.wav, explanation.png, summary.json (--json prints it), arrays.npz")
    return "\n".join(lines)


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a PyTorch checkpoint to a jsuff model directory")
    p.add_argument(
        "src",
        help="checkpoint file, Hugging Face folder, or pkg:NAME[/VARIANT] for weights shipped in an "
        "installed package (pkg:silero-vad, pkg:javad/tiny, pkg:pulsevad, pkg:crepe/full ...)",
    )
    p.add_argument("--out", required=True, help="model directory to write (atomically)")
    p.add_argument("--arch", help="architecture, when it cannot be recognised from src (see `jsuff models`)")
    p.add_argument("--config", help="JSON config file for the architecture; with a Hugging Face config.json, SRC may "
                   "be a bare state dict (.pth/.bin/.safetensors) instead of a model folder")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args: argparse.Namespace) -> int:
    from converters import convert

    if Path(args.out).exists() and not args.overwrite:  # before the conversion's work, in the CLI's words
        raise UsageError(f"{args.out} already exists (pass --overwrite to replace it)")
    model = convert(args.src, args.out, arch=args.arch, config=args.config, overwrite=args.overwrite)
    print(f"wrote {args.out}: {model.arch}, {model.num_classes} labels, {model.sample_rate} Hz")
    return 0


# Clips of one length are classified together, at most this many per call (bounds memory).
_PREDICT_BATCH = 16


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="label audio files with a jsuff model directory",
        description="Label each audio file. A file that cannot be read is reported on stderr (with "
        "--json, as an entry with an 'error'); the others are still labelled, and the exit code "
        "is 1 when any file failed.",
    )
    p.add_argument("model", type=Path, help="a jsuff model directory (see `jsuff convert`)")
    p.add_argument("audio", type=Path, nargs="+", help="audio files")
    p.add_argument("--json", action="store_true", help="print a JSON list of {file, label, logits} or {file, error}")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from jsuff.audio import AudioError, load_audio
    from jsuff.models import load_model
    from jsuff.models.base import ModelError

    model = load_model(args.model)  # a bad directory fails before any audio is read
    clips: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for i, path in enumerate(args.audio):
        try:
            x, sr = load_audio(path, model.sample_rate)
            clips[i] = model.prepare(x, sr)
        except AudioError as e:  # its message names the file
            errors[i] = str(e)
        except ModelError as e:
            errors[i] = f"{path}: {e}"
    by_length: dict[int, list[int]] = {}
    for i, clip in clips.items():
        by_length.setdefault(clip.shape[-1], []).append(i)
    logits: dict[int, np.ndarray] = {}
    for indices in by_length.values():
        for start in range(0, len(indices), _PREDICT_BATCH):
            chunk = indices[start : start + _PREDICT_BATCH]
            out = np.asarray(model(np.stack([clips[i] for i in chunk])))
            logits.update(zip(chunk, out))
    results = [
        {"file": str(path), "error": errors[i]}
        if i in errors
        else {"file": str(path), "label": model.labels[int(np.argmax(logits[i]))], "logits": logits[i].tolist()}
        for i, path in enumerate(args.audio)
    ]
    if args.json:
        print(json.dumps(results, indent=2))
    for r in results:
        if "error" in r:
            print(f"jsuff: error: {r['error']}", file=sys.stderr)
        elif not args.json:
            print(f"{r['file']}\t{r['label']}\t" + " ".join(f"{v:.4f}" for v in r["logits"]))
    if errors:
        print(f"jsuff: {len(errors)} of {len(results)} files could not be labelled", file=sys.stderr)
        return 1
    return 0





def _add_zoo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoo", help="the built-in model zoo: list it, or train it reproducibly")
    zsub = p.add_subparsers(dest="zoo_command", required=True)
    t = zsub.add_parser("train", help="train the zoo members whose architectures are registered")
    t.add_argument("--only", nargs="+", metavar="NAME", help="train only these members")
    t.add_argument("--out", metavar="DIR", help="zoo directory (default: jsuff/app/zoo/models)")
    t.set_defaults(func=_cmd_zoo_train)
    ls = zsub.add_parser("list", help="the members, whether each can be built, recorded accuracy")
    ls.add_argument("--dir", metavar="DIR", help="zoo directory (default: jsuff/app/zoo/models)")
    ls.set_defaults(func=_cmd_zoo_list)
    d = zsub.add_parser("data", help="write the zoo's generated dataset as WAVs (GTZAN layout)")
    d.add_argument("out", metavar="DIR", help="folder for <class>/<class>.NNNNN.wav and manifest.csv")
    d.set_defaults(func=_cmd_zoo_data)


def _cmd_zoo_train(args: argparse.Namespace) -> int:
    from jsuff.app.zoo import train_zoo

    result = train_zoo(args.out, only=args.only, log=print)
    print(f"trained {len(result['trained'])}, skipped {len(result['skipped'])}")
    return 0


def _cmd_zoo_data(args: argparse.Namespace) -> int:
    from jsuff.app.zoo import write_dataset, zoo_dataset

    ds = zoo_dataset()
    root = write_dataset(args.out, ds)
    print(f"wrote {len(ds)} clips of {', '.join(ds.class_names)} to {root}")
    return 0


def _cmd_zoo_list(args: argparse.Namespace) -> int:
    from jsuff.models import architectures
    from jsuff.app.zoo import ZOO, ZooError, zoo_accuracy

    try:
        acc = zoo_accuracy(args.dir)
    except ZooError:
        acc = {}
    archs = architectures()
    for m in ZOO:
        state = "ready  " if m.arch in archs else "no arch"
        score = f"test acc {acc[m.name]:.3f}" if m.name in acc else "untrained"
        print(f"{m.name:<10}  {m.arch:<10}  {state}  {score:<16}  {m.note}")
    return 0
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the built-in study on the trained zoo and write its report")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="demo directory (default: runs/demo)")
    p.add_argument("--clips", type=int, metavar="N", help="held-out clips to explain (default: 10)")
    p.add_argument("--quick", action="store_true", help="a tiny smoke-test study (5 clips, shallow search)")
    p.add_argument("--fresh", action="store_true", help="discard an earlier demo study instead of resuming it")
    p.add_argument("--real", action="store_true",
                   help="the real-weights study instead (same as `jsuff realdemo`; --out defaults to runs/realdemo)")
    p.add_argument("--music", action="store_true",
                   help="the real-music genre study instead (same as `jsuff music`; --out defaults to runs/music)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    import dataclasses

    if args.real:
        out = "runs/realdemo" if args.out == "runs/demo" else args.out
        return _cmd_realdemo(argparse.Namespace(out=out, fresh=args.fresh, quiet=False, no_report=False))
    if args.music:
        out = "runs/music" if args.out == "runs/demo" else args.out
        return _cmd_music(build_parser().parse_args(["music", "--out", out, *(["--fresh"] if args.fresh else []),
                                                     *(["--quick"] if args.quick else [])]))
    from jsuff.app.demo import FULL, QUICK, run_demo

    settings = QUICK if args.quick else FULL
    if args.clips is not None:
        settings = dataclasses.replace(settings, clips=args.clips)
    print(run_demo(args.out, settings, fresh=args.fresh, log=print).text)
    return 0


def _add_realdemo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "realdemo",
        help="the real-weights study: five real speech detectors and crepe tiny/full on clips made offline",
    )
    p.add_argument("--out", default="runs/realdemo", help="output directory (default: runs/realdemo)")
    p.add_argument("--fresh", action="store_true", help="do not reuse an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    p.add_argument("--no-report", action="store_true", help="skip writing the HTML reports")
    p.set_defaults(func=_cmd_realdemo)


def _cmd_realdemo(args: argparse.Namespace) -> int:
    from jsuff.app.realdemo import RealDemoError, run_real_demo

    try:
        result = run_real_demo(args.out, resume=not args.fresh, report=not args.no_report,
                               quiet=True if args.quiet else None)
    except RealDemoError as e:
        print(f"jsuff realdemo: {e}", file=sys.stderr)
        return 2
    for task, text in result.summaries.items():
        print(f"== {task} ==\n{text}")
        if task in result.reports:
            print(f"report: {result.reports[task]}")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    return 0


def _add_music(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "music",
        help="the real-music genre study: the four musicnn taggers on excerpts of installed Debian soundtracks",
        description="Convert the four musicnn taggers (pkg:musicnn/...), cut excerpts from the installed "
        "soundtrack packages, write OUT/study.toml with the five-class genre view, run the study into "
        "OUT/study (resumable) and write its report. `make music` installs the packages first when root.",
    )
    p.add_argument("--out", default="runs/music", help="output directory (default: runs/music)")
    p.add_argument("--quick", action="store_true", help="a smoke test: 2 excerpts per genre, a shallow search")
    p.add_argument("--per-genre", type=_positive, metavar="N", help="excerpts per genre (default: 10)")
    p.add_argument("--iters", type=_positive, metavar="N", help="search iterations (default: 4)")
    p.add_argument("--depth", type=_count, metavar="N", help="search tree depth (default: 7)")
    p.add_argument("--chunk", type=_positive, metavar="N", help="rfft bins per extraction step (default: 100)")
    p.add_argument("--fresh", action="store_true", help="rebuild the excerpts and start the study over")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    p.add_argument("--no-report", action="store_true", help="skip writing the HTML report")
    p.set_defaults(func=_cmd_music)


def _cmd_music(args: argparse.Namespace) -> int:
    import dataclasses

    from jsuff.app.music import FULL, QUICK, MusicStudyError, run_music_study
    from jsuff.app.musicdata import MusicDataError

    settings = QUICK if args.quick else FULL
    given = {"per_genre": args.per_genre, "iters": args.iters, "tree_depth": args.depth, "chunk_size": args.chunk}
    settings = dataclasses.replace(settings, **{k: v for k, v in given.items() if v is not None})
    try:
        result = run_music_study(args.out, settings, fresh=args.fresh, report=not args.no_report,
                                 quiet=True if args.quiet else None, log=None if args.quiet else print)
    except (MusicStudyError, MusicDataError) as e:
        print(f"jsuff music: {e}", file=sys.stderr)
        return 2
    print(result.text)
    return 0


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_models,
    _add_convert,
    _add_predict,
    _add_explain,
    _add_study,
    _add_report,
    _add_zoo,
    _add_demo,
    _add_realdemo,
    _add_music,
]


class _Version(argparse.Action):
    """``--version``: one unwrapped line (argparse's own action wraps it at the terminal width)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: object):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from jsuff.app.versions import versions_line

        print(versions_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jsuff", description="Minimal sufficient signals for audio classifiers."
    )
    parser.add_argument("--version", action=_Version, help="print the versions of jsuff, JAX, Flax and Python, then exit")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from jsuff.models.base import ModelError

    from jsuff.app.config import StudyError

    from jsuff._files import WriteError

    expected: tuple[type[BaseException], ...] = (ModelError, StudyError, WriteError, UsageError)
    try:
        from jsuff.audio import AudioError

        expected += (AudioError,)
    except ImportError:
        pass
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except expected as e:
        print(f"jsuff: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
