"""Where does LUCID's grounding get lost: in the transport plan it trains towards, or in the codes?

On held-out toy scenes (seeds 32, 4242, 5151; 512 pairs each) every caption word that names one
object's attribute points with several heat maps over its image's patches, all scored by the same
pointing game (``sith_lens.lucid.pointing``) on the same words:

- ``lucid``: the packaged LUCID's shared-code dot product (the claim LUCID makes);
- ``plan``: the word's column of the GCMT transport plan between the pair's shared codes, guided
  by the prior, exactly as training computes it (``transport.pair_plan``): the target LUCID is
  trained towards;
- ``plan_codes_only``: the same plan without the guidance prior (cost of the codes alone);
- ``prior``: the guidance prior alone (the frozen model's patch-word similarity, smoothed over the
  grid), which the plan starts from;
- ``dense_cosine``: the model's own patch-word cosine, no SAE;
- word-agnostic maps: ``background_distance`` and LUCID's code norm.

Reading it: if ``plan`` points well but ``lucid`` does not, the transport target is right and the
codes do not carry it (training or capacity); if ``plan_codes_only`` points no better than the
word-agnostic maps, the codes themselves do not say which object a word names, and the plan's
pointing comes from the prior. Also printed: the share of each word's plan mass on the object it
names, against that object's share of the scene's object patches (what a plan blind to the word
would put there), and the share of its mass on background patches, against the background's share
of the patches, with the share of words whose plan peaks on background.

    python benchmarks/lucid_transport.py      # ~2 min on 2 cores; the last line is JSON

``--mechanisms`` instead trains LUCID once per (mechanism, training seed) and measures, for each
mechanism that may flatten the plan changed one at a time from the release's recipe, the plan's
mass and peak on the named object and the codes' pointing, on the words of 2-3-object scenes:

- ``mass_named``: share of a word's plan mass on the object it names (of all its mass, background
  included); ``mass_named_of_objects``: the same among its mass on objects;
- ``capacity``: the most a plan *can* put on the named object under its marginals: the named
  object's share of the patch marginal over the mass of all the caption's words that name that
  object (they share its patches), capped at 1 (a uniform patch marginal gives a 5-patch object
  5/64 of the mass);
- ``plan_pointing`` / ``plan_peak_on_background``: where the plan's peak lands;
- ``pointing`` (the codes), ``dense_cosine`` (the frozen model, the same words) and
  ``dead_shared``: shared latents that never fire on a held-out *patch* (they may fire on words).

    python benchmarks/lucid_transport.py --mechanisms     # ~40 min on 2 cores; the last line is JSON
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from sae_lens import SAE

import sith_lens as sl
from sith_lens.evidence import Estimate, format_evidence, mean_estimate
from sith_lens.lucid.collect import collect_toy_activations
from sith_lens.lucid.data import PairedActivations
from sith_lens.lucid.evaluate import encode_pairs, n_shared
from sith_lens.lucid.pointing import (
    PointingWords, concat_words, format_pointing_table, pointing_maps, pointing_table, score_heatmap, select_words,
    word_heat,
)
from sith_lens.lucid.transport import config_from_details, guidance_prior, pair_plan

EVAL_SEEDS, N_EVAL = (32, 4242, 5151), 512
#: The maps ``transport_maps`` adds, each also scored for where its mass goes.
TRANSPORT_MAPS = ("plan", "plan_codes_only", "prior")


@torch.no_grad()
def transport_maps(sae: Any, acts: PairedActivations, words: PointingWords) -> dict[str, torch.Tensor]:
    """Per word, its plan column (with and without the guidance prior) and the prior alone."""
    cfg = config_from_details(getattr(sae.cfg.metadata, "training_architecture_details", None))
    no_prior = replace(cfg, context_weight=0.0, grid_sigma=0.0)
    batch, patch_codes, token_codes = encode_pairs(sae, acts, max_pairs=len(acts))
    s, grid = n_shared(sae), batch.grid
    n_pairs, n_patches, width = len(batch.patches), batch.patches.shape[1], batch.tokens.shape[1]
    maps = {name: torch.zeros(n_pairs, width, n_patches) for name in TRANSPORT_MAPS}
    for p in range(n_pairs):
        content = (batch.token_weights[p] > 0).nonzero().flatten()
        if len(content) == 0:
            continue
        zp, zt = patch_codes[p, :, :s], token_codes[p, content, :s]
        xp, xt, w = batch.patches[p].float(), batch.tokens[p, content].float(), batch.token_weights[p, content]
        maps["plan"][p, content] = pair_plan(zp, zt, w, grid, cfg, xp, xt).T
        maps["plan_codes_only"][p, content] = pair_plan(zp, zt, w, grid, no_prior).T
        maps["prior"][p, content] = guidance_prior(xp[None], xt[None], grid, cfg)[0].T.exp()
    return {name: word_heat(m, words) for name, m in maps.items()}


def mass_on_named_object(plan: torch.Tensor, words: PointingWords, groups: np.ndarray) -> tuple[Estimate, Estimate]:
    """Share of each word's plan mass on objects that lies on the named object, and the same for a
    plan spread evenly over the scene's object patches (word-blind)."""
    on_object = words.patch_labels >= 0
    named = words.patch_labels == words.object[:, None]
    mass = plan.clamp_min(0)
    share = (mass * named).sum(1) / (mass * on_object).sum(1).clamp_min(1e-12)
    blind = named.sum(1).double() / on_object.sum(1).clamp_min(1).double()
    return mean_estimate(share.double().numpy(), groups), mean_estimate(blind.numpy(), groups)


def mass_on_background(plan: torch.Tensor, words: PointingWords, groups: np.ndarray) -> dict[str, Estimate]:
    """Where a word's plan goes off the objects: the share of its mass on background patches, the
    background's share of the scene's patches (what a plan blind to objects would put there), and
    the share of words whose peak lies on background."""
    background = words.patch_labels < 0
    mass = plan.clamp_min(0)
    share = (mass * background).sum(1) / mass.sum(1).clamp_min(1e-12)
    peak_off = background.gather(1, plan.argmax(1, keepdim=True)).squeeze(1)
    return {"mass_share": mean_estimate(share.double().numpy(), groups),
            "background_patch_share": mean_estimate(background.double().mean(1).numpy(), groups),
            "peak_on_background": mean_estimate(peak_off.double().numpy(), groups)}


#: Each mechanism that may flatten the plan, changed one at a time from the release's recipe.
MECHANISMS: dict[str, dict[str, Any]] = {
    "recipe": {},
    "patch_marginal_from_saliency": {"ot_patch_saliency": 1.0},
    "eps_0.02": {"ot_eps": 0.02},
    "no_grid_smoothing": {"ot_grid_sigma": 0.0},
    "patch_mass_0.2": {"ot_patch_mass": 0.2},
    "relative_cost": {"ot_relative_cost": True},
    # the one that lifts the plan's mass on the named object, with the settings that raise its cap
    "saliency+patch_mass_0.2": {"ot_patch_saliency": 1.0, "ot_patch_mass": 0.2},
    "saliency+context_0.9": {"ot_patch_saliency": 1.0, "ot_context_weight": 0.9},
}


def capacity(words: PointingWords, batch: Any, token_objects: torch.Tensor, cfg: Any, index: torch.Tensor) -> torch.Tensor:
    """Per word, the largest share of its mass a plan can put on the named object: the object's
    patch marginal over the mass ``patch_mass * sum b_t`` of every word of the caption that names
    that object (they share its patches), capped at 1."""
    from sith_lens.lucid.transport import _solver_inputs, token_marginals

    out = torch.zeros(len(index))
    marginals: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # per pair: content slots, b, a
    for i, w in enumerate(index.tolist()):
        p, obj = int(words.pair[w]), int(words.object[w])
        if p not in marginals:
            content = (batch.token_weights[p] > 0).nonzero().flatten()
            b = token_marginals(batch.token_weights[p, content].float()[None])
            log_prior = guidance_prior(batch.patches[p][None].float(), batch.tokens[p, content][None].float(),
                                       batch.grid, cfg)
            marginals[p] = (content, b, _solver_inputs(torch.zeros_like(log_prior), b, cfg, log_prior)[1])
        content, b, a = marginals[p]
        named = (words.patch_labels[w] == obj).float()
        same_object = token_objects[p, content] == obj
        out[i] = min(1.0, float((a[0] * named).sum()) / max(cfg.patch_mass * float(b[0, same_object].sum()), 1e-12))
    return out


@torch.no_grad()
def score_mechanism(sae: Any, acts: PairedActivations) -> dict[str, Any]:
    """The plan's mass and peak on the named object and the codes' pointing, on 2-3-object scenes."""
    cfg = config_from_details(getattr(sae.cfg.metadata, "training_architecture_details", None))
    words, maps = pointing_maps({"lucid": sae}, acts)
    maps["plan"] = transport_maps(sae, acts, words)["plan"]
    keep = words.n_objects >= 2
    index = keep.nonzero().flatten()
    w = select_words(words, keep)
    plan = maps["plan"][keep].clamp_min(0)
    named = w.patch_labels == w.object[:, None]
    on_object = w.patch_labels >= 0
    total = plan.sum(1).clamp_min(1e-12)
    landed = w.patch_labels.gather(1, plan.argmax(1, keepdim=True))[:, 0]
    batch, patch_codes, _ = encode_pairs(sae, acts, max_pairs=len(acts))
    s = n_shared(sae)
    return {
        "mass_named": float(((plan * named).sum(1) / total).mean()),
        "mass_named_of_objects": float(((plan * named).sum(1) / (plan * on_object).sum(1).clamp_min(1e-12)).mean()),
        "capacity": float(capacity(words, batch, acts.extras["pair.token_objects"][:, :batch.tokens.shape[1]], cfg, index).mean()),
        "plan_pointing": float((landed == w.object).float().mean()),
        "plan_peak_on_background": float((landed < 0).float().mean()),
        "pointing": float(score_heatmap(maps["lucid"][keep], w).hit.float().mean()),
        "dense_cosine": float(score_heatmap(maps["dense_cosine"][keep], w).hit.float().mean()),
        "dead_shared": int(((patch_codes[..., :s] > 0).flatten(0, 1).sum(0) == 0).sum()),
        "words": len(w),
    }


def mechanisms(names: list[str], train_seeds: list[int], steps: int) -> None:
    """Train LUCID once per (mechanism, training seed) and print the plan's mass and peak on the
    named object and the codes' pointing, mean and per seed."""
    import time

    from sith_lens.lucid.defaults import DEFAULTS
    from sith_lens.lucid.sae import TrainingLucidSAEConfig, train_lucid

    model = sl.load_clip("toy")
    train = collect_toy_activations(model, 4096, seed=31, progress=False)
    held_out = collect_toy_activations(model, N_EVAL, seed=EVAL_SEEDS[0], progress=False)
    base = TrainingLucidSAEConfig(d_in=train.d_in, d_sae=DEFAULTS.d_sae)
    rows: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        for seed in train_seeds:
            start = time.perf_counter()
            sae = train_lucid(train, replace(base, **MECHANISMS[name]), steps=steps, seed=seed, progress=False)
            row = {**score_mechanism(sae, held_out), "seed": seed, "minutes": round((time.perf_counter() - start) / 60, 2)}
            rows.setdefault(name, []).append(row)
            print(json.dumps({"mechanism": name, **row}), flush=True)
    keys = ("mass_named", "mass_named_of_objects", "capacity", "plan_pointing", "plan_peak_on_background", "pointing",
            "dense_cosine", "dead_shared")
    print("| mechanism | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, rs in rows.items():
        cells = []
        for k in keys:
            vals = [r[k] for r in rs]
            cells.append(f"{np.mean(vals):.3f} ({', '.join(f'{v:.2f}' if isinstance(v, float) else str(v) for v in vals)})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(json.dumps({"mechanisms": rows, "train_seeds": train_seeds, "steps": steps, "eval_seed": EVAL_SEEDS[0]}))


@torch.no_grad()
def main() -> None:
    model = sl.load_clip("toy")
    sae = SAE.from_pretrained("sith-lens-toy-lucid", "final")
    parts, heats, groups, seeds = [], {}, [], []
    for seed in EVAL_SEEDS:
        acts = collect_toy_activations(model, N_EVAL, seed=seed, progress=False)
        words, maps = pointing_maps({"lucid": sae}, acts, code_norm_of="lucid")
        maps.update(transport_maps(sae, acts, words))
        keep = words.n_objects >= 2
        words = select_words(words, keep)
        for name, h in maps.items():
            heats.setdefault(name, []).append(h[keep])
        parts.append(words)
        groups.append(seed * 100_000 + words.image.numpy())
        seeds += [str(seed)] * len(words)
        print(f"seed {seed}: {len(words)} words of 2-3-object scenes", flush=True)
    words = concat_words(parts)
    heats = {k: torch.cat(v) for k, v in heats.items()}
    agnostic = ["background_distance", "lucid_code_norm"]
    groups_all, seeds_all = np.concatenate(groups), np.array(seeds)
    tables = {name: pointing_table(words, heats, name, agnostic, groups_all, seeds_all)
              for name in ("lucid", *TRANSPORT_MAPS)}
    print(format_pointing_table(tables["plan"]))
    for name, table in tables.items():
        print(format_evidence(f"pointing of {name}", table.evidence, name))
    mass = {name: mass_on_named_object(heats[name], words, groups_all) for name in TRANSPORT_MAPS}
    for name, (share, blind) in mass.items():
        print(f"{name}: share of object mass on the named object {share} (word-blind spread {blind})")
    background = {name: mass_on_background(heats[name], words, groups_all) for name in TRANSPORT_MAPS}
    for name, b in background.items():
        print(f"{name}: mass on background {b['mass_share']} (background is {b['background_patch_share']} of the "
              f"patches); peak on background for {b['peak_on_background']} of the words")
    print(json.dumps({
        "mass_on_background": {name: {k: e.to_json() for k, e in b.items()} for name, b in background.items()},
        "pointing": {name: t.evidence.to_json() for name, t in tables.items()},
        "rates": tables["plan"].to_json()["rates"],
        "mass_on_named_object": {name: {"value": s.to_json(), "word_blind": b.to_json()} for name, (s, b) in mass.items()},
        "eval_seeds": list(EVAL_SEEDS), "words": len(words),
    }))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mechanisms", nargs="*", default=None,
                        help=f"train and score these mechanisms (none named: all of {list(MECHANISMS)})")
    parser.add_argument("--train-seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    if args.mechanisms is None:
        main()
    else:
        mechanisms(args.mechanisms or list(MECHANISMS), [int(x) for x in args.train_seeds.split(",")], args.steps)
