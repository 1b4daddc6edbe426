"""The ``jsuff`` command line: thin, it parses, calls the library and prints.

Each subcommand is a pair ``_add_<name>(subparsers)`` / ``_cmd_<name>(args) -> int`` listed in
``_COMMANDS``. Errors that jsuff raises for bad input (``ModelError``, ``AudioError`` ...) are
printed as one line on stderr with exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


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
    width = max([len(n) for n in archs] + [4])
    for name, a in archs.items():
        mark = "convert" if name in convs else "       "
        print(f"{name:<{width}}  {mark}  {a.description}")
    return 0


def _add_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="run a transferability study from a TOML config")
    p.add_argument("config", help="study TOML file")
    p.add_argument("--out", help="output directory (default: the config's 'out')")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    p.add_argument("--devices", type=int, help="use the first N devices (default: all)")
    p.add_argument("--no-report", action="store_true", help="skip writing the HTML report")
    p.set_defaults(func=_cmd_study)


def _cmd_study(args: argparse.Namespace) -> int:
    import dataclasses

    from jsuff.report import summary_text, write_report
    from jsuff.study import load_config, run_study

    cfg = load_config(args.config)
    if args.devices is not None:
        cfg = dataclasses.replace(cfg, devices=args.devices)
    out = args.out or cfg.out
    run_study(cfg, out, resume=args.resume, quiet=True if args.quiet else None)
    print(summary_text(out))
    if not args.no_report:
        print(f"report: {write_report(out)}")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write figures, WAVs and an HTML page for a study directory")
    p.add_argument("study_dir")
    p.add_argument("--max-clips", type=int, default=6, help="clips to show per model")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from jsuff.report import write_report

    print(write_report(args.study_dir, max_clips=args.max_clips))
    return 0


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="explain one model's label on one clip (figure, WAV, JSON)")
    p.add_argument("model", help="a jsuff model directory")
    p.add_argument("audio", help="an audio file")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--domain", default="rfft", choices=["rfft", "stft", "time"])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--min-box", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_explain)


def _cmd_explain(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import jax

    from jsuff.audio import load_audio
    from jsuff.domains import get_domain
    from jsuff.explain import explain
    from jsuff.models import load_model
    from jsuff.report import clip_figure
    from jsuff.search import SearchConfig

    model = load_model(args.model)
    x, _ = load_audio(args.audio, model.sample_rate)
    x = model.prepare(x)
    cfg = SearchConfig(iters=args.iters, tree_depth=args.depth, min_box_size=args.min_box)
    e = explain(model.apply, model.params, x, domain=get_domain(args.domain), config=cfg, key=jax.random.key(args.seed))
    out = Path(args.out)
    e.save(out, model.sample_rate)
    label = model.labels[int(e.target)]
    png = clip_figure(x, e.mask, e.responsibility, model.sample_rate, f"{Path(args.audio).name} -> {label}")
    (out / "explanation.png").write_bytes(png)
    summary = e.summary()
    summary["label"] = label
    print(json.dumps(summary, indent=2, default=str))
    return 0


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_models, _add_study, _add_report, _add_explain]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jsuff", description="Minimal sufficient signals for audio classifiers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from jsuff.models.base import ModelError

    from jsuff.study import StudyError

    expected: tuple[type[BaseException], ...] = (ModelError, StudyError)
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
