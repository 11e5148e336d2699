"""The ``sith-lens`` command (also ``python -m sith_lens.cli``)."""

from __future__ import annotations

import argparse
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    from sith_lens.adapters.loading import load_clip

    model = load_clip(args.model)
    print(model.summary())
    return 0


def _cmd_toyworld(args: argparse.Namespace) -> int:
    import os
    import tempfile

    from PIL import Image

    from sith_lens.toyworld import ToyWorld
    from sith_lens.toyworld.render import contact_sheet

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if not args.out.lower().endswith(".png"):
        raise ValueError(f"--out must name a .png file, got {args.out!r}")
    batch = ToyWorld(seed=args.seed).batch(args.index, args.n)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise ValueError(f"the folder of --out does not exist: {out_dir}; create it first")
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=out_dir)
    os.close(fd)
    try:
        Image.fromarray(contact_sheet(batch.images, columns=args.columns)).save(tmp)
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    columns = args.columns
    for i, text in enumerate(batch.texts):
        print(f"[row {i // columns}, col {i % columns}] {text}")
    print(f"wrote {args.out}")
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
        default="toy",
        help="'toy' (the shipped toy CLIP), 'random:tiny', a Hugging Face id or a local CLIPModel "
        "directory (default: toy)",
    )
    info.set_defaults(func=_cmd_info)
    toy = sub.add_parser("toyworld", help="render sample toy-world scenes to a PNG and print their captions")
    toy.add_argument("--out", default="toyworld.png", help="PNG file to write (default: toyworld.png)")
    toy.add_argument("--n", type=int, default=16, help="number of scenes (default: 16)")
    toy.add_argument("--columns", type=int, default=8, help="scenes per row (default: 8)")
    toy.add_argument("--seed", type=int, default=0, help="world seed (default: 0)")
    toy.add_argument("--index", type=int, default=0, help="batch index within the seed (default: 0)")
    toy.set_defaults(func=_cmd_toyworld)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, NotImplementedError) as err:
        print(f"sith-lens: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
