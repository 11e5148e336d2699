"""The ``sith-lens`` command (also ``python -m sith_lens.cli``)."""

from __future__ import annotations

import argparse
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    from sith_lens.adapters.loading import load_clip

    model = load_clip(args.model)
    print(model.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sith-lens",
        description="Interpretability tools for CLIP-family vision-language models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="load a model and print its hooked towers: layers, heads, hooks, parameters")
    info.add_argument(
        "--model",
        default="random:tiny",
        help="'random:tiny', a Hugging Face id or a local CLIPModel directory (default: random:tiny)",
    )
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, NotImplementedError) as err:
        print(f"sith-lens: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
