"""How local are the toy CLIP's patch tokens, and how does the packaged LUCID point next to a
supervised reference and to maps that ignore the word?

Measurements on held-out toy scenes (seeds 32, 4242, 5151; probes fitted on seed 31):

- ``probe_pointing`` (a *reference*, not a ceiling): per layer (every block's residual stream and
  the joint-space tokens LUCID reads), a probe fitted with the patches' ground truth (the value of
  each attribute of the patch's object, or background) scores every patch for the named value; its
  score is the word's heat map, scored exactly as LUCID's pointing game. Two probes on the same
  inputs: ``mlp`` (one hidden layer of 256) and ``linear`` (softmax regression). What a supervised
  probe reaches shows what the patches hold; a label-free method may fall short of it, and a
  stronger probe could do better.
- ``collision_ceiling``: what a perfect attribute detector scores, picking at random among the
  scene's objects that share the named value (two large objects cannot be told apart by "large").
- ``release``: the packaged LUCID's pointing table (``sith_lens.lucid.pointing``): chance, a random
  patch, word-agnostic maps (distance from the mean background patch; its own code norm), the
  model's own patch-word cosine, per object count and given that the peak is on an object.
- ``colour_from_background``: a ridge probe reads an object's colour from the object's own patches
  and from *background* patches of one-object scenes, at every block: high accuracy from
  background patches means patch tokens carry the whole scene.
- ``top_patches_on_background``: of the top patches of the release's labelled latents, the share
  that show background, against the background's share of all patches.

    python benchmarks/lucid_locality.py      # ~4 min on 2 cores; the last line is JSON
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sae_lens import SAE

import sith_lens as sl
from sith_lens.evidence import format_evidence
from sith_lens.lucid.collect import collect_toy_activations
from sith_lens.lucid.data import PairedActivations
from sith_lens.lucid.interpret import label_latents
from sith_lens.lucid.pointing import (
    PointingWords, concat_words, format_pointing_table, pointing_maps, pointing_table, pointing_words, score_heatmap,
)
from sith_lens.toyworld import ToyWorld
from sith_lens.toyworld.attributes import ATTRIBUTES, VALUES

TRAIN_SEED, EVAL_SEEDS = 31, (32, 4242, 5151)
N_TRAIN, N_EVAL, BATCH = 3072, 512, 64
COLOR = ATTRIBUTES.index("color")


def own_values(labels: torch.Tensor, values: torch.Tensor, attribute: int) -> torch.Tensor:
    """Per patch, the value of ``attribute`` of the patch's object, or n_values for background."""
    n_values = len(VALUES[ATTRIBUTES[attribute]])
    own = torch.gather(values[:, :, attribute], 1, labels.clamp_min(0))
    return torch.where(labels >= 0, own, torch.full_like(own, n_values))


@torch.no_grad()
def layer_patches(model: Any, seed: int, n: int) -> dict[str, torch.Tensor]:
    """Patch activations [n, N, d] at every block's residual stream for the scenes that
    ``collect_toy_activations(model, n, seed)`` draws (same world, same batches)."""
    cfg = model.vision.cfg
    world = ToyWorld(seed=seed, image_size=cfg.image_size, patch_size=cfg.patch_size)
    names = [f"blocks.{l}.hook_resid_post" for l in range(cfg.n_layers)]
    out: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for i, start in enumerate(range(0, n, BATCH)):
        pixels = world.batch(i, min(BATCH, n - start)).pixels
        _, cache = model.vision.run_with_cache(pixels, names_filter=names, return_type=None)
        for name in names:
            out[name].append(cache[name][:, int(cfg.has_cls_token):])
    return {name: torch.cat(x) for name, x in out.items()}


class Probe(torch.nn.Module):
    """Per-attribute classifiers over a patch (the value of its object, or background): one hidden
    layer of ``hidden`` units, or linear with ``hidden=0``."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.sizes = [len(VALUES[a]) + 1 for a in ATTRIBUTES]
        width = hidden or d
        self.body = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU()) if hidden else torch.nn.Identity()
        self.head = torch.nn.Linear(width, sum(self.sizes))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.head(self.body(x)).split(self.sizes, dim=-1))


def fit_probe(x: torch.Tensor, targets: torch.Tensor, hidden: int, epochs: int = 4, seed: int = 0) -> Probe:
    """Fit on rows ``x`` [R, d] with per-attribute targets [R, n_attributes] (Adam, cross-entropy)."""
    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    probe = Probe(x.shape[1], hidden)
    probe.register_buffer("mean", mean)
    probe.register_buffer("std", std)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(1024):
            logits = probe((x[idx] - mean) / std)
            loss = sum(F.cross_entropy(lg, targets[idx, a]) for a, lg in enumerate(logits))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return probe.eval()


@torch.no_grad()
def probe_heat(probe: Probe, patches: torch.Tensor, words: PointingWords) -> torch.Tensor:
    """Each word's heat: the probe's log-probability of the named value on every patch of its image."""
    logp = [lg.log_softmax(-1) for lg in probe((patches.float() - probe.mean) / probe.std)]  # per attr [I, N, v+1]
    heat = torch.empty(len(words), patches.shape[1])
    for a in range(len(ATTRIBUTES)):
        m = words.attribute == a
        heat[m] = logp[a][words.image[m], :, words.value[m]]
    return heat


@torch.no_grad()
def probe_pointing(model: Any, held_out: dict[int, PairedActivations]) -> dict[str, Any]:
    """Pointing of supervised probes per layer, on every evaluation seed's words."""
    train = collect_toy_activations(model, N_TRAIN, seed=TRAIN_SEED, progress=False)
    labels = train.extras["image.patch_labels"].reshape(N_TRAIN, -1).long()
    targets = torch.stack([own_values(labels, train.extras["image.values"].long(), a) for a in range(len(ATTRIBUTES))], -1)
    train_layers = {**layer_patches(model, TRAIN_SEED, N_TRAIN), "joint": train.patches.float()}
    eval_layers = {e: {**layer_patches(model, e, N_EVAL), "joint": a.patches.float()} for e, a in held_out.items()}
    words = {e: pointing_words(a) for e, a in held_out.items()}
    all_words = concat_words(list(words.values()))
    groups = np.concatenate([e * 100_000 + w.image.numpy() for e, w in words.items()])
    rows: dict[str, Any] = {}
    for layer, x in train_layers.items():
        heats = {}
        for kind, hidden in (("mlp", 256), ("linear", 0)):
            with torch.enable_grad():
                probe = fit_probe(x.reshape(-1, x.shape[-1]), targets.reshape(-1, len(ATTRIBUTES)), hidden)
            heats[kind] = torch.cat([probe_heat(probe, eval_layers[e][layer], words[e]) for e in held_out])
        table = pointing_table(all_words, heats, "mlp", word_agnostic=[], groups=groups)
        rows[layer] = {kind: table.rates[kind]["all"].to_json() for kind in heats}
        rows[layer]["mlp_per_attribute"] = {
            a: round(float(score_heatmap(heats["mlp"], all_words).hit[all_words.attribute == i].double().mean()), 3)
            for i, a in enumerate(ATTRIBUTES)}
        print(f"{layer:<26} probe pointing: mlp {table.rates['mlp']['all']}, linear {table.rates['linear']['all']}",
              flush=True)
    # a perfect attribute detector, guessing among the objects that share the named value; per seed, then averaged
    ceiling = float(np.mean([float((1 / w.n_same_value.double()).mean()) for w in words.values()]))
    return {"per_layer": rows, "collision_ceiling": round(ceiling, 4)}


@torch.no_grad()
def colour_from_background(model: Any, n_images: int = 1536) -> dict[str, dict[str, float]]:
    """Ridge probes of an object's colour from its own patches and from background patches."""
    world = ToyWorld(seed=EVAL_SEEDS[0])
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
            xs, ys = x[image[pick], patch[pick]], colors[image[pick]]
            n = len(xs)
            xb = torch.cat([xs, torch.ones(n, 1)], 1)
            fit, test = slice(0, 3 * n // 4), slice(3 * n // 4, n)
            w = torch.linalg.solve(xb[fit].T @ xb[fit] + 0.1 * torch.eye(xb.shape[1]),
                                   xb[fit].T @ F.one_hot(ys[fit], 8).float())
            row[where] = round(float(((xb[test] @ w).argmax(1) == ys[test]).float().mean()), 3)
        out[name] = row
    return out


@torch.no_grad()
def release_table(sae: Any, held_out: dict[int, PairedActivations]):
    """The packaged LUCID's pointing table over every evaluation seed."""
    parts, heats, groups, seeds = [], {}, [], []
    for e, acts in held_out.items():
        words, maps = pointing_maps({"release": sae}, acts, code_norm_of="release")
        for name, h in maps.items():
            heats.setdefault(name, []).append(h)
        parts.append(words)
        groups.append(e * 100_000 + words.image.numpy())
        seeds += [str(e)] * len(words)
    return pointing_table(concat_words(parts), {k: torch.cat(v) for k, v in heats.items()}, "release",
                          ["background_distance", "release_code_norm"], np.concatenate(groups), np.array(seeds))


@torch.no_grad()
def main() -> None:
    model = sl.load_clip("toy")
    held_out = {e: collect_toy_activations(model, N_EVAL, seed=e, progress=False) for e in EVAL_SEEDS}
    probes = probe_pointing(model, held_out)
    sae = SAE.from_pretrained("sith-lens-toy-lucid", "final")
    table = release_table(sae, held_out)
    first = held_out[EVAL_SEEDS[0]]
    report = label_latents(sae, first, model)
    labels = first.extras["image.patch_labels"].reshape(first.patches.shape[0], -1)
    tops = [int(labels[i, r * first.grid + c]) for x in report.labels if x.label for i, r, c, _ in x.top_patches]
    background = {"top_patches_on_background": round(sum(t == -1 for t in tops) / max(len(tops), 1), 3),
                  "background_share_of_patches": round(float((labels == -1).float().mean()), 3),
                  "top_patches": len(tops)}
    colour = colour_from_background(model)
    for name, row in colour.items():
        print(f"{name:<28} colour from object patches {row['object_patches']:.3f}, from background patches "
              f"{row['background_patches']:.3f}")
    print(f"\npackaged LUCID, seeds {EVAL_SEEDS}:")
    print(format_pointing_table(table))
    print(format_evidence("packaged LUCID pointing", table.evidence, "release"))
    print(f"top patches of labelled latents on background: {background['top_patches_on_background']:.3f} "
          f"(background is {background['background_share_of_patches']:.3f} of all patches)")
    print(f"perfect attribute detector (value collisions): {probes['collision_ceiling']:.3f}")
    print(json.dumps({"probe_pointing": probes, "release": table.to_json(), "colour_from_background": colour,
                      **background, "eval_seeds": list(EVAL_SEEDS)}))


if __name__ == "__main__":
    main()
