"""LUCID's four claims on the toy CLIP, each against the baseline that ignores it, over training
seeds x evaluation seeds.

For every training seed (0, 1, 2 by default) LUCID is trained with a recipe (the release's defaults
with ``--set`` changes) and SAELens's TopK SAE over both modalities without transport
(``shared_no_ot``, the same latents, Top-K budget, steps and pairs per step), both on the toy CLIP's
activations of 4096 scenes (seed 31). Each is scored on 512 held-out scenes of each evaluation seed
(32, 4242, 5151):

1. **grounding**: the pointing game on the words of 2-3-object scenes, LUCID's shared-code dot product
   against the frozen model's own patch-word cosine (no loss allowed), the best word-agnostic map
   (saliency: distance from the background, LUCID's code norm) and chance (a random object);
2. **correspondence**: over the shared latents alive in both modalities (their count reported), the
   share whose top-20 words and top-20 patches name the same attribute value, against
   ``shared_no_ot`` (``lucid_toy.correspondence``);
3. **concept clustering**: term labels' collisions (labelled latents sharing their label with another)
   with the floor the vocabulary sets (24 toy words: ``n`` labels cannot all differ when ``n`` > 24),
   and the failure the paper names: *similarity* labels (each latent's decoder row against the words'
   text embeddings; for the raw embeddings, each object's mean patch token against them) pile onto a
   few words. Measured as the labels' effective number (exp of their entropy) over the most they
   could use, min(labelled, 24), and as the labels' accuracy against the ground truth;
4. **auto-labels**: term-clustering labels that are a toy word, checked at the object level against
   the latent's top patches (``lucid_toy.auto_label_accuracy``), against ``shared_no_ot``'s.

Also: dead shared latents and the step time against a SAELens TopK step on the same rows.
Intervals are 95 % bootstraps from ``sith_lens.evidence``: over images (pointing), over latents
(labels, correspondence), pooled over all (training, evaluation) seed cells, with the per-cell
values printed too.

    python benchmarks/lucid_claims.py                          # the release's recipe (~35 min on 2 cores)
    python benchmarks/lucid_claims.py --set ot_patch_saliency=1 --set ot_grid_sigma=0
    python benchmarks/lucid_claims.py --quick                  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from dataclasses import fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import sith_lens as sl
from lucid_toy import (  # the benchmark's shared baselines and metrics
    TRAIN_SEED, auto_label_accuracy, correspondence, label_stats, shared_baseline, similarity_labels, step_time_ratio,
    word_attribute,
)
from sith_lens.evidence import compare, format_evidence, mean_estimate
from sith_lens.lucid.collect import collect_toy_activations
from sith_lens.lucid.defaults import DEFAULTS
from sith_lens.lucid.evaluate import encode_pairs, n_shared, reconstruction_report
from sith_lens.lucid.interpret import label_latents
from sith_lens.lucid.pointing import pointing_maps, score_heatmap, select_words
from sith_lens.lucid.sae import TrainingLucidSAEConfig, train_lucid
from sith_lens.toyworld.attributes import ATTRIBUTES, VALUES

EVAL_SEEDS = (32, 4242, 5151)
WORDS = sorted({w for a in ATTRIBUTES for v in VALUES[a] for w in v.split()})


def parse_set(items: list[str]) -> dict[str, Any]:
    """``name=value`` changes of the recipe, typed like the recipe's field."""
    types = {f.name: type(getattr(DEFAULTS, f.name)) for f in fields(DEFAULTS)}
    out: dict[str, Any] = {}
    for item in items:
        name, _, text = item.partition("=")
        if name not in types:
            raise SystemExit(f"--set {item}: {name!r} is not a recipe setting ({sorted(types)})")
        kind = types[name]
        out[name] = (text.lower() in ("1", "true", "yes")) if kind is bool else kind(text)
    return out


def effective_labels(labels: list[str | None]) -> dict[str, float]:
    """How far labels that are toy words spread over the 24 of them: exp(entropy) of the label
    distribution over the most distinct labels the units could carry, min(labelled, 24). 1: as
    spread as possible; 1/that: every unit has the same label."""
    named = [x for x in labels if x in WORDS]
    if not named:
        return {"effective_labels": 0.0, "spread": 0.0, "labelled": 0}
    p = np.array(list(Counter(named).values()), float) / len(named)
    eff = float(math.exp(-(p * np.log(p)).sum()))
    return {"effective_labels": round(eff, 2), "spread": round(eff / min(len(named), len(WORDS)), 4),
            "labelled": len(named)}


def collision_floor(n_labelled: int) -> float:
    """The fewest collisions ``n`` labels drawn from the toy vocabulary can have: 23 words once
    each and every other label on one word."""
    v = len(WORDS)
    return 0.0 if n_labelled <= v else (n_labelled - v + 1) / n_labelled


@torch.no_grad()
def raw_similarity_labels(model: Any, acts: Any) -> tuple[list[str], list[float]]:
    """Similarity-based labels of the raw embeddings: each object of each image labelled by the
    toy word whose text embedding is closest to its mean patch token, and whether the word is
    one of that object's values."""
    text = F.normalize(model.encode_text(WORDS).float(), dim=-1)
    labels_grid = acts.extras["image.patch_labels"].reshape(acts.patches.shape[0], -1)
    values = acts.extras["image.values"]
    labels, right = [], []
    for image in range(acts.patches.shape[0]):
        for obj in range(values.shape[1]):
            mask = labels_grid[image] == obj
            if not bool(mask.any()):
                continue
            word = WORDS[int((F.normalize(acts.patches[image][mask].float().mean(0), dim=-1) @ text.T).argmax())]
            attribute = word_attribute(word)
            a = ATTRIBUTES.index(attribute)
            labels.append(word)
            right.append(float(values[image, obj, a] >= 0 and word in VALUES[attribute][int(values[image, obj, a])].split()))
    return labels, right


@torch.no_grad()
def similarity_label_accuracy(sim: list[str | None], report: Any, acts: Any) -> list[float]:
    """The object-level check of ``auto_label_accuracy`` applied to similarity labels ``sim``
    (``similarity_labels``): each latent keeps its top patches, its label becomes the word nearest
    its decoder row."""
    swapped = type(report)([replace(x, label=sim[x.latent]) for x in report.labels if sim[x.latent]], report.settings)
    return auto_label_accuracy(swapped, acts)["_items"]["own"]


def score_cell(saes: dict[str, Any], acts: Any, model: Any) -> dict[str, Any]:
    """Every claim's items for one (training seed, evaluation seed) cell."""
    words, maps = pointing_maps({"lucid": saes["lucid"], "shared_no_ot": saes["shared_no_ot"]}, acts,
                                code_norm_of="lucid")
    keep = words.n_objects >= 2
    w = select_words(words, keep)
    hits = {name: score_heatmap(maps[name][keep], w).hit.double().numpy()
            for name in ("lucid", "dense_cosine", "background_distance", "lucid_code_norm", "shared_no_ot")}
    out: dict[str, Any] = {"hits": hits, "image": w.image.numpy(), "chance": (1.0 / w.n_objects.double()).numpy()}
    for name, sae in saes.items():
        report = label_latents(sae, acts, model)
        _, patch_codes, token_codes = encode_pairs(sae, acts)
        s = n_shared(sae)
        alive = (patch_codes[..., :s] > 0).flatten(0, 1).any(0) & (token_codes[..., :s] > 0).flatten(0, 1).any(0)
        term = [x.label if alive[x.latent] else None for x in report.labels]
        sim = similarity_labels(sae, model, alive)
        auto = auto_label_accuracy(report, acts)
        labels_grid = acts.extras["image.patch_labels"].reshape(acts.patches.shape[0], -1)
        grid = acts.grid
        on_background = [float(np.mean([int(labels_grid[i, r * grid + c]) < 0 for i, r, c, _ in x.top_patches]))
                         for x in report.labels if x.label in WORDS and x.top_patches]
        out[name] = {
            **correspondence(sae, acts), "dead_shared": reconstruction_report(sae, acts)["dead"]["shared"], "top_patches_on_background": on_background,
            "auto_items": auto["_items"]["own"], "auto_chance": auto["_items"]["chance"],
            "term_labels": {**label_stats(term), **effective_labels(term)},
            "term_word_labels": {**label_stats([x if x in WORDS else None for x in term]), **effective_labels(term)},
            "similarity_labels": {**label_stats(sim), **effective_labels(sim)},
            "similarity_items": similarity_label_accuracy(sim, report, acts),
        }
    raw_labels, raw_right = raw_similarity_labels(model, acts)
    out["raw"] = {**effective_labels(raw_labels), "right": raw_right}
    return out


def summarise(cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The four claims over every cell, each with its baseline, interval and per-cell values."""
    names = list(cells)
    hits = {k: np.concatenate([cells[c]["hits"][k] for c in names]) for k in cells[names[0]]["hits"]}
    groups = np.concatenate([[hash((c, int(i))) for i in cells[c]["image"]] for c in names])
    cell_of = np.concatenate([[c] * len(cells[c]["image"]) for c in names])
    chance = np.concatenate([cells[c]["chance"] for c in names])
    pointing = compare(hits, "lucid", margin_against=["background_distance", "lucid_code_norm"], chance=chance,
                       groups=groups, seeds=cell_of)
    vs_cosine = mean_estimate(hits["lucid"] - hits["dense_cosine"], groups)
    out: dict[str, Any] = {"pointing": pointing.to_json(), "pointing_margin_vs_dense_cosine": vs_cosine.to_json()}
    print(format_evidence("pointing game, words of 2-3-object scenes", pointing, "LUCID"))
    print(f"LUCID - the frozen model's own cosine: {vs_cosine}")

    def pooled(model: str, key: str) -> list[float]:
        return [x for c in names for x in cells[c][model][key]]

    for model in ("lucid", "shared_no_ot"):
        per_cell = {c: cells[c][model] for c in names}
        corr_items = [float(x) for c in names for x in per_cell[c]["_latent_agrees"]]
        out[model] = {
            "correspondence": mean_estimate(corr_items).to_json() if corr_items else None,
            "shared_alive_in_both": [per_cell[c]["shared_alive_in_both"] for c in names],
            "correspondence_per_cell": [per_cell[c]["correspondence"] for c in names],
            "auto_label_accuracy": mean_estimate(pooled(model, "auto_items")).to_json() if pooled(model, "auto_items") else None,
            "auto_label_chance": round(float(np.mean(pooled(model, "auto_chance") or [0])), 4),
            "auto_labels_scored": [len(per_cell[c]["auto_items"]) for c in names],
            "auto_label_per_cell": [round(float(np.mean(per_cell[c]["auto_items"] or [0])), 4) for c in names],
            "similarity_label_accuracy": mean_estimate(pooled(model, "similarity_items")).to_json()
            if pooled(model, "similarity_items") else None,
            "dead_shared": [per_cell[c]["dead_shared"] for c in names],
            "top_patches_on_background": mean_estimate(pooled(model, "top_patches_on_background")).to_json()
            if pooled(model, "top_patches_on_background") else None,
        }
        for kind in ("term_labels", "term_word_labels", "similarity_labels"):
            stats = [per_cell[c][kind] for c in names]
            out[model][kind] = {k: round(float(np.mean([s[k] for s in stats])), 4) for k in stats[0]}
            out[model][kind]["collision_floor"] = round(float(np.mean([collision_floor(s["labelled"]) for s in stats])), 4)
    raw = [cells[c]["raw"] for c in names]
    out["raw_similarity"] = {"spread": round(float(np.mean([r["spread"] for r in raw])), 4),
                             "effective_labels": round(float(np.mean([r["effective_labels"] for r in raw])), 2),
                             "accuracy": mean_estimate([x for r in raw for x in r["right"]]).to_json()}
    return out


def print_table(s: dict[str, Any]) -> None:
    def e(x: Any) -> str:
        return "–" if x is None else f"{x['value']:.3f} [{x['ci95'][0]:.3f}, {x['ci95'][1]:.3f}]"

    l, b = s["lucid"], s["shared_no_ot"]
    rows = [
        ("pointing, 2-3 objects", e(s["pointing"]), f"own cosine {e(s['pointing']['baselines']['dense_cosine'])}; "
         f"margin {e(s['pointing_margin_vs_dense_cosine'])}; best word-agnostic margin {e(s['pointing']['margin'])}"),
        ("correspondence", f"{e(l['correspondence'])} over {l['shared_alive_in_both']} alive",
         f"{e(b['correspondence'])} over {b['shared_alive_in_both']} alive"),
        ("object-level auto-labels", f"{e(l['auto_label_accuracy'])} ({l['auto_labels_scored']} labels)",
         f"{e(b['auto_label_accuracy'])} ({b['auto_labels_scored']} labels); chance {l['auto_label_chance']:.3f}"),
        ("term-label collisions (floor), toy-word labels", f"{l['term_word_labels']['label_collisions']:.3f} "
         f"({l['term_word_labels']['collision_floor']:.3f})", f"{b['term_word_labels']['label_collisions']:.3f} "
         f"({b['term_word_labels']['collision_floor']:.3f})"),
        ("label spread, term / similarity", f"{l['term_labels']['spread']:.3f} / {l['similarity_labels']['spread']:.3f}",
         f"{b['term_labels']['spread']:.3f} / {b['similarity_labels']['spread']:.3f}; raw embeddings "
         f"{s['raw_similarity']['spread']:.3f}"),
        ("similarity-label accuracy", e(l["similarity_label_accuracy"]),
         f"{e(b['similarity_label_accuracy'])}; raw embeddings {e(s['raw_similarity']['accuracy'])}"),
        ("labelled latents' top patches on background", e(l["top_patches_on_background"]),
         e(b["top_patches_on_background"])),
        ("dead shared latents", str(l["dead_shared"]), str(b["dead_shared"])),
    ]
    print("| claim | LUCID | baseline |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="change a recipe setting")
    parser.add_argument("--train-seeds", default="0,1,2")
    parser.add_argument("--eval-seeds", default=",".join(map(str, EVAL_SEEDS)))
    parser.add_argument("--pairs", type=int, default=4096)
    parser.add_argument("--eval-pairs", type=int, default=512)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--quick", action="store_true", help="smoke run: 512 pairs, 40 steps, one seed each")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.eval_pairs, args.steps, args.train_seeds, args.eval_seeds = 512, 128, 40, "0", "32"
    changes = parse_set(args.set)
    start = time.perf_counter()
    model = sl.load_clip("toy")
    train = collect_toy_activations(model, args.pairs, seed=TRAIN_SEED, progress=False)
    held_out = {e: collect_toy_activations(model, args.eval_pairs, seed=int(e), progress=False)
                for e in args.eval_seeds.split(",")}
    cfg = TrainingLucidSAEConfig(d_in=train.d_in, d_sae=DEFAULTS.d_sae, **changes)
    k = cfg.k_shared + cfg.k_private
    cells: dict[str, dict[str, Any]] = {}
    for t in [int(x) for x in args.train_seeds.split(",")]:
        saes = {"lucid": train_lucid(train, cfg, steps=args.steps, batch_size=DEFAULTS.batch_size, lr=DEFAULTS.lr,
                                     seed=t, progress=False),
                "shared_no_ot": shared_baseline(train, DEFAULTS.d_sae, k, args.steps, DEFAULTS.batch_size, DEFAULTS.lr, t)}
        for e, acts in held_out.items():
            cells[f"train{t}/eval{e}"] = score_cell(saes, acts, model)
            print(f"scored train{t}/eval{e} ({(time.perf_counter() - start) / 60:.1f} min)", flush=True)
    summary = summarise(cells)
    summary.update(step_time_ratio(train, cfg, DEFAULTS.batch_size))
    print_table(summary)
    print(f"step: {summary['step_ms_lucid']} ms against a TopK step {summary['step_ms_topk']} ms "
          f"({summary['step_time_ratio_vs_topk']}x)")
    print(json.dumps({**summary, "changes": changes, "settings": vars(args),
                      "minutes": round((time.perf_counter() - start) / 60, 1)}))


if __name__ == "__main__":
    main()
