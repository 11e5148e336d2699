"""How local are the toy CLIP's patch tokens, and where does the packaged LUCID point?

Three measurements on held-out toy scenes (seed 32), each a figure the README quotes:

- ``probe``: a ridge-regression linear probe (trained on 3/4 of the patches, scored on the rest)
  reads an object's colour from the object's own patches and from *background* patches of
  one-object scenes, at every vision block's residual stream. High accuracy from background
  patches means the patch tokens carry the whole scene, which limits any patch-level grounding.
- ``dense_pointing``: the pointing game of the toy CLIP's own cosine similarity between each
  patch and each word in the joint space (MaskCLIP-style), with no SAE.
- ``release_pointing``: the packaged LUCID's pointing game split by the number of objects in the
  scene, and where the missed peaks land (another object or the background).
- ``top_patches_on_background``: of the top patches of the packaged LUCID's labelled latents
  (``label_latents``), the share that show background, against the background's share of all patches.

    python benchmarks/lucid_locality.py      # about a minute; the last line is JSON
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F
from sae_lens import SAE

import sith_lens as sl
from sith_lens.lucid.collect import collect_toy_activations
from sith_lens.lucid.evaluate import encode_pairs, n_shared, word_heatmaps
from sith_lens.lucid.interpret import label_latents
from sith_lens.toyworld import ToyWorld
from sith_lens.toyworld.attributes import ATTRIBUTES

EVAL_SEED = 32
COLOR = ATTRIBUTES.index("color")


def ridge_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> float:
    n = len(x)
    xb = torch.cat([x, torch.ones(n, 1)], 1)
    target = F.one_hot(y, n_classes).float()
    train, test = slice(0, 3 * n // 4), slice(3 * n // 4, n)
    a = xb[train]
    w = torch.linalg.solve(a.T @ a + 0.1 * torch.eye(a.shape[1]), a.T @ target[train])
    return round(float(((xb[test] @ w).argmax(1) == y[test]).float().mean()), 3)


@torch.no_grad()
def probes(model, n_images: int = 1536) -> dict[str, dict[str, float]]:
    world = ToyWorld(seed=EVAL_SEED)
    batches = [world.batch(i, 64, objects=(1, 1)) for i in range(n_images // 64)]
    pixels = torch.cat([b.pixels for b in batches])
    labels = torch.from_numpy(np.concatenate([b.patch_labels for b in batches])).reshape(len(pixels), -1)
    colors = torch.from_numpy(np.concatenate([b.values for b in batches]))[:, 0, COLOR]
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.vision.cfg.n_layers)]
    _, cache = model.vision.run_with_cache(pixels, names_filter=names, return_type=None)
    g = torch.Generator().manual_seed(0)
    out = {}
    for name in names:
        x = cache[name][:, int(model.vision.cfg.has_cls_token):]
        row = {}
        for where, mask in (("object_patches", labels == 0), ("background_patches", labels == -1)):
            image, patch = mask.nonzero(as_tuple=True)
            pick = torch.randperm(len(image), generator=g)[:15000]
            row[where] = ridge_probe(x[image[pick], patch[pick]], colors[image[pick]], 8)
        out[name] = row
    return out


def pointing_breakdown(patch_codes, token_codes, acts, batch) -> dict[str, dict[str, float]]:
    heat = word_heatmaps(patch_codes, token_codes)
    width = batch.tokens.shape[1]
    objects = acts.extras["pair.token_objects"][:, :width]
    labels = acts.extras["image.patch_labels"].reshape(len(acts), -1)
    n_objects = (acts.extras["image.values"][:, :, 0] >= 0).sum(1)
    p, slot = ((objects >= 0) & batch.token_mask).nonzero(as_tuple=True)
    h = heat[p, slot]
    landed = labels[p, h.argmax(-1)]
    right = (landed == objects[p, slot]) & (h.max(-1).values > 0)
    out = {}
    for k in (1, 2, 3):
        m = n_objects[p] == k
        out[f"{k}_objects"] = {
            "pointing": round(float(right[m].float().mean()), 3),
            "peak_on_background": round(float((landed[m] == -1).float().mean()), 3),
            "peak_on_other_object": round(float(((landed[m] >= 0) & ~right[m]).float().mean()), 3),
            "words": int(m.sum()),
        }
    out["all"] = {"pointing": round(float(right.float().mean()), 4), "words": int(len(right))}
    return out


@torch.no_grad()
def main() -> None:
    model = sl.load_clip("toy")
    acts = collect_toy_activations(model, 512, seed=EVAL_SEED, progress=False)
    batch = acts.pair_batch(torch.arange(len(acts)))
    dense = pointing_breakdown(F.normalize(batch.patches, dim=-1), F.normalize(batch.tokens, dim=-1) *
                               batch.token_mask[..., None], acts, batch)
    sae = SAE.from_pretrained("sith-lens-toy-lucid", "final")
    _, patch_codes, token_codes = encode_pairs(sae, acts)
    s = n_shared(sae)
    release = pointing_breakdown(patch_codes[..., :s], token_codes[..., :s], acts, batch)
    report = label_latents(sae, acts, model)
    labels = acts.extras["image.patch_labels"].reshape(acts.patches.shape[0], -1)
    tops = [int(labels[i, r * acts.grid + c]) for x in report.labels if x.label for i, r, c, _ in x.top_patches]
    background = {"top_patches_on_background": round(sum(t == -1 for t in tops) / max(len(tops), 1), 3),
                  "background_share_of_patches": round(float((labels == -1).float().mean()), 3),
                  "top_patches": len(tops)}
    probe = probes(model)
    for name, row in probe.items():
        print(f"{name:<28} colour from object patches {row['object_patches']:.3f}, from background patches "
              f"{row['background_patches']:.3f}")
    print(f"pointing game: dense joint-space cosine {dense['all']['pointing']:.3f}, packaged LUCID {release['all']['pointing']:.3f}")
    for k in ("1_objects", "2_objects", "3_objects"):
        r = release[k]
        print(f"  LUCID, {k.replace('_', ' ')}: {r['pointing']:.3f} (peak on background {r['peak_on_background']:.3f}, "
              f"on another object {r['peak_on_other_object']:.3f})")
    print(f"top patches of labelled latents on background: {background['top_patches_on_background']:.3f} "
          f"(background is {background['background_share_of_patches']:.3f} of all patches)")
    print(json.dumps({"probe": probe, "dense_pointing": dense, "release_pointing": release, **background}))


if __name__ == "__main__":
    main()
