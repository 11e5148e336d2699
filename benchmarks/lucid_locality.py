"""How local are the toy CLIP's patch tokens, and where does the packaged LUCID point?

Three measurements on held-out toy scenes (seed 32), each a figure the README quotes:

- ``probe``: a ridge-regression linear probe (trained on 3/4 of the patches, scored on the rest)
  reads an object's colour from the object's own patches and from *background* patches of
  one-object scenes, at every vision block's residual stream. High accuracy from background
  patches means the patch tokens carry the whole scene, which limits any patch-level grounding.
- ``dense_pointing``: the pointing game of the toy CLIP's own cosine similarity between each
  patch and each word in the joint space (MaskCLIP-style), with no SAE.
- ``oracle_pointing``: a ceiling for any pointing on these patch inputs. A *supervised* linear probe
  per attribute (trained on seed-31 scenes) scores each patch for each value of its own object,
  and plays the pointing game with the named value's score; ``collision_ceiling`` is a perfect
  attribute detector's score when objects that share the named value are picked at random.
- ``release_pointing``: the packaged LUCID's pointing game split by the number of objects in the
  scene, and where the missed peaks land (another object or the background).
- ``top_patches_on_background``: of the top patches of the packaged LUCID's labelled latents
  (``label_latents``), the share that show background, against the background's share of all patches.

    python benchmarks/lucid_locality.py      # about a minute; the last line is JSON
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sae_lens import SAE

import sith_lens as sl
from sith_lens.lucid.collect import collect_toy_activations
from sith_lens.lucid.data import PairedActivations
from sith_lens.lucid.evaluate import encode_pairs, n_shared, word_heatmaps
from sith_lens.lucid.interpret import label_latents
from sith_lens.toyworld import ToyWorld
from sith_lens.toyworld.attributes import ATTRIBUTES, VALUES

TRAIN_SEED, EVAL_SEED = 31, 32
COLOR = ATTRIBUTES.index("color")


def ridge_fit(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float = 0.1) -> torch.Tensor:
    """Weights [d + 1, n_classes] of a one-vs-all ridge regression (bias last)."""
    xb = torch.cat([x, torch.ones(len(x), 1)], 1)
    return torch.linalg.solve(xb.T @ xb + l2 * torch.eye(xb.shape[1]), xb.T @ F.one_hot(y, n_classes).float())


def ridge_scores(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(*x.shape[:-1], 1)], -1) @ w


def ridge_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> float:
    n = len(x)
    train, test = slice(0, 3 * n // 4), slice(3 * n // 4, n)
    w = ridge_fit(x[train], y[train], n_classes)
    return round(float((ridge_scores(x[test], w).argmax(1) == y[test]).float().mean()), 3)


def own_values(labels: torch.Tensor, values: torch.Tensor, attribute: int) -> torch.Tensor:
    """Per patch, the value of ``attribute`` of the patch's object, or n_values for background."""
    n_values = len(VALUES[ATTRIBUTES[attribute]])
    own = torch.gather(values[:, :, attribute], 1, labels.clamp_min(0))
    return torch.where(labels >= 0, own, torch.full_like(own, n_values))


@torch.no_grad()
def oracle_pointing(train: PairedActivations, held_out: PairedActivations) -> dict[str, Any]:
    """A ceiling for the pointing game on these patch inputs. For each attribute a *supervised*
    ridge probe, fitted on the training scenes' patches, scores every patch for each value (the
    value of the patch's own object, or background); a word's heat map is its value's score, and
    the pointing game is played as for LUCID. ``collision_ceiling`` is what a perfect attribute
    detector would score, picking at random among the scene's objects that share the value (two
    objects of one size cannot be told apart by the word "large")."""
    hits, ceiling, per_attribute = [], [], {}
    train_labels = train.extras["image.patch_labels"].reshape(train.patches.shape[0], -1)
    test_labels = held_out.extras["image.patch_labels"].reshape(held_out.patches.shape[0], -1)
    train_values, test_values = train.extras["image.values"], held_out.extras["image.values"]
    train_patches, test_patches = train.patches.float(), held_out.patches.float()  # [I, N, d]: one row per image
    objects = held_out.extras["pair.token_objects"]
    attributes = held_out.extras["pair.token_attributes"]
    for a, name in enumerate(ATTRIBUTES):
        n_values = len(VALUES[name])
        w = ridge_fit(train_patches.reshape(-1, train.d_in), own_values(train_labels, train_values, a).reshape(-1),
                      n_values + 1, l2=1.0)
        scores = ridge_scores(test_patches, w)  # [I, N, n_values + 1]
        p, slot = ((objects >= 0) & (attributes == a)).nonzero(as_tuple=True)
        image, obj = held_out.image_index[p], objects[p, slot]
        value = test_values[image, obj, a]
        heat = scores[image].gather(2, value[:, None, None].expand(-1, scores.shape[1], 1))[..., 0]
        hit = test_labels[image].gather(1, heat.argmax(1, keepdim=True))[:, 0] == obj
        same = (test_values[image, :, a] == value[:, None]).sum(1).float()
        per_attribute[name] = round(float(hit.float().mean()), 3)
        hits.append(hit.float())
        ceiling.append(1.0 / same)
    return {"probe_pointing": round(float(torch.cat(hits).mean()), 4), "per_attribute": per_attribute,
            "collision_ceiling": round(float(torch.cat(ceiling).mean()), 4)}


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
    oracle = oracle_pointing(collect_toy_activations(model, 3072, seed=TRAIN_SEED, progress=False), acts)
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
    print(f"pointing ceiling on these patch inputs: supervised probe {oracle['probe_pointing']:.3f} "
          f"({oracle['per_attribute']}); perfect attribute detector {oracle['collision_ceiling']:.3f}")
    print(json.dumps({"probe": probe, "oracle_pointing": oracle, "dense_pointing": dense, "release_pointing": release, **background}))


if __name__ == "__main__":
    main()
