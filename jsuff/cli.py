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


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a PyTorch checkpoint into a jsuff model directory")
    p.add_argument("src", help="checkpoint file (.pth/.bin/.safetensors) or Hugging Face folder")
    p.add_argument("--arch", help="architecture (see `jsuff models`); detected when omitted")
    p.add_argument("--config", help="the checkpoint's model config JSON, where the family needs one")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args: argparse.Namespace) -> int:
    from converters import convert

    model = convert(args.src, args.out, arch=args.arch, config=args.config, overwrite=args.overwrite)
    print(f"{args.out}: {model.arch}, {model.sample_rate} Hz, labels {', '.join(model.labels)}")
    return 0


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_models, _add_convert]


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

    expected: tuple[type[BaseException], ...] = (ModelError,)
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
