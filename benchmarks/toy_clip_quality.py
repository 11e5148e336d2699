"""Quality of the shipped toy CLIP on held-out toy-world scenes.

- Zero-shot accuracy per attribute on single-object scenes: each image against one prompt per value
  of that attribute ("a red object", "a circle", "an object at the top left", ...).
- Image -> caption retrieval R@1 / R@5 among 1,000 scenes with 2-3 objects and full captions.
- A diagnostic: linear-probe accuracy per attribute on the image embeddings (ridge probe fitted on
  seed-778 scenes), which tells "the image tower does not encode it" from "image and text are not
  aligned on it".

The scenes come from seed 777, which training (seed 0) and its validation (seed 1) never used. The
toy world is small, so a held-out *scene* can still repeat a training scene's attribute combination;
colours are jittered, so the exact images are new.

The last line printed is JSON with ``min_attribute_accuracy``, every per-attribute accuracy,
``R@1``, ``R@5`` and ``probe_<attribute>``. Target: every attribute >= 0.90.

    python benchmarks/toy_clip_quality.py [--per-value 100] [--pairs 1000] [--model toy]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import sith_lens as sl
from sith_lens.toyworld import VALUES, ToyWorld
from sith_lens.toyworld.evaluate import caption_retrieval, linear_probe_accuracy, zero_shot_accuracy

HELD_OUT_SEED = 777


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--per-value", type=int, default=100, help="single-object scenes per attribute value")
    parser.add_argument("--pairs", type=int, default=1000, help="image-caption pairs for retrieval")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model = sl.load_clip(args.model)
    world = ToyWorld(seed=HELD_OUT_SEED)
    with torch.no_grad():
        acc = zero_shot_accuracy(model.encode_image, model.encode_text, world, per_value=args.per_value)
        ret = caption_retrieval(model.encode_image, model.encode_text, world, n_pairs=args.pairs)
        probe = linear_probe_accuracy(model.encode_image, ToyWorld(seed=HELD_OUT_SEED + 1), world, per_value=args.per_value)
    print(f"toy CLIP quality ({args.model}), held-out seed {HELD_OUT_SEED}")
    print(f"{'attribute':<12}{'values':>7}{'zero-shot':>11}{'probe':>8}")
    for attribute, value in acc.items():
        print(f"{attribute:<12}{len(VALUES[attribute]):>7}{value:>11.3f}{probe[attribute]:>8.3f}")
    print(f"retrieval among {args.pairs} pairs: R@1 {ret['R@1']:.3f}  R@5 {ret['R@5']:.3f}")
    result = {
        "min_attribute_accuracy": min(acc.values()),
        **{f"accuracy_{k}": round(v, 4) for k, v in acc.items()},
        **ret,
        **{f"probe_{k}": round(v, 4) for k, v in probe.items()},
        "per_value": args.per_value,
        "pairs": args.pairs,
        "seed": HELD_OUT_SEED,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
