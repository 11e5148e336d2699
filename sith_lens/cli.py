"""The ``sith-lens`` command (also ``python -m sith_lens.cli``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sith_lens.cli_args import (
    PURSUIT_METHODS, ArgumentParser, finite_float, host, int_at_least, layer_selection, output_folder, png_path, port, share,
    template,
)
from sith_lens.defaults import COMPARE, DEMO, EDIT, EXPLAIN, default_vocabulary
from sith_lens.limits import MAX_MULTIPLIER


def _cmd_info(args: argparse.Namespace) -> int:
    from sith_lens.adapters.loading import load_clip

    model = load_clip(args.model)
    print(model.summary())
    return 0


def _cmd_toyworld(args: argparse.Namespace) -> int:
    from PIL import Image

    from sith_lens.atomic import atomic_path

    from sith_lens.toyworld import ToyWorld
    from sith_lens.toyworld.render import contact_sheet

    batch = ToyWorld(seed=args.seed).batch(args.index, args.n)
    with atomic_path(os.path.abspath(args.out), suffix=".png") as tmp:
        Image.fromarray(contact_sheet(batch.images, columns=args.columns)).save(tmp)
    columns = args.columns
    for i, text in enumerate(batch.texts):
        print(f"[row {i // columns}, col {i % columns}] {text}")
    print(f"wrote {args.out}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from sith_lens.adapters.loading import load_clip
    from sith_lens.atomic import atomic_directory
    from sith_lens.concepts import ConceptDictionary
    from sith_lens.report import write_html_report
    from sith_lens.model import parse_layers
    from sith_lens.sith import explain_heads
    from sith_lens.vocabularies import load_vocabulary

    out = _output_folder(args.out, EXPLAIN_OUTPUTS)
    vocab = args.vocab or default_vocabulary(args.model)
    words = load_vocabulary(vocab)  # a missing or empty vocabulary file fails before the model loads
    model = load_clip(args.model)
    layers = parse_layers(args.layers, model.vision.cfg.n_layers)
    templates = [args.template] if args.template else None
    concepts = ConceptDictionary.from_vocab(model, words, templates=templates)
    result = explain_heads(model, concepts, layers, k=args.k, lam=args.lam, method=args.method,
                           side=args.side, centering=args.centering)
    with atomic_directory(out) as tmp:  # sith.json and report.html land together, or not at all
        result.to_json(tmp / "sith.json")
        write_html_report(result, tmp / "report.html", top_vectors=args.report_vectors)
    print(f"{result.model_name}: {len(layers)} layers x {result.n_heads} heads, {result.method} k={result.k} "
          f"lambda={result.lam}, {len(concepts):,} concepts ({vocab}), centring {result.centering}")
    print(f"mean fidelity {float(result.fidelity.mean()):.3f}, mean joint-space cosine {float(result.cosine.mean()):.3f}")
    for layer in layers:
        for h in range(result.n_heads):
            top = result.head(layer, h).vectors[0]
            text = ", ".join(f"{c} {w:.2f}" for c, w in top.concepts)
            print(f"  L{layer:<2d} H{h:<2d} sv0 (sigma {top.singular_value:.2f}): {text}")
    print(f"wrote {out / 'sith.json'} and {out / 'report.html'}")
    return 0


#: What `explain` writes into its output folder.
EXPLAIN_OUTPUTS = ("sith.json", "report.html")


def _output_folder(path: str, ours: tuple[str, ...]) -> Path:
    """``path`` as a folder this command may replace as a whole: new, or holding only ``ours``."""
    out = Path(path)
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.name not in ours)
        if others:
            raise ValueError(f"--out {out} holds other files ({others[:3]}), which rewriting it would remove; "
                             "choose a new folder")
    return out


def _explanation(model, args, layers, result):
    """A SITH result for ``layers``: ``result`` (read from ``--result``, checked to cover them) or computed."""
    from sith_lens.concepts import ConceptDictionary
    from sith_lens.sith import explain_heads

    if result is not None:
        missing = sorted(set(layers) - set(result.layers))
        if missing:
            raise ValueError(f"--result {args.result} does not cover layers {missing}; explain them or change --layers")
        return result, None
    concepts = ConceptDictionary.from_vocab(model, args.vocab or default_vocabulary(args.model))
    return explain_heads(model, concepts, layers, k=args.k, lam=args.lam), concepts


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _cmd_edit(args: argparse.Namespace) -> int:
    from sith_lens.adapters.loading import load_clip
    from sith_lens.edit import class_multipliers, edit_heads, identity_multipliers, query_multipliers
    from sith_lens.model import parse_layers
    from sith_lens.result import SITHResult

    suppress, amplify, classes = _split(args.suppress), _split(args.amplify), _split(args.boost_classes)
    if not suppress and not amplify and not classes:
        raise ValueError("nothing to edit: pass --suppress red,blue, --amplify striped and/or --boost-classes a,b")
    if classes and (suppress or amplify):
        raise ValueError("--boost-classes sets a multiplier on every singular vector; use it without --suppress/--amplify")
    if classes and args.result:
        raise ValueError("--boost-classes needs the concept dictionary: leave out --result")
    saved = SITHResult.from_json(args.result) if args.result else None  # a bad file fails before the model loads
    model = load_clip(args.model)
    layers = parse_layers(args.layers, model.vision.cfg.n_layers)
    result, concepts = _explanation(model, args, layers, saved)
    m = identity_multipliers(result)
    if classes:
        m = class_multipliers(model, result, concepts, classes, layers=layers)
        print(f"task multipliers for {classes}: {float(m.min()):.2f}..{float(m.max()):.2f}, "
              f"{int((m > 1).sum())} boosted, {int((m < 1).sum())} damped")
    m = query_multipliers(result, suppress, amplify, factor=args.factor, threshold=args.threshold, layers=layers, base=m)
    changed = m != 1
    if not changed.any():
        print(f"sith-lens: note: no singular vector puts {args.threshold} of its explanation on {suppress + amplify}; "
              "the written model equals the input (lower --threshold, or check `sith-lens explain`)", file=sys.stderr)
    edited = edit_heads(model, result, m)
    out = edited.save_pretrained(args.out)
    for p, layer in enumerate(result.layers):
        if changed[p].any():
            heads = ", ".join(f"H{h} x{int(changed[p, h].sum())}" for h in range(result.n_heads) if changed[p, h].any())
            print(f"  L{layer}: {heads}")
    what = f"boost classes {classes}" if classes else (
        f"suppress {suppress or '-'}, amplify {amplify or '-'} x{args.factor}, threshold {args.threshold}")
    print(f"{int(changed.sum())} singular vectors in {int(changed.any(-1).sum())} heads edited ({what})")
    print(f"wrote {out} (load it with sith_lens.load_clip({str(out)!r}) or CLIPModel.from_pretrained)")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from sith_lens.adapters.loading import load_clip
    from sith_lens.compare import check_same_shape, compare
    from sith_lens.concepts import ConceptDictionary
    from sith_lens.model import parse_layers

    if args.out and Path(args.out).is_dir():
        raise ValueError(f"--out must name a JSON file, but {args.out} is a folder")
    base, finetuned = load_clip(args.base), load_clip(args.finetuned)
    check_same_shape(base, finetuned)  # before the dictionary: a mismatch is the error to report
    layers = parse_layers(args.layers, base.vision.cfg.n_layers)
    concepts = ConceptDictionary.from_vocab(finetuned, args.vocab or default_vocabulary(args.base))
    cmp = compare(base, finetuned, concepts, layers, top=args.top, delta_vectors=args.delta_vectors, k=args.k)
    print(f"{'layer':>5} {'mean angle':>11} {'max angle':>10} {'|log2 ratio|':>13} {'rel. change':>12}")
    for row in cmp.summary():
        print(f"{row['layer']:>5} {row['mean_angle_deg']:>10.2f}\u00b0 {row['max_angle_deg']:>9.2f}\u00b0 "
              f"{row['mean_abs_log2_sv_ratio']:>13.3f} {row['mean_relative_change']:>12.3f}")
    print("heads that changed most, and what their update writes (sv0 of delta W_VO):")
    for layer, head, change in cmp.heads_by_change(args.show):
        top = cmp.delta.head(layer, head).vectors[0]
        text = ", ".join(f"{c} {w:.2f}" for c, w in top.concepts) or "(empty)"
        print(f"  L{layer:<2d} H{head:<2d} change {change:.3f}: {text}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        cmp.to_json(out)
        print(f"wrote {out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from sith_lens.demo import Workbench, launch

    wb = Workbench(args.model, vocab=args.vocab, sae=args.sae, lucid_data=args.lucid_data, finetuned=args.finetuned)
    print(f"sith-lens demo: serving {wb.spec} on {args.host} (the address follows; Ctrl+C stops it)")
    launch(wb, host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="sith-lens",
        description="Interpretability tools for CLIP-family vision-language models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="load a model and print its hooked towers: layers, heads, hooks, parameters")
    info.add_argument(
        "--model",
        default=DEMO.model,
        help="'toy' (the shipped toy CLIP), 'random:tiny', a Hugging Face id or a local CLIPModel "
        "directory (default: %(default)s)",
    )
    info.set_defaults(func=_cmd_info)
    ex = sub.add_parser(
        "explain", help="SITH: explain every head's singular vectors with concepts; writes JSON + an HTML report"
    )
    ex.add_argument("--model", default=DEMO.model, help="model spec as for `info` (default: %(default)s)")
    ex.add_argument("--layers", type=layer_selection, default=EXPLAIN.layers,
                    help="'all', a slice like '-4:', or a list like '0,3,-1' (default: %(default)s)")
    ex.add_argument("--k", type=int_at_least(1), default=EXPLAIN.k, help="concepts per singular vector (default: %(default)s)")
    ex.add_argument("--lam", type=finite_float(0), default=EXPLAIN.lam, help="COMP coherence weight (default: %(default)s)")
    ex.add_argument("--method", default=EXPLAIN.method, choices=PURSUIT_METHODS, metavar="METHOD",
                    help="the pursuit, one of %(choices)s (default: %(default)s)")
    ex.add_argument("--vocab", default=None,
                    help="'toy', 'english', or a text file with one concept per line "
                    "(default: toy for the toy model, english otherwise)")
    ex.add_argument("--template", type=template, default=None, help="optional prompt template with {}, e.g. 'a photo of {}.'")
    ex.add_argument("--side", default=EXPLAIN.side, choices=["right", "left"],
                    help="right: what heads write; left: what they read (default: %(default)s)")
    ex.add_argument("--centering", default=EXPLAIN.centering, choices=["auto", "image", "none"],
                    help="image-side centring of the read-out (default %(default)s: the model's saved image mean if any)")
    ex.add_argument("--report-vectors", type=int_at_least(1), default=EXPLAIN.report_vectors,
                    help="singular vectors per head in the HTML report (default: %(default)s)")
    ex.add_argument("--out", type=output_folder, default=EXPLAIN.out, help="output folder (default: %(default)s)")
    ex.set_defaults(func=_cmd_explain)
    ed = sub.add_parser("edit", help="SITH edit: suppress or amplify concepts in the heads' weights; writes a checkpoint")
    ed.add_argument("--model", default=DEMO.model, help="model spec as for `info` (default: %(default)s)")
    ed.add_argument("--suppress", default=None, help="comma-separated concepts whose singular vectors are zeroed")
    ed.add_argument("--amplify", default=None, help="comma-separated concepts whose singular vectors are scaled")
    ed.add_argument("--factor", type=finite_float(-MAX_MULTIPLIER, MAX_MULTIPLIER), default=EDIT.factor,
                    help="multiplier for --amplify (-1 flips; default: %(default)s)")
    ed.add_argument("--boost-classes", default=None,
                    help="comma-separated class names: boost task-relevant singular vectors, damp the others "
                    "(m = max(0.8, relevance + 0.3), sith_spec 5.4)")
    ed.add_argument("--threshold", type=share, default=EDIT.threshold,
                    help="edit a singular vector when this share of its explanation is on the concepts (default: %(default)s)")
    ed.add_argument("--layers", type=layer_selection, default=EDIT.layers,
                    help="layers to edit, as for `explain` (default: %(default)s)")
    ed.add_argument("--result", default=None, help="a sith.json from `explain` to reuse instead of explaining again")
    ed.add_argument("--vocab", default=None, help="concept vocabulary as for `explain`")
    ed.add_argument("--k", type=int_at_least(1), default=EXPLAIN.k, help="concepts per singular vector (default: %(default)s)")
    ed.add_argument("--lam", type=finite_float(0), default=EXPLAIN.lam, help="COMP coherence weight (default: %(default)s)")
    ed.add_argument("--out", type=output_folder, required=True, help="checkpoint folder to write")
    ed.set_defaults(func=_cmd_edit)
    cp = sub.add_parser("compare", help="base vs fine-tuned: basis stability, singular-value ratios, SITH of the update")
    cp.add_argument("base", help="base model spec (e.g. toy)")
    cp.add_argument("finetuned", help="fine-tuned model spec (a checkpoint folder)")
    cp.add_argument("--layers", type=layer_selection, default=COMPARE.layers, help="layers, as for `explain` (default: %(default)s)")
    cp.add_argument("--top", type=int_at_least(1), default=COMPARE.top,
                    help="leading singular vectors compared per head (default: %(default)s)")
    cp.add_argument("--delta-vectors", type=int_at_least(1), default=COMPARE.delta_vectors,
                    help="singular vectors of the update explained per head (default: %(default)s)")
    cp.add_argument("--k", type=int_at_least(1), default=COMPARE.k, help="concepts per singular vector (default: %(default)s)")
    cp.add_argument("--vocab", default=None, help="concept vocabulary (default: toy for the toy model, else english)")
    cp.add_argument("--show", type=int_at_least(1), default=COMPARE.show, help="heads to print (default: %(default)s)")
    cp.add_argument("--out", default=None, help="JSON file to write the full comparison to")
    cp.set_defaults(func=_cmd_compare)
    toy = sub.add_parser("toyworld", help="render sample toy-world scenes to a PNG and print their captions")
    toy.add_argument("--out", type=png_path, default="toyworld.png", help="PNG file to write (default: toyworld.png)")
    toy.add_argument("--n", type=int_at_least(1), default=16, help="number of scenes (default: 16)")
    toy.add_argument("--columns", type=int_at_least(1), default=8, help="scenes per row (default: 8)")
    toy.add_argument("--seed", type=int_at_least(0), default=0, help="world seed (default: 0)")
    toy.add_argument("--index", type=int_at_least(0), default=0, help="batch index within the seed (default: 0)")
    toy.set_defaults(func=_cmd_toyworld)
    demo = sub.add_parser("demo", help="the Gradio explorer: Heads, Edit, LUCID and Compare tabs in the browser")
    demo.add_argument("--model", default=DEMO.model, help="model spec as for `info` (default: %(default)s)")
    demo.add_argument("--host", type=host, default=DEMO.host, help="address to serve on (default: %(default)s, this machine only)")
    demo.add_argument("--port", type=port, default=None, help="port (default: Gradio's 7860, or the next free one)")
    demo.add_argument("--vocab", default=None, help="concept vocabulary as for `explain`")
    demo.add_argument("--sae", default=None,
                      help="a LUCID SAE folder (cfg.json + sae_weights.safetensors); default: the packaged toy "
                      "release for the toy model")
    demo.add_argument("--lucid-data", default=None,
                      help="captions JSONL whose images label the SAE's latents (needed for models other than toy)")
    demo.add_argument("--finetuned", default=None, help="a fine-tuned version of --model to offer in the Compare tab")
    demo.set_defaults(func=_cmd_demo)
    from sith_lens.lucid.commands import add_lucid_parser

    add_lucid_parser(sub)
    return parser


#: Options whose values may start with "-" ("--layers -4:"); argparse would read those as flags.
NEGATIVE_VALUE_OPTIONS = ("--layers",)


def _attach_negative_values(argv: list[str]) -> list[str]:
    """``["--layers", "-4:"]`` -> ``["--layers=-4:"]`` so that argparse accepts slices from the end."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in NEGATIVE_VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1][:2].lstrip("-")[:1].isdigit():
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Run ``sith-lens`` with ``argv``; returns the exit status. Bad input ends in one
    ``sith-lens: error:`` line (status 2); ``SITH_LENS_DEBUG=1`` shows the traceback instead.

    Example:
        >>> main(["info", "--model", "random:tiny"])
        HookedCLIP 'random:tiny' (family clip, joint space d_proj=32)
        ...
        0
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(_attach_negative_values(list(argv)))
    except SystemExit as exit:  # --help, or a bad flag (already reported on one line)
        return exit.code if isinstance(exit.code, int) else 2
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("sith-lens: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except Exception as err:
        if os.environ.get("SITH_LENS_DEBUG"):
            raise
        print(f"sith-lens: error: {_one_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, EXPECTED_ERRORS) else 1


#: Errors that report bad input (status 2); anything else is a bug in sith-lens (status 1).
EXPECTED_ERRORS = (ValueError, OSError, NotImplementedError, ImportError)


def _one_line(err: BaseException) -> str:
    """The error's message on one line; an unexpected error names its type and the way to see more."""
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{text}: {err.filename}"
    if not isinstance(err, EXPECTED_ERRORS):
        text = (f"{type(err).__name__}: {text} (unexpected; rerun with SITH_LENS_DEBUG=1 for the traceback "
                "and report it)")
    return text


if __name__ == "__main__":
    sys.exit(main())
