"""Base vs fine-tuned on the toy world: does fine-tuning keep each head's singular basis, and does
SITH of the weight update name the concept the fine-tuning introduced?

Fine-tunes the shipped toy CLIP (``recipes.finetune_toy``, both towers, a few CPU minutes) on
a shifted world in which purple objects are drawn magenta (RGB 255, 0, 255) and captioned "magenta",
a word the base model never saw in training. Then ``sith_lens.compare`` per head and layer:
principal angles between the top-8 right singular subspaces, singular-value ratios of matched
vectors, and COMP explanations (fine-tuned text tower, "toy" vocabulary) of the top 4 singular
vectors of delta W_VO.

"Names the concept": how often "magenta" is among the concepts of those explanations, against a
control, the explanations of the fine-tuned model's own top 4 singular vectors per head (same
dictionary), and its rank among all concepts by that count.

    python benchmarks/compare_toy.py [--steps 300] [--out DIR]      # the last line is JSON
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import sys
from collections import Counter
from pathlib import Path

import torch

import sith_lens as sl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the recipes/ folder, which is not installed
from sith_lens.evidence import wilson_interval
from recipes.finetune_toy import FinetuneConfig, finetune, save_finetuned, shifted_world

NEW_CONCEPT = "magenta"


def concept_counts(result, vectors: int) -> Counter:
    """How many explanations of each head's top ``vectors`` singular vectors use each concept."""
    counts: Counter = Counter()
    for idx, coef in zip(result.indices[:, :, :vectors].reshape(-1, result.k).tolist(),
                         result.coefs[:, :, :vectors].reshape(-1, result.k).tolist()):
        counts.update({result.concepts[j] for j, c in zip(idx, coef) if c > 0})
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--out", default=None, help="keep the fine-tuned checkpoint here (default: a temp folder)")
    parser.add_argument("--finetuned", default=None, help="skip fine-tuning and use this checkpoint")
    args = parser.parse_args()
    start = time.perf_counter()
    cfg = FinetuneConfig(steps=args.steps, lr=args.lr)
    with tempfile.TemporaryDirectory() as tmp:
        if args.finetuned:
            path, ft_seconds = Path(args.finetuned), 0.0
        else:
            t0 = time.perf_counter()
            model, tokenizer, log = finetune(cfg)
            ft_seconds = time.perf_counter() - t0
            path = save_finetuned(model, tokenizer, cfg, args.out or Path(tmp) / "ft", {"log": log})
        base, ft = sl.load_clip("toy"), sl.load_clip(path)

        # did the fine-tuning learn the shift? zero-shot on magenta objects of the shifted world
        data = shifted_world(cfg, seed=777).attribute_set("color", 40)
        prompts = list(data.prompts) + [f"a {NEW_CONCEPT} object"]
        purple = torch.from_numpy(data.labels) == list(data.prompts).index("a purple object")
        learned = {}
        for name, m in (("base", base), ("finetuned", ft)):
            with torch.no_grad():
                pred = (m.encode_image(data.batch.pixels, normalize=True) @ m.encode_text(prompts, normalize=True).T).argmax(-1)
            learned[name] = float((pred[purple] == len(prompts) - 1).float().mean())
        n_purple = int(purple.sum())

        concepts = sl.ConceptDictionary.from_vocab(ft, "toy", progress=False)
        cmp = sl.compare(base, ft, concepts, top=8, delta_vectors=4, progress=False)
        own = sl.explain_heads(ft, concepts, progress=False)
    delta_counts, own_counts = concept_counts(cmp.delta, 4), concept_counts(own, 4)
    n_expl = cmp.delta.indices[:, :, :4].numel() // cmp.delta.k
    ranking = [c for c, _ in delta_counts.most_common()]
    rank = ranking.index(NEW_CONCEPT) + 1 if NEW_CONCEPT in ranking else None

    print(f"fine-tuning: {args.steps} steps, {ft_seconds:.0f} s; magenta objects called '{NEW_CONCEPT}': "
          f"base {learned['base']:.2f}, fine-tuned {learned['finetuned']:.2f}")
    print(f"{'layer':>5}{'mean angle':>12}{'max angle':>11}{'|log2 sv ratio|':>17}{'match cos':>11}{'rel. change':>13}")
    for row in cmp.summary():
        print(f"{row['layer']:>5}{row['mean_angle_deg']:>11.2f}\u00b0{row['max_angle_deg']:>10.2f}\u00b0"
              f"{row['mean_abs_log2_sv_ratio']:>17.4f}{row['mean_match_cosine']:>11.3f}{row['mean_relative_change']:>13.3f}")
    print(f"'{NEW_CONCEPT}' in explanations of delta W_VO's top 4 vectors: {delta_counts[NEW_CONCEPT]} of {n_expl} "
          f"(rank {rank} of {len(delta_counts)} concepts used); in the fine-tuned model's own top 4: "
          f"{own_counts[NEW_CONCEPT]} of {n_expl}")
    print("most frequent concepts in the update's explanations:", delta_counts.most_common(8))
    summary = cmp.summary()
    print(json.dumps({
        "finetune_steps": args.steps, "finetune_seconds": round(ft_seconds, 1),
        "magenta_learned_base": round(learned["base"], 3), "magenta_learned_finetuned": round(learned["finetuned"], 3),
        **{f"magenta_learned_{name}_ci95": [round(x, 3) for x in wilson_interval(rate * n_purple, n_purple)]
           for name, rate in learned.items()},
        "magenta_images": n_purple, "magenta_chance": round(1 / len(prompts), 3),
        "mean_principal_angle_deg": round(float(cmp.angles.mean()), 3),
        "median_principal_angle_deg": round(float(cmp.angles.median()), 3),
        "mean_abs_log2_sv_ratio": round(float(cmp.sv_ratio.log2().abs().mean()), 4),
        "mean_relative_change": round(float(cmp.relative_change.mean()), 4),
        "per_layer": [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in summary],
        "new_concept": NEW_CONCEPT, "delta_explanations": n_expl,
        "new_concept_in_delta": delta_counts[NEW_CONCEPT], "new_concept_in_own": own_counts[NEW_CONCEPT],
        "new_concept_rank_in_delta": rank, "concepts_in_delta": len(delta_counts),
        "seconds": round(time.perf_counter() - start, 1),
    }))


if __name__ == "__main__":
    main()
