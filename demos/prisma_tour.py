"""Three ViT-Prisma-style analyses on a CLIP vision tower, with TransformerLens's own code.

1. **Per-head attribution** to the zero-shot logits: ``cache.stack_head_results`` +
   ``cache.logit_attrs`` (direct logit attribution), the heads that push the predicted class most.
2. **Patch logit lens**: ``cache.accumulated_resid(apply_ln=True)`` at every position, read by the
   zero-shot head (``W_U``, ``b_U``): the layer at which each patch starts to vote for the image's
   class.
3. **Activation patching** between two images: ``get_act_patch_resid_pre`` (sith-lens's
   image-aware version of TransformerLens's helper), the clean image's residual stream patched
   into the other image's run, one layer and position at a time.

The zero-shot head is the tower's unembed (``model.attach_zero_shot_head``): class prompts for a
model with a tokenizer (the toy CLIP's shapes), random text-tower embeddings otherwise.

    python demos/prisma_tour.py [--model toy | random:vit-b-32] [--images a.png b.png]
"""

from __future__ import annotations

import argparse

import torch

import sith_lens as sl
from sith_lens.adapters import patching


def attach_head(model: sl.HookedCLIP) -> None:
    """The toy world's shapes as classes, or (no tokenizer) six random token sequences."""
    if model.tokenizer is not None:
        from sith_lens.toyworld import SHAPES

        model.attach_zero_shot_head(list(SHAPES), templates=["a {}", "a photo of a {}"])
        return
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, model.text.cfg.d_vocab - 1, (6, 8), generator=gen)
    ids[:, -1] = model.text.cfg.d_vocab - 1  # CLIP pools at the highest id (the end-of-text token)
    with torch.no_grad():
        model.vision.set_zero_shot_head(model.encode_text(ids), [f"class {i}" for i in range(6)])


def head_attribution(tower, cache, target: torch.Tensor, top: int = 5) -> list[tuple[str, float]]:
    """Mean direct attribution of each head to each image's ``target`` class, largest first."""
    heads, labels = cache.stack_head_results(layer=-1, pos_slice=0, return_labels=True)
    attrs = cache.logit_attrs(heads, tokens=target, pos_slice=0).mean(-1)  # [n_layers * n_heads]
    order = attrs.argsort(descending=True)[:top]
    return [(labels[i], float(attrs[i])) for i in order]


def patch_logit_lens(tower, cache, target: int, image: int = 0) -> torch.Tensor:
    """``[n_layers + 1, n_ctx]``: the ``target`` logit of one image at every stream and position."""
    lens = cache.accumulated_resid(apply_ln=True)[:, image]  # [streams, pos, d_model]
    return lens @ tower.W_U[:, target] + tower.b_U[target]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--images", nargs="*", default=[], help="two or more image files (default: toy scenes or noise)")
    args = parser.parse_args(argv)

    model = sl.load_clip(args.model)
    tower = model.vision
    attach_head(model)
    if args.images:
        pixels = model.preprocess(args.images)
    elif args.model == "toy":
        from sith_lens.toyworld import ToyWorld

        pixels = ToyWorld(seed=0).batch(0, 4).pixels
    else:
        size = tower.cfg.image_size
        pixels = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    if len(pixels) < 2:
        parser.error("give at least two images (activation patching needs a clean and a corrupted one)")

    with torch.no_grad():
        logits, cache = tower.run_with_cache(pixels, return_type="logits")
        predicted = logits.argmax(-1)
        names = tower.zero_shot_labels
        print(f"{model.cfg.model_name}: {len(pixels)} images, predicted {[names[i] for i in predicted]}")

        print("\n1. heads with the largest direct attribution to the predicted class (mean over images)")
        for label, value in head_attribution(tower, cache, predicted):
            print(f"   {label:>7}  {value:+.3f}")

        target = int(predicted[0])
        lens = patch_logit_lens(tower, cache, target)
        grid = tower.cfg.grid_size
        patches = lens[:, int(tower.cfg.has_cls_token):]
        print(f"\n2. patch logit lens, image 0, logit of {names[target]!r} (CLS, then the mean and best patch per stream)")
        for layer, row in enumerate(patches):
            print(f"   {'final' if layer == len(lens) - 1 else f'{layer}_pre':>6}  CLS {lens[layer, 0]:+.3f}  "
                  f"patches mean {row.mean():+.3f}  best {row.max():+.3f} at patch {int(row.argmax())} of {grid}x{grid}")

        # the corrupted image: the first one predicted as another class (else image 1, against the
        # clean image's runner-up)
        other = [i for i in range(1, len(pixels)) if int(predicted[i]) != target]
        j = other[0] if other else 1
        clean, corrupt = pixels[:1], pixels[j : j + 1]
        _, clean_cache = tower.run_with_cache(clean)
        wrong = int(predicted[j]) if other else int(logits[0].argsort(descending=True)[1])

        def logit_diff(embeds: torch.Tensor) -> torch.Tensor:
            out = tower.zero_shot_logits(embeds)[0]
            return out[target] - out[wrong]

        base, full = float(logit_diff(tower(corrupt))), float(logit_diff(tower(clean)))
        scan = patching.get_act_patch_resid_pre(tower, corrupt, clean_cache, logit_diff)  # [n_layers, n_ctx]
        recovered = (scan - base) / (full - base) if abs(full - base) > 1e-6 else scan * 0
        print(f"\n3. activation patching, image 0 into image {j}: logit difference {names[target]!r} - {names[wrong]!r},"
              f" {base:+.3f} corrupted, {full:+.3f} clean; share recovered per layer")
        for layer, row in enumerate(recovered):
            best = int(row.argmax())
            print(f"   layer {layer:>2}: CLS {row[0]:+.2f}, best position {best} {row[best]:+.2f}")


if __name__ == "__main__":
    main()
