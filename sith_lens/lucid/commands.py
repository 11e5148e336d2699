"""``sith-lens lucid ...``: collect paired activations and train a LUCID SAE from the command line."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from ..cli_args import finite_float, int_at_least, output_folder, torch_device, yes_no
from .defaults import DEFAULTS, JOINT, LucidRecipe

#: ``lucid train`` options that set a TrainingLucidSAEConfig loss setting, and what their values must be.
_LOSS_TYPES: dict[str, Any] = {
    "k_aux": int_at_least(1), "aux_loss_coefficient": finite_float(0), "ot_coefficient": finite_float(0),
    "ot_warm_up_steps": int_at_least(-1), "ot_eps": finite_float(0, low_open=True), "ot_iterations": int_at_least(1),
    "ot_patch_mass": finite_float(0, 1, low_open=True), "ot_context_weight": finite_float(0, 1),
    "ot_context_temperature": finite_float(0, low_open=True), "ot_grid_sigma": finite_float(0),
    "ot_negatives": int_at_least(0), "ot_nce_temperature": finite_float(0, low_open=True),
    "ot_cost_k": int_at_least(0), "ot_every": int_at_least(1), "ot_patch_saliency": finite_float(0, 1),
    "ot_relative_cost": yes_no,
}


def _option(p: argparse.ArgumentParser, name: str, type_: Any, *aliases: str) -> None:
    """``--name`` with the recipe's default and help."""
    default = getattr(DEFAULTS, name)
    p.add_argument(f"--{name.replace('_', '-')}", *aliases, type=type_, default=default,
                   help=f"{LucidRecipe.help(name)} (default: {default})")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="toy", help="model spec as for `sith-lens info` (default: toy)")
    _option(p, "toy_pairs", int_at_least(1))
    _option(p, "toy_seed", int_at_least(0))
    p.add_argument("--captions", default=None,
                   help='a JSONL file of {"image": path, "caption": text} lines: your own image-caption pairs')
    p.add_argument("--images", default=None, help="folder the --captions image paths are relative to "
                   "(default: the captions file's folder)")
    p.add_argument("--vision-hook", default=JOINT, help=f"vision hook to read (default: {JOINT}, the joint space)")
    p.add_argument("--text-hook", default=JOINT, help=f"text hook to read (default: {JOINT})")
    p.add_argument("--collect-batch-size", type=int_at_least(1), default=64, help="images per forward pass (default: 64)")


def _check_own_data(args: argparse.Namespace) -> None:
    """Refuse a model other than the toy CLIP without a captions file (the toy world is the toy's data)."""
    if args.model != "toy" and not args.captions:
        raise ValueError("a model other than the toy CLIP needs your own data: pass --captions FILE.jsonl")


def _collect(args: argparse.Namespace, use_cache: bool) -> Any:
    from sith_lens.adapters.loading import load_clip

    from .collect import cached, collect_folder_activations, collect_toy_activations

    _check_own_data(args)
    model = load_clip(args.model)
    hooks = dict(vision_hook=args.vision_hook, text_hook=args.text_hook)
    if args.captions:
        spec = {"captions": str(Path(args.captions).resolve()), "images": args.images, **hooks}
        return cached(model, spec, lambda: collect_folder_activations(
            model, args.captions, args.images, args.collect_batch_size, **hooks), use_cache)
    spec = {"toy_pairs": args.toy_pairs, "seed": args.toy_seed, **hooks}
    return cached(model, spec, lambda: collect_toy_activations(
        model, args.toy_pairs, args.toy_seed, args.collect_batch_size, **hooks), use_cache)


def _cmd_collect(args: argparse.Namespace) -> int:
    from sith_lens.adapters.loading import load_clip

    from .store import FolderSource, ToySource, check_store_settings, collect_store

    _check_own_data(args)
    check_store_settings(args.shard_images, args.collect_batch_size, args.dtype)
    source = FolderSource(args.captions, args.images) if args.captions else ToySource(args.toy_pairs, args.toy_seed)
    store = collect_store(load_clip(args.model), source, args.out, shard_images=args.shard_images, dtype=args.dtype,
                          batch_size=args.collect_batch_size, vision_hook=args.vision_hook, text_hook=args.text_hook)
    size = sum(s.entry["bytes"] for s in store.shards)
    print(f"collected {len(store)} pairs ({store.index['n_images']} images, {store.grid * store.grid} patches each, "
          f"width {store.d_in}, {store.index['spec']['dtype']}) in {len(store.shards)} shards, "
          f"{size / 2**20:.1f} MiB; wrote {args.out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .evaluate import reconstruction_report
    from .sae import train_lucid
    from .store import open_activations

    if args.resume and not (Path(args.resume) / "trainer_state.pt").is_file():
        raise ValueError(f"--resume {args.resume} is not a checkpoint folder (no trainer_state.pt); pass one of "
                         "OUT/checkpoints/* from a run with --checkpoints")
    acts = open_activations(args.acts, args.shuffle_shards) if args.acts else _collect(args, use_cache=True)
    train, holdout = acts.split(args.holdout) if args.holdout else (acts, None)
    cfg = training_config(args, acts.d_in, acts.metadata.get("model_name") or args.model)
    start = time.perf_counter()
    sae = train_lucid(train, cfg, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      out_dir=args.out, n_checkpoints=args.checkpoints, resume_from=args.resume,
                      dead_feature_window=args.dead_feature_window, device=args.device, progress=args.progress)
    seconds = time.perf_counter() - start
    summary: dict[str, Any] = {"steps": args.steps, "train_seconds": round(seconds, 1), "pairs": len(train),
                               "out": str(Path(args.out) / "final")}
    if os.environ.get("RANK", "0") != "0":  # under torchrun, the first process reports
        return 0
    if holdout is not None:
        with torch.no_grad():
            summary["holdout"] = reconstruction_report(sae.to("cpu"), holdout)
    print(json.dumps(summary, indent=2))
    return 0


def training_config(args: argparse.Namespace, d_in: int, model_name: str) -> Any:
    """The TrainingLucidSAEConfig that ``lucid train``'s options describe."""
    from .sae import TrainingLucidSAEConfig

    cfg = TrainingLucidSAEConfig(
        d_in=d_in, d_sae=args.d_sae, n_private_vision=args.n_private, n_private_text=args.n_private,
        k_shared=args.k_shared, k_private=args.k_private, **{name: getattr(args, name) for name in _LOSS_TYPES},
    )
    cfg.metadata["model_name"] = model_name
    return cfg


def _load_sae(spec: str) -> Any:
    from .sae import RELEASE, load_lucid

    if spec == RELEASE:
        from sae_lens import SAE

        return SAE.from_pretrained(RELEASE, "final")
    return load_lucid(spec)


def _cmd_label(args: argparse.Namespace) -> int:
    from collections import Counter

    from sith_lens.adapters.loading import load_clip

    from .interpret import label_latents

    sae = _load_sae(args.sae)
    acts = _collect(args, use_cache=True)
    report = label_latents(sae, acts, load_clip(args.model), threshold=args.threshold, min_purity=args.min_purity,
                           progress=True)
    report.to_json(args.out)
    labelled = [x for x in report.labels if x.label]
    print(f"{len(labelled)} of {len(report.labels)} shared latents labelled (purity >= {args.min_purity}); "
          f"categories: {dict(Counter(x.category for x in labelled).most_common())}")
    for x in sorted(labelled, key=lambda x: -x.purity * x.token_frequency)[: args.show]:
        print(f"  latent {x.latent:>5}  {x.label:<14} purity {x.purity:.2f}  {x.category:<9} cluster {x.cluster[:4]}")
    print(f"wrote {args.out}")
    return 0


def _cmd_ground(args: argparse.Namespace) -> int:
    import torch

    from sith_lens.adapters.loading import load_clip

    from .collect import caption_token_activations, image_patch_activations, token_strings
    from .interpret import slot_words, word_heatmap
    from .terms import FUNCTION_WORDS

    image = Path(args.image)
    if not image.is_file():
        raise FileNotFoundError(f"--image {image} is not a file; pass an image (PNG, JPEG...)")
    if not any(w.lower().strip(".,;:!?") not in FUNCTION_WORDS for w in args.caption.split()):
        raise ValueError(f"the caption {args.caption!r} has no content word to ground (only function words); "
                         "describe the image, e.g. 'a red circle'")
    sae = _load_sae(args.sae)
    model = load_clip(args.model)
    hooks = (sae.cfg.metadata.get("hook_name_vision") or JOINT, sae.cfg.metadata.get("hook_name_text") or JOINT)
    pixels = model.preprocess([str(image)])
    patches = image_patch_activations(model, pixels, hooks[0])[0]
    acts, ids, keep = caption_token_activations(model, [args.caption], hooks[1])
    pieces = token_strings(model.tokenizer, ids[0][keep[0]].tolist())
    words = slot_words(pieces)
    tokens = acts[0][keep[0]]
    wanted = [w.lower() for w in args.word] if args.word else sorted({w for w in words if w and w not in FUNCTION_WORDS})
    maps = {}
    for word in wanted:
        slots = [i for i, w in enumerate(words) if w == word]
        if not slots:
            raise ValueError(f"{word!r} is not a word of the caption; its words are {sorted(set(words))}")
        maps[word] = word_heatmap(sae, patches, tokens, slots).tolist()
    if not maps:
        raise ValueError(f"the caption {args.caption!r} has no content word to ground; pass --word WORD")
    from ..atomic import write_text_atomic

    write_text_atomic(args.out, json.dumps({"image": str(args.image), "caption": args.caption, "heatmaps": maps}))
    grid = len(next(iter(maps.values())))
    for word, heat in maps.items():
        peak = int(torch.tensor(heat).argmax())
        print(f"  {word:<12} peak at row {peak // grid}, column {peak % grid}")
    print(f"wrote {args.out} ({len(maps)} heat maps, {grid}x{grid} patches)")
    return 0


def add_lucid_parser(sub: Any) -> None:
    """Add ``lucid collect`` and ``lucid train`` to the ``sith-lens`` parser."""
    lucid = sub.add_parser("lucid", help="LUCID: a unified vision-language SAE (collect activations, train)")
    commands = lucid.add_subparsers(dest="lucid_command", required=True)
    col = commands.add_parser("collect", help="collect paired patch and token activations to a folder")
    _add_data_options(col)
    col.add_argument("--out", type=output_folder, required=True,
                     help="folder of the sharded store; run the same command again to resume a stopped collection")
    col.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                     help="dtype of the stored activations (default: float32; float16 halves the disk)")
    col.add_argument("--shard-images", type=int_at_least(1), default=4096,
                     help="images per shard, a multiple of --collect-batch-size (default: 4096)")
    col.set_defaults(func=_cmd_collect)
    tr = commands.add_parser("train", help="train a LUCID SAE; writes OUT/final (SAELens format) and checkpoints")
    _add_data_options(tr)
    tr.add_argument("--acts", default=None, help="a store from `lucid collect`, read a batch at a time "
                    "(default: collect in memory, cached)")
    tr.add_argument("--shuffle-shards", type=int_at_least(0), default=0,
                    help="with --acts: shuffle within runs of this many shards instead of over all pairs "
                         "(0, the default: over all pairs, as in memory)")
    for name, type_ in (("d_sae", int_at_least(1)), ("n_private", int_at_least(0)), ("k_shared", int_at_least(1)),
                        ("k_private", int_at_least(0))):
        _option(tr, name, type_)
    for name, type_ in _LOSS_TYPES.items():
        _option(tr, name, type_, *(["--ot"] if name == "ot_coefficient" else []))
    _option(tr, "steps", int_at_least(1))
    _option(tr, "batch_size", int_at_least(2))
    _option(tr, "lr", finite_float(0, low_open=True))
    _option(tr, "seed", int_at_least(0))
    _option(tr, "dead_feature_window", int_at_least(1))
    tr.add_argument("--holdout", type=int_at_least(0), default=256,
                    help="pairs kept out of training and scored at the end; 0 trains on all of them, as the "
                         "release does (default: 256)")
    tr.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    tr.add_argument("--checkpoints", type=int_at_least(0), default=0, help="resumable checkpoints to save (default: 0)")
    tr.add_argument("--resume", default=None, help="a checkpoint folder to resume from")
    tr.add_argument("--device", type=torch_device, default="cpu", help="torch device (default: cpu)")
    tr.add_argument("--out", type=output_folder, required=True, help="output folder")
    tr.set_defaults(func=_cmd_train)
    lab = commands.add_parser("label", help="label every shared latent by term clustering; writes JSON")
    _add_data_options(lab)
    lab.add_argument("--sae", default="sith-lens-toy-lucid",
                     help="a LUCID folder (OUT/final of `lucid train`) or the packaged release (default)")
    lab.add_argument("--threshold", type=finite_float(0, 2, low_open=True), default=0.35, help="cosine distance under which term clusters merge")
    lab.add_argument("--min-purity", type=finite_float(0, 1), default=0.4, help="leave latents below this purity unlabelled")
    lab.add_argument("--show", type=int_at_least(0), default=12, help="labels to print (default 12)")
    lab.add_argument("--out", default="lucid-labels.json", help="JSON file to write")
    lab.set_defaults(func=_cmd_label)
    gr = commands.add_parser("ground", help="heat maps of a caption's words over an image; writes JSON")
    gr.add_argument("--sae", default="sith-lens-toy-lucid", help="as for `label`")
    gr.add_argument("--model", default="toy", help="the model the SAE was trained on (default: toy)")
    gr.add_argument("--image", required=True, help="an image file")
    gr.add_argument("--caption", required=True, help="its caption")
    gr.add_argument("--word", action="append", default=None,
                    help="a word of the caption (repeatable; default: every content word)")
    gr.add_argument("--out", default="lucid-ground.json", help="JSON file to write")
    gr.set_defaults(func=_cmd_ground)
