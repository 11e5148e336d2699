"""SITH on the shipped toy CLIP: fidelity, coherence and attribute purity per method, and whether
COMP's head labels agree with what each head causally does.

For COMP (lam = 0.3), NNOMP and top-k at k = 5, over every singular vector of every head:
- ``fidelity``: the paper's fidelity (sith_spec §4.2); ``cosine``: joint-space cosine of the code.
- ``coherence``: mean pairwise cosine among the chosen concepts (centred atoms, non-zero coefs).
- ``attribute_purity``: the share of chosen concepts that belong to the dominant attribute family
  ("red circle" belongs to colour and shape; everyday distractors to "other").

``head_label_agreement``: each head is labelled with the attribute family that carries most of the
weight sigma_i * coef of its top ``--top-vectors`` singular vectors' COMP explanations (a phrase that
names two attributes, "red circle", gives each half). Its causal attribute is measured with data:
mean-ablate the head (its z replaced by the mean over the evaluation images) and take the attribute
whose zero-shot log-probability of the correct prompt (softmax over that attribute's prompts, with
the model's logit scale) drops most. Log-probabilities rather than accuracy, because the toy CLIP is
redundant: one head's ablation rarely flips a prediction (accuracy-based labels were clear for 2 of
48 heads only). A head has a *clear* causal attribute when that drop is >= ``--min-drop`` nats and
at least ``--margin`` times the second-largest. Agreement is over the heads with a clear causal
attribute; accuracy drops are printed too.

    python benchmarks/sith_toy.py            # the last line is JSON
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import torch

import sith_lens as sl
from sith_lens.toyworld import VALUES, ToyWorld
from sith_lens.toyworld.vocab import concept_families

HELD_OUT_SEED = 777
METHODS = (("comp", 0.3), ("nnomp", 0.0), ("topk", 0.0))


def selection_stats(result, concepts) -> dict[str, float]:
    atoms = {c: concepts.atoms[concepts.index(c)] for c in result.concepts}
    coherence, purity = [], []
    for idx, coef in zip(result.indices.reshape(-1, result.k).tolist(), result.coefs.reshape(-1, result.k).tolist()):
        chosen = [result.concepts[j] for j, c in zip(idx, coef) if c > 0]
        if len(chosen) >= 2:
            emb = torch.stack([atoms[c] for c in chosen])
            sims = emb @ emb.T
            n = len(chosen)
            coherence.append(float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1))))
        if chosen:
            counts = Counter(f for c in chosen for f in concept_families(c))
            purity.append(counts.most_common(1)[0][1] / len(chosen))
    return {
        "fidelity": float(result.fidelity.mean()), "cosine": float(result.cosine.mean()),
        "coherence": sum(coherence) / len(coherence), "attribute_purity": sum(purity) / len(purity),
    }


def family_prior(concepts) -> Counter:
    """Each family's share of the vocabulary (a two-attribute phrase counts half for each)."""
    prior: Counter = Counter()
    for c in concepts.concepts:
        families = concept_families(c)
        for f in families:
            prior[f] += 1 / (len(families) * len(concepts))
    return prior


def head_labels(result, top_vectors: int, prior: Counter | None = None) -> dict[tuple[int, int], str]:
    """Dominant family per head; with ``prior``, the family most *enriched* over its vocabulary share."""
    labels = {}
    for layer in result.layers:
        for h in range(result.n_heads):
            score: Counter = Counter()
            for v in result.head(layer, h).vectors[:top_vectors]:
                for concept, coef in v.concepts:
                    families = concept_families(concept)
                    for family in families:
                        score[family] += v.singular_value * coef / len(families)
            score.pop("other", None)
            if prior is not None:
                score = Counter({f: v / prior[f] for f, v in score.items()})
            labels[(layer, h)] = score.most_common(1)[0][0] if score else "other"
    return labels


class ZeroShot:
    """Zero-shot accuracy per attribute on fixed single-object scenes, with optional head ablation."""

    def __init__(self, model, per_value: int):
        self.model = model
        world = ToyWorld(seed=HELD_OUT_SEED)
        self.sets = {a: world.attribute_set(a, per_value) for a in VALUES}
        with torch.no_grad():
            self.prompts = {a: model.encode_text(list(d.prompts), normalize=True) for a, d in self.sets.items()}
            self.mean_z = {}
            names = {f"blocks.{l}.attn.hook_z" for l in range(model.vision.cfg.n_layers)}
            sums, count = {}, 0
            for d in self.sets.values():
                _, cache = model.vision.run_with_cache(d.batch.pixels, names_filter=lambda n: n in names)
                for l in range(model.vision.cfg.n_layers):
                    z = cache[f"blocks.{l}.attn.hook_z"].sum(0)
                    sums[l] = z if l not in sums else sums[l] + z
                count += d.batch.pixels.shape[0]
            self.mean_z = {l: s / count for l, s in sums.items()}  # [pos, n_heads, d_head]

    def evaluate(self, ablate: tuple[int, int] | None = None) -> tuple[dict[str, float], dict[str, float]]:
        """``(accuracy, mean log-probability of the correct prompt)`` per attribute."""
        hooks = []
        if ablate is not None:
            layer, head = ablate

            def mean_ablate(z, hook):
                z[:, :, head] = self.mean_z[layer][:, head]
                return z

            hooks = [(f"blocks.{layer}.attn.hook_z", mean_ablate)]
        acc, logp = {}, {}
        scale = float(self.model.logit_scale.exp())
        with torch.no_grad():
            for a, d in self.sets.items():
                img = self.model.vision.run_with_hooks(d.batch.pixels, fwd_hooks=hooks)
                logits = scale * (img / img.norm(dim=-1, keepdim=True)) @ self.prompts[a].T
                labels = torch.from_numpy(d.labels).long()
                acc[a] = float((logits.argmax(-1) == labels).float().mean())
                logp[a] = float(logits.log_softmax(-1).gather(1, labels[:, None]).mean())
        return acc, logp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--top-vectors", type=int, default=4, help="singular vectors per head for its label")
    parser.add_argument("--per-value", type=int, default=40, help="zero-shot scenes per attribute value")
    parser.add_argument("--min-drop", type=float, default=0.05, help="nats of correct-prompt log-probability")
    parser.add_argument("--margin", type=float, default=1.5)
    args = parser.parse_args()
    start = time.perf_counter()
    model = sl.load_clip(args.model)
    concepts = sl.ConceptDictionary.from_vocab(model, "toy", progress=False)
    stats, results = {}, {}
    for method, lam in METHODS:
        results[method] = sl.explain_heads(model, concepts, k=args.k, lam=lam, method=method, progress=False)
        stats[method] = selection_stats(results[method], concepts)
    print(f"{'method':<8}{'fidelity':>10}{'cosine':>9}{'coherence':>11}{'purity':>9}")
    for method, s in stats.items():
        print(f"{method:<8}{s['fidelity']:>10.3f}{s['cosine']:>9.3f}{s['coherence']:>11.3f}{s['attribute_purity']:>9.3f}")

    labels = head_labels(results["comp"], args.top_vectors)
    enriched = head_labels(results["comp"], args.top_vectors, family_prior(concepts))
    zs = ZeroShot(model, args.per_value)
    base_acc, base = zs.evaluate()
    print("zero-shot accuracy (no ablation): " + ", ".join(f"{a} {v:.2f}" for a, v in base_acc.items()))
    agree, agree_enriched, clear = 0, 0, 0
    rows = []
    for (layer, head), label in labels.items():
        acc, logp = zs.evaluate((layer, head))
        drops = {a: base[a] - v for a, v in logp.items()}
        ranked = sorted(drops.items(), key=lambda kv: -kv[1])
        (top_attr, top_drop), (_, second) = ranked[0], ranked[1]
        is_clear = top_drop >= args.min_drop and top_drop >= args.margin * max(second, 0.0)
        clear += is_clear
        agree += is_clear and label == top_attr
        agree_enriched += is_clear and enriched[(layer, head)] == top_attr
        rows.append((layer, head, label, enriched[(layer, head)], top_attr, top_drop,
                     base_acc[top_attr] - acc[top_attr], is_clear))
    print(f"{'head':<8}{'SITH label':<12}{'enriched':<12}{'causal':<12}{'dlogp':>7}{'dacc':>7}  clear")
    for layer, head, label, enr, causal, drop, dacc, is_clear in rows:
        mark = ("agree" if label == causal else "differ") if is_clear else ""
        print(f"L{layer} H{head:<4}{label:<12}{enr:<12}{causal:<12}{drop:>7.3f}{dacc:>7.2f}  {mark}")
    agreement = agree / clear if clear else float("nan")
    print(f"head_label_agreement {agree}/{clear} = {agreement:.3f} (heads with a clear causal attribute)")
    enriched_agreement = agree_enriched / clear if clear else float("nan")
    print(f"with enrichment-over-vocabulary labels: {agree_enriched}/{clear} = {enriched_agreement:.3f}")
    print(json.dumps({
        **{f"{m}_{key}": round(v, 4) for m, s in stats.items() for key, v in s.items()},
        "comp_purity_gt_nnomp": stats["comp"]["attribute_purity"] > stats["nnomp"]["attribute_purity"],
        "comp_fidelity_within_0.1_of_nnomp": stats["nnomp"]["fidelity"] - stats["comp"]["fidelity"] <= 0.1,
        "head_label_agreement": round(agreement, 4),
        "head_label_agreement_enriched": round(enriched_agreement, 4), "clear_heads": clear, "heads": len(rows),
        "labels_by_family": dict(Counter(labels.values())), "enriched_labels_by_family": dict(Counter(enriched.values())),
        "baseline_accuracy": {a: round(v, 3) for a, v in base_acc.items()},
        "k": args.k, "top_vectors": args.top_vectors, "seconds": round(time.perf_counter() - start, 1),
    }))


if __name__ == "__main__":
    main()
