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
    PointingWords, concat_words, format_pointing_table, pointing_maps, pointing_table, select_words, word_heat,
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
    main()
