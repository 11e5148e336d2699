"""SITH edits on the shipped toy CLIP, measured causally and against controls: does suppressing the
singular vectors that COMP explains with an attribute's words remove that attribute, and only that one?

Edits (layers ``--layers``, default the last four):
- ``sith``: zero every singular vector whose COMP explanation puts more than ``--threshold`` of its
  coefficient mass on the target family (a phrase that names two attributes, "red circle", gives
  each half of its coefficient; ``sith_lens.toyworld.vocab.concept_families``);
- ``sith-words``: the same with only the family's single words ("red", "blue", ...), through the
  public ``concept_multipliers(..., match="exact")``;
- ``random``: the same number of singular vectors drawn at random from the same layers (mean over
  ``--random-draws`` seeds);
- ``random-sigma``: the same, each drawn near a suppressed vector's singular value in its layer
  (the suppressed vectors have larger singular values than average);
- ``heads``: whole-head mean-ablation (TextSpan-style) of the heads whose spectrum carries the most
  target mass, as many heads as the suppressed vectors fill (vectors / d_head, rounded up);
- ``all-heads``: mean-ablation of every head of the edited layers, the *ceiling* for any edit of
  those heads' weights: every target is stated relative to it.

Mean ablation averages over one-object scenes of their own seed (``MEAN_SEED``): the zero-shot
classes are one-object prompts, so these are on-distribution averaging images.

Scores: zero-shot accuracy per attribute on held-out single-object scenes of each ``--eval-seeds``
world (items are images; intervals are 95 % bootstrap over images). For each edit and target:

- drop (percentage points) of the target attribute and, off target, the mean drop of the other
  five attributes;
- ``edit_selectivity`` = target drop - off-target drop, next to the same for the random and
  sigma-matched random controls (``edit_selectivity_random``, ``_random_sigma``), the whole-head
  edit and the ceiling, and the margin over the better control;
- ``ablation_ceiling_pp``: the target's drop when every head of the layers is mean-ablated, and
  ``share_of_ceiling``: the edit's target drop over it.

Then, on one seed as before: the classification edit (``sl.boost_classes``, sith_spec §5.4) and group
robustness on the toy spurious-correlation task (``sith_lens.toyworld.spurious``).

    python benchmarks/edit_toy.py            # ~4 min on 2 cores; the last line is JSON
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

import sith_lens as sl
from sith_lens.edit import ablate_heads, concept_mass, concept_multipliers, edit_heads, identity_multipliers
from sith_lens.evidence import edit_selectivity
from sith_lens.toyworld import VALUES, ToyWorld
from sith_lens.toyworld.attributes import COLORS, POSITIONS, SHAPES
from sith_lens.toyworld.evaluate import zero_shot_items, zero_shot_scores
from sith_lens.toyworld.spurious import spurious_task
from sith_lens.toyworld.vocab import DISTRACTOR_COLORS, DISTRACTOR_PLACES, DISTRACTOR_SHAPES, concept_families
from sith_lens.zeroshot import group_robustness

HELD_OUT_SEED = 777
EVAL_SEEDS = (777, 6002, 9001)
MEAN_SEED = 555  # one-object scenes for mean ablation
ATTRIBUTES = ("color", "shape", "position", "size", "texture", "background")
TARGETS = ("color", "shape", "position")
FAMILY_WORDS = {
    "color": COLORS + DISTRACTOR_COLORS,
    "shape": SHAPES + DISTRACTOR_SHAPES,
    "position": POSITIONS + DISTRACTOR_PLACES,
    "background": ("background",),
}


def family_query(result, family: str) -> list[str]:
    """The family's words that occur in some explanation (as a word of a concept)."""
    words = []
    for w in FAMILY_WORDS[family]:
        if any(f" {w} " in f" {c} " for c in result.concepts):
            words.append(w)
    return words


def family_mass(result, family: str) -> torch.Tensor:
    """Share of each explanation's coefficient mass on ``family``; two-attribute phrases count half."""
    credit = torch.tensor([family in concept_families(c) and 1 / len(concept_families(c)) or 0.0
                           for c in result.concepts])
    weight = result.coefs.abs()
    return (weight * credit[result.indices]).sum(-1) / weight.sum(-1).clamp_min(1e-12)


def random_multipliers(result, n: int, seed: int, layer_positions: list[int]) -> torch.Tensor:
    m = identity_multipliers(result)
    pool = m[layer_positions].numel()
    g = torch.Generator().manual_seed(seed)
    flat = torch.ones(pool)
    flat[torch.randperm(pool, generator=g)[:n]] = 0.0
    m[layer_positions] = flat.reshape(m[layer_positions].shape)
    return m


def matched_random_multipliers(result, selected: torch.Tensor, seed: int, window: int = 8) -> torch.Tensor:
    """Zero as many vectors as ``selected``, each drawn among the ``window`` unselected vectors of the
    same layer whose singular values are closest to a selected one's (a sigma-matched control)."""
    g = torch.Generator().manual_seed(seed)
    m = identity_multipliers(result)
    for p in range(len(result.layers)):
        sigma, chosen = result.singular_values[p].flatten(), selected[p].flatten()
        free = (~chosen).nonzero().flatten().tolist()
        flat = m[p].flatten()
        for i in chosen.nonzero().flatten().tolist():
            near = sorted(free, key=lambda j: abs(float(sigma[j] - sigma[i])))[:window]
            if near:
                j = near[int(torch.randint(len(near), (1,), generator=g))]
                free.remove(j)
                flat[j] = 0.0
        m[p] = flat.reshape(m[p].shape)
    return m


def top_heads(result, mass: torch.Tensor, n_heads: int) -> list[tuple[int, int]]:
    """Heads with the largest sigma-weighted target mass."""
    score = (mass * result.singular_values).sum(-1) / result.singular_values.sum(-1)  # [n_sel, H]
    order = score.flatten().argsort(descending=True)[:n_heads].tolist()
    H = result.n_heads
    return [(result.layers[i // H], i % H) for i in order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--layers", default="-4:")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--per-value", type=int, default=40, help="zero-shot scenes per attribute value and seed")
    parser.add_argument("--eval-seeds", default=",".join(map(str, EVAL_SEEDS)))
    parser.add_argument("--per-group", type=int, default=100, help="images per group in the spurious task")
    parser.add_argument("--random-draws", type=int, default=3)
    parser.add_argument("--plain-prompt", action="store_true",
                        help="spurious task: average each class's background-naming prompt with a plain one (a milder confound)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.eval_seeds.split(",")]
    start = time.perf_counter()
    model = sl.load_clip(args.model)
    scale = float(model.logit_scale.exp())
    concepts = sl.ConceptDictionary.from_vocab(model, "toy", progress=False)
    layers = sl.sith.parse_layers(args.layers, model.vision.cfg.n_layers)
    result = sl.explain_heads(model, concepts, layers, progress=False)
    positions = list(range(len(layers)))
    worlds = [ToyWorld(seed=s) for s in seeds]
    mean_images = ToyWorld(seed=MEAN_SEED).batch(0, 256, objects=(1, 1)).pixels  # on-distribution: one object

    def correct(m) -> dict[str, np.ndarray]:
        """Per attribute, per-image correctness over every evaluation seed's scenes."""
        runs = [zero_shot_items(m.encode_image, m.encode_text, w, ATTRIBUTES, per_value=args.per_value,
                                logit_scale=scale) for w in worlds]
        return {a: np.concatenate([r[a][0] for r in runs]).astype(np.float64) for a in ATTRIBUTES}

    def mean_of(runs: list[dict]) -> dict[str, np.ndarray]:
        return {a: np.mean([r[a] for r in runs], axis=0) for a in ATTRIBUTES}

    base = correct(model)
    every_head = [(l, h) for l in layers for h in range(model.vision.cfg.n_heads)]
    ceiling = correct(ablate_heads(model, every_head, images=mean_images))
    per_target: dict[str, dict] = {}
    sizes: dict[str, dict[str, str]] = {}
    tables: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for target in TARGETS:
        mass = family_mass(result, target)
        m = identity_multipliers(result)
        m[mass > args.threshold] = 0.0  # strictly more than the threshold: a "red circle" vector is not "mostly colour"
        n = int((m == 0).sum())
        words = [w for w in FAMILY_WORDS[target] if w in result.concepts]
        m_words = concept_multipliers(result, words, 0.0, threshold=args.threshold, match="exact")
        heads = top_heads(result, mass, max(1, math.ceil(n / model.vision.cfg.d_head)))
        edits = {
            "sith": correct(edit_heads(model, result, m)),
            "sith-words": correct(edit_heads(model, result, m_words)),
            "random": mean_of([correct(edit_heads(model, result, random_multipliers(result, n, s, positions)))
                               for s in range(args.random_draws)]),
            "random-sigma": mean_of([correct(edit_heads(model, result, matched_random_multipliers(result, m == 0, s)))
                                     for s in range(args.random_draws)]),
            "heads": correct(ablate_heads(model, heads, images=mean_images)),
            "all-heads": ceiling,
        }
        tables[target] = edits
        sizes[target] = {"sith": f"{n} vectors", "sith-words": f"{int((m_words == 0).sum())} vectors",
                         "random": f"{n} vectors", "random-sigma": f"{n} vectors", "heads": f"{len(heads)} heads",
                         "all-heads": f"{len(every_head)} heads"}
        per_target[target] = edit_selectivity(base, edits, target, controls=("random", "random-sigma"),
                                              ceiling="all-heads")
        print(f"target {target}: selectivity (target drop - mean off-target drop, points; 95 % interval over "
              f"images of seeds {seeds})", flush=True)
        for name, row in per_target[target].items():
            if isinstance(row, dict) and "selectivity" in row:
                print(f"  {name:<14}{sizes[target][name]:>12}  target {row['target_drop_pp']['value']:6.1f}  "
                      f"off-target {row['off_target_drop_pp']['value']:5.1f}  selectivity {row['selectivity']['value']:6.1f} "
                      f"{row['selectivity']['ci95']}")
        print(f"  margin over random {per_target[target]['margin_vs_random']}, over sigma-matched "
              f"{per_target[target]['margin_vs_random_sigma']}, share of ceiling {per_target[target]['share_of_ceiling']}")

    print(f"\nzero-shot accuracy after each edit, layers {layers}, threshold {args.threshold}, "
          f"{len(seeds)} seeds x {args.per_value} scenes per value")
    print(f"{'edit':<22}{'size':>12}" + "".join(f"{a:>11}" for a in ATTRIBUTES))
    print(f"{'none':<22}{'-':>12}" + "".join(f"{base[a].mean():>11.3f}" for a in ATTRIBUTES))
    for target, edits in tables.items():
        for name, sc in edits.items():
            if name == "all-heads" and target != TARGETS[0]:
                continue
            label = name if name == "all-heads" else f"{name}:{target}"
            print(f"{label:<22}{sizes[target][name]:>12}" + "".join(f"{sc[a].mean():>11.3f}" for a in ATTRIBUTES))

    # the classification edit (sith_spec 5.4): boost vectors relevant to an attribute's class names
    world = ToyWorld(seed=HELD_OUT_SEED)
    base_scores = zero_shot_scores(model.encode_image, model.encode_text, world, ATTRIBUTES, per_value=args.per_value,
                                   logit_scale=scale)
    boost_rows, boost = {}, {}
    for attribute in ("texture", "size", "shape", "color"):
        edited = sl.boost_classes(model, result, concepts, list(VALUES[attribute]))
        after = zero_shot_scores(edited.encode_image, edited.encode_text, world, [attribute], per_value=args.per_value,
                                 logit_scale=scale)[attribute]
        boost_rows[attribute] = (base_scores[attribute], after)
        boost[f"boost_{attribute}_gain_pp"] = round(100 * (after[0] - base_scores[attribute][0]), 2)
    print("\nclassification edit (boost singular vectors relevant to the class names, m = max(0.8, R + 0.3)), "
          f"seed {HELD_OUT_SEED}")
    print(f"{'classes':<10}{'before':>16}{'after':>16}")
    for attribute, (before, after) in boost_rows.items():
        print(f"{attribute:<10}{before[0]:>8.3f} ({before[1]:>5.2f}){after[0]:>8.3f} ({after[1]:>5.2f})")

    # group robustness on the spurious task
    task = spurious_task(seed=HELD_OUT_SEED, per_group=args.per_group, plain_prompt=args.plain_prompt)

    def groups(m):
        return group_robustness(m, task.pixels, task.labels, task.groups, task.class_prompts)

    group_rows = {"none": groups(model)}
    bg_query = family_query(result, "background")
    bg_mass = concept_mass(result, bg_query)  # the public query: every concept with the word "background"
    for threshold in (0.2, 0.3, 0.5):
        m = concept_multipliers(result, bg_query, 0.0, threshold=threshold)
        n = int((m == 0).sum())
        group_rows[f"sith t={threshold} ({n} vectors)"] = groups(edit_heads(model, result, m))
        heads = top_heads(result, bg_mass, max(1, math.ceil(n / model.vision.cfg.d_head)))
        group_rows[f"heads t={threshold} ({len(heads)} heads)"] = groups(ablate_heads(model, heads, images=mean_images))
        draws = [groups(edit_heads(model, result, random_multipliers(result, n, s, positions)))
                 for s in range(args.random_draws)]
        group_rows[f"random t={threshold} ({n} vectors)"] = type(draws[0])(
            sum(d.overall for d in draws) / len(draws), sum(d.worst_group for d in draws) / len(draws), "mean", {})
    print(f"\ngroup robustness (seed {HELD_OUT_SEED}): class = size, confounded with the background in the class "
          f"prompts {task.class_prompts}")
    print(f"{'edit':<34}{'overall':>9}{'worst group':>13}  per group")
    for name, g in group_rows.items():
        per = ", ".join(f"{k} {a:.2f}" for k, (a, _) in g.groups.items())
        print(f"{name:<34}{g.overall:>9.3f}{g.worst_group:>13.3f}  {per}")

    print(json.dumps({
        "edit_selectivity": {t: per_target[t]["sith"]["selectivity"] for t in TARGETS},
        "edit_selectivity_random": {t: per_target[t]["random"]["selectivity"] for t in TARGETS},
        "edit_selectivity_random_sigma": {t: per_target[t]["random-sigma"]["selectivity"] for t in TARGETS},
        "edit_selectivity_heads": {t: per_target[t]["heads"]["selectivity"] for t in TARGETS},
        "edit_selectivity_margin_vs_random": {t: per_target[t]["margin_vs_random"] for t in TARGETS},
        "edit_selectivity_margin_vs_random_sigma": {t: per_target[t]["margin_vs_random_sigma"] for t in TARGETS},
        "ablation_ceiling_pp": {t: per_target[t]["all-heads"]["target_drop_pp"] for t in TARGETS},
        "ceiling_selectivity": {t: per_target[t]["all-heads"]["selectivity"] for t in TARGETS},
        "share_of_ceiling": {t: per_target[t]["share_of_ceiling"] for t in TARGETS},
        "per_target": per_target,
        "vectors": {t: sizes[t]["sith"] for t in TARGETS},
        "baseline_accuracy": {a: round(float(base[a].mean()), 3) for a in ATTRIBUTES},
        **boost,
        "groups": {name: {"overall": round(g.overall, 3), "worst_group": round(g.worst_group, 3)}
                   for name, g in group_rows.items()},
        "averaging_images": f"256 one-object scenes, seed {MEAN_SEED}",
        "eval_seeds": seeds, "layers": layers, "threshold": args.threshold,
        "seconds": round(time.perf_counter() - start, 1),
    }))


if __name__ == "__main__":
    main()
