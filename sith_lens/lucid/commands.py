"""``sith-lens lucid ...``: collect paired activations and train a LUCID SAE from the command line."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .collect import JOINT


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="toy", help="model spec as for `sith-lens info` (default: toy)")
    p.add_argument("--toy-pairs", type=int, default=4096,
                   help="toy-world scenes to collect when no --captions file is given (default: 4096)")
    p.add_argument("--seed", type=int, default=0, help="toy-world seed, and the training seed (default: 0)")
    p.add_argument("--captions", default=None,
                   help='a JSONL file of {"image": path, "caption": text} lines: your own image-caption pairs')
    p.add_argument("--images", default=None, help="folder the --captions image paths are relative to "
                   "(default: the captions file's folder)")
    p.add_argument("--vision-hook", default=JOINT, help=f"vision hook to read (default: {JOINT}, the joint space)")
    p.add_argument("--text-hook", default=JOINT, help=f"text hook to read (default: {JOINT})")
    p.add_argument("--collect-batch-size", type=int, default=64, help="images per forward pass (default: 64)")


def _collect(args: argparse.Namespace, use_cache: bool) -> Any:
    from sith_lens.adapters.loading import load_clip

    from .collect import cached, collect_folder_activations, collect_toy_activations

    if args.collect_batch_size < 1:
        raise ValueError(f"--collect-batch-size must be >= 1, got {args.collect_batch_size}")
    model = load_clip(args.model)
    hooks = dict(vision_hook=args.vision_hook, text_hook=args.text_hook)
    if args.captions:
        spec = {"captions": str(Path(args.captions).resolve()), "images": args.images, **hooks}
        return cached(model, spec, lambda: collect_folder_activations(
            model, args.captions, args.images, args.collect_batch_size, **hooks), use_cache)
    if args.model != "toy" and not args.captions:
        raise ValueError("a model other than the toy CLIP needs your own data: pass --captions FILE.jsonl")
    spec = {"toy_pairs": args.toy_pairs, "seed": args.seed, **hooks}
    return cached(model, spec, lambda: collect_toy_activations(
        model, args.toy_pairs, args.seed, args.collect_batch_size, **hooks), use_cache)


def _cmd_collect(args: argparse.Namespace) -> int:
    acts = _collect(args, use_cache=False)
    acts.save(args.out)
    n_tokens = int(acts.token_mask.sum())
    print(f"collected {len(acts)} pairs: {acts.patches.shape[0]} images x {acts.patches.shape[1]} patches, "
          f"{n_tokens} caption tokens, width {acts.d_in}; wrote {args.out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from sith_lens.adapters.sae_lens import TrainingLucidSAEConfig, train_lucid

    from .data import PairedActivations
    from .evaluate import reconstruction_report

    acts = PairedActivations.load(args.acts) if args.acts else _collect(args, use_cache=True)
    train, holdout = acts.split(args.holdout) if args.holdout else (acts, None)
    cfg = TrainingLucidSAEConfig(
        d_in=acts.d_in, d_sae=args.d_sae, n_private_vision=args.n_private, n_private_text=args.n_private,
        k_shared=args.k_shared, k_private=args.k_private, ot_coefficient=args.ot,
    )
    start = time.perf_counter()
    sae = train_lucid(train, cfg, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      out_dir=args.out, n_checkpoints=args.checkpoints, resume_from=args.resume, device=args.device)
    seconds = time.perf_counter() - start
    summary: dict[str, Any] = {"steps": args.steps, "train_seconds": round(seconds, 1), "pairs": len(train),
                               "out": str(Path(args.out) / "final")}
    if holdout is not None:
        with torch.no_grad():
            summary["holdout"] = reconstruction_report(sae.to("cpu"), holdout)
    print(json.dumps(summary, indent=2))
    return 0


def add_lucid_parser(sub: Any) -> None:
    """Add ``lucid collect`` and ``lucid train`` to the ``sith-lens`` parser."""
    lucid = sub.add_parser("lucid", help="LUCID: a unified vision-language SAE (collect activations, train)")
    commands = lucid.add_subparsers(dest="lucid_command", required=True)
    col = commands.add_parser("collect", help="collect paired patch and token activations to a folder")
    _add_data_options(col)
    col.add_argument("--out", required=True, help="folder to write the activations to")
    col.set_defaults(func=_cmd_collect)
    tr = commands.add_parser("train", help="train a LUCID SAE; writes OUT/final (SAELens format) and checkpoints")
    _add_data_options(tr)
    tr.add_argument("--acts", default=None, help="activations from `lucid collect` (default: collect, cached)")
    tr.add_argument("--d-sae", type=int, default=1024, help="latents in all: shared + both private blocks (default: 1024)")
    tr.add_argument("--n-private", type=int, default=128, help="private latents per modality (default: 128)")
    tr.add_argument("--k-shared", type=int, default=8, help="Top-K of the shared block (default: 8)")
    tr.add_argument("--k-private", type=int, default=2, help="Top-K of each private block (default: 2)")
    tr.add_argument("--ot", type=float, default=0.5, help="weight of the GCMT transport loss, 0 turns it off (default: 0.5)")
    tr.add_argument("--steps", type=int, default=2000, help="optimiser steps (default: 2000)")
    tr.add_argument("--batch-size", type=int, default=32, help="image-caption pairs per step (default: 32)")
    tr.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: 1e-3)")
    tr.add_argument("--holdout", type=int, default=256, help="pairs kept out of training and scored at the end (default: 256)")
    tr.add_argument("--checkpoints", type=int, default=0, help="resumable checkpoints to save (default: 0)")
    tr.add_argument("--resume", default=None, help="a checkpoint folder to resume from")
    tr.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    tr.add_argument("--out", required=True, help="output folder")
    tr.set_defaults(func=_cmd_train)
