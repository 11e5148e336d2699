"""SITH on the shipped toy CLIP, every figure next to its baselines, chance and a 95 % interval:
are COMP's explanations purer than simpler pursuits', and do its head labels name what each head
does better than labels that ignore the head?

Explanations (COMP lam = 0.3, NNOMP, top-k; k = 5; every singular vector of every head; items are
singular vectors, resampled by head):
- ``attribute_purity``: share of an explanation's concepts in its dominant attribute family
  ("red circle" counts for colour and shape; everyday distractors for "other"); chance is the purity
  of k concepts drawn at random from the vocabulary. The margin is COMP's over the better of NNOMP
  and top-k, paired per singular vector.
- ``coherence``: mean pairwise cosine of the chosen concepts (centred atoms), same baselines.
- ``fidelity`` (sith_spec §4.2, the paper's: cosine in the residual stream after mapping the code
  back through the projection's pseudo-inverse). Reported per method with its spread, next to the
  same back-map applied to the *exact* target (``fidelity_exact_target``: what a perfect code would
  score) and to a random code (``fidelity_random_code``: chance), so one can see how much of the range
  the methods use. ``joint_cosine``: the code's cosine with its target in the joint space, where
  the pursuit works (it separates the methods; the back-map mostly measures the pseudo-inverse).

Head labels: each head gets the attribute family that carries most sigma * coef in its top
``--top-vectors`` singular vectors' COMP explanations. Its causal attribute is measured on held-out
single-object scenes, for each of ``--eval-seeds``, by mean-ablating the head (its z replaced by the
mean over those scenes, which are the zero-shot classes' own distribution):

- ``direct`` (the headline): only the head's *direct* write to the final residual stream is
  ablated; later layers still see its real output. SITH reads each head's write straight into the
  joint space, so this is the causal notion its labels describe. Measured as the drop in mean
  log-probability of the correct prompt (accuracy rarely moves when one direct path is removed);
- ``total``: the head ablated everywhere, accuracy drop (the earlier headline; it credits a head
  with what later heads do with its output);
- ``total_logprob``: the same as a log-probability drop.

A head is *clear* when its largest drop is at least the threshold and ``--margin`` times the next.
Items are (seed, clear head); the interval resamples heads. Baselines: ``constant`` (the majority
causal label for every head, the best any constant labeller can do) and ``frequency`` (a random
labeller with SITH's own label frequencies over all heads).

    python benchmarks/sith_toy.py            # ~6 min on 2 cores; the last line is JSON
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

import sith_lens as sl
from sith_lens.evidence import compare, format_evidence, label_agreement_scores
from sith_lens.sith import head_svd, joint_readout
from sith_lens.toyworld import VALUES, ToyWorld
from sith_lens.toyworld.vocab import concept_families

EVAL_SEEDS = (777, 6002, 9001)
METHODS = (("comp", 0.3), ("nnomp", 0.0), ("topk", 0.0))


def explanation_items(result, concepts) -> dict[str, np.ndarray]:
    """Per singular vector: purity and coherence of its explanation (NaN where undefined)."""
    atoms = concepts.atoms
    index = {c: concepts.index(c) for c in result.concepts}
    purity, coherence = [], []
    for idx, coef in zip(result.indices.reshape(-1, result.k).tolist(), result.coefs.reshape(-1, result.k).tolist()):
        chosen = [result.concepts[j] for j, c in zip(idx, coef) if c > 0]
        purity.append(set_purity(chosen) if chosen else np.nan)
        coherence.append(set_coherence(atoms[[index[c] for c in chosen]]) if len(chosen) >= 2 else np.nan)
    return {"attribute_purity": np.array(purity), "coherence": np.array(coherence)}


def set_purity(chosen: list[str]) -> float:
    counts = Counter(f for c in chosen for f in concept_families(c))
    return counts.most_common(1)[0][1] / len(chosen)


def set_coherence(emb: torch.Tensor) -> float:
    sims = emb @ emb.T
    n = len(emb)
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


def random_sets(concepts, k: int, n: int = 4000, seed: int = 0) -> dict[str, float]:
    """Chance: purity and coherence of k distinct concepts drawn uniformly from the vocabulary."""
    g = torch.Generator().manual_seed(seed)
    purity, coherence = [], []
    for _ in range(n):
        pick = torch.randperm(len(concepts), generator=g)[:k]
        purity.append(set_purity([concepts.concepts[i] for i in pick.tolist()]))
        coherence.append(set_coherence(concepts.atoms[pick]))
    return {"attribute_purity": float(np.mean(purity)), "coherence": float(np.mean(coherence))}


def fidelity_references(model, layers, concepts, k: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The paper's back-map applied to the exact targets (a perfect code) and to random codes of k
    concepts with equal weights (chance), per singular vector."""
    _, _, Vh = head_svd(model, layers)
    readout = joint_readout(model)
    v = Vh.reshape(-1, Vh.shape[-1])
    z = readout(v)
    exact = (readout.to_residual(z) * F.normalize(v, dim=-1)).sum(-1)
    g = torch.Generator().manual_seed(seed)
    pick = torch.stack([torch.randperm(len(concepts), generator=g)[:k] for _ in range(len(v))])
    random_code = F.normalize(concepts.atoms[pick].sum(1), dim=-1)
    chance = (readout.to_residual(random_code) * F.normalize(v, dim=-1)).sum(-1)
    return {"fidelity_exact_target": exact.numpy(), "fidelity_random_code": chance.numpy()}


def head_labels(result, top_vectors: int) -> dict[tuple[int, int], str]:
    """Dominant attribute family per head, by sigma * coef over its top singular vectors."""
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
            labels[(layer, h)] = score.most_common(1)[0][0] if score else "other"
    return labels


class ZeroShot:
    """Zero-shot accuracy per attribute on one seed's single-object scenes, with optional head ablation."""

    def __init__(self, model, per_value: int, seed: int):
        self.model = model
        world = ToyWorld(seed=seed)
        self.sets = {a: world.attribute_set(a, per_value) for a in VALUES}
        with torch.no_grad():
            self.prompts = {a: model.encode_text(list(d.prompts), normalize=True) for a, d in self.sets.items()}
            names = {f"blocks.{l}.attn.hook_z" for l in range(model.vision.cfg.n_layers)}
            sums, count = {}, 0
            for d in self.sets.values():  # the mean over these scenes: the zero-shot classes' own distribution
                _, cache = model.vision.run_with_cache(d.batch.pixels, names_filter=lambda n: n in names)
                for l in range(model.vision.cfg.n_layers):
                    z = cache[f"blocks.{l}.attn.hook_z"].sum(0)
                    sums[l] = z if l not in sums else sums[l] + z
                count += d.batch.pixels.shape[0]
            self.mean_z = {l: s / count for l, s in sums.items()}  # [pos, n_heads, d_head]

    def evaluate(
        self, ablate: tuple[int, int] | None = None, direct: bool = False
    ) -> tuple[dict[str, float], dict[str, float]]:
        """``(accuracy, mean log-probability of the correct prompt)`` per attribute.

        ``ablate=(layer, head)`` mean-ablates that head: everywhere (total effect), or with
        ``direct=True`` only in the final residual stream, so later layers still see the head's
        real output (its direct effect, the path SITH's read-out describes).
        """
        hooks = []
        if ablate is not None:
            layer, head = ablate
            W_O = self.model.vision.W_O[layer, head]
            last = f"blocks.{self.model.vision.cfg.n_layers - 1}.hook_resid_post"
            delta = {}

            def mean_ablate(z, hook):
                if direct:  # remember the change to this head's output, apply it at the end only
                    delta["d"] = (self.mean_z[layer][:, head] - z[:, :, head]) @ W_O
                    return z
                z[:, :, head] = self.mean_z[layer][:, head]
                return z

            hooks = [(f"blocks.{layer}.attn.hook_z", mean_ablate)]
            if direct:
                hooks.append((last, lambda resid, hook: resid + delta["d"]))
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


    @torch.no_grad()
    def direct_logprobs(self, heads: list[tuple[int, int]]) -> dict[tuple[int, int], dict[str, float]]:
        """Per head, the mean log-probability of the correct prompt per attribute with the head's
        direct write mean-ablated: one forward pass for all heads (the CLS token's final residual
        plus the change to that head's output, through ``ln_final`` and the projection). Checked
        against ``evaluate(head, direct=True)`` on the first head."""
        vision = self.model.vision
        last = f"blocks.{vision.cfg.n_layers - 1}.hook_resid_post"
        names = {last} | {f"blocks.{l}.attn.hook_z" for l, _ in heads}
        scale = float(self.model.logit_scale.exp())
        out: dict[tuple[int, int], dict[str, float]] = {key: {} for key in heads}
        for a, d in self.sets.items():
            _, cache = vision.run_with_cache(d.batch.pixels, names_filter=lambda n: n in names, return_type=None)
            resid = cache[last][:, :1]  # the CLS token, [B, 1, d]
            labels = torch.from_numpy(d.labels).long()
            for l, h in heads:
                z = cache[f"blocks.{l}.attn.hook_z"][:, :1, h]
                img = vision.ln_final.full(resid + (self.mean_z[l][:1, h] - z) @ vision.W_O[l, h])[:, 0] @ vision.W_proj
                logits = scale * (img / img.norm(dim=-1, keepdim=True)) @ self.prompts[a].T
                out[(l, h)][a] = float(logits.log_softmax(-1).gather(1, labels[:, None]).mean())
        check = self.evaluate(heads[0], direct=True)[1]
        if vision.cfg.pooling != "cls" or vision.cfg.ln_after_pool or vision.cfg.proj_bias or any(
                abs(check[a] - out[heads[0]][a]) > 1e-3 for a in check):
            raise RuntimeError("the one-pass direct effect disagrees with the hooked one; use evaluate(direct=True)")
        return out


#: causal measures: name -> (ablate the direct path only, use accuracy (else log-probability))
MEASURES = {"direct": (True, False), "total": (False, True), "total_logprob": (False, False)}  # direct: log-prob only


def causal_attributes(model, heads, per_value: int, seed: int, thresholds: dict[str, float],
                      margin: float) -> dict[str, dict[tuple[int, int], tuple[str, float]]]:
    """Per measure, the clear heads of this seed's scenes: head -> (causal attribute, its drop)."""
    zs = ZeroShot(model, per_value, seed)
    base_acc, base_logp = zs.evaluate()
    clear: dict[str, dict] = {m: {} for m in MEASURES}
    direct_logp = zs.direct_logprobs(heads)
    for key in heads:
        total = zs.evaluate(key)
        for name, (direct, accuracy) in MEASURES.items():
            after = direct_logp[key] if direct else (total[0] if accuracy else total[1])
            base = base_acc if accuracy else base_logp
            ranked = sorted(((a, base[a] - v) for a, v in after.items()), key=lambda kv: -kv[1])
            (attr, drop), (_, second) = ranked[0], ranked[1]
            if drop >= thresholds[name] and drop >= margin * max(second, 0.0):
                clear[name][key] = (attr, drop)
    return clear


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--top-vectors", type=int, default=4, help="singular vectors per head for its label")
    parser.add_argument("--per-value", type=int, default=20, help="zero-shot scenes per attribute value and seed")
    parser.add_argument("--eval-seeds", default=",".join(map(str, EVAL_SEEDS)))
    parser.add_argument("--min-drop", type=float, default=0.05, help="nats of correct-prompt log-probability")
    parser.add_argument("--min-drop-accuracy", type=float, default=0.05, help="accuracy points (0.05 = 5)")
    parser.add_argument("--margin", type=float, default=1.5)
    args = parser.parse_args()
    seeds = [int(s) for s in args.eval_seeds.split(",")]
    start = time.perf_counter()
    model = sl.load_clip(args.model)
    concepts = sl.ConceptDictionary.from_vocab(model, "toy", progress=False)
    results = {m: sl.explain_heads(model, concepts, k=args.k, lam=lam, method=m, progress=False) for m, lam in METHODS}
    out: dict = {}

    # -- explanations: purity and coherence, paired per singular vector, resampled by head ------------
    items = {m: explanation_items(r, concepts) for m, r in results.items()}
    r = results["comp"]
    head_of_vector = np.repeat(np.arange(len(r.layers) * r.n_heads), r.singular_values.shape[-1])
    chance = random_sets(concepts, args.k)
    for metric in ("attribute_purity", "coherence"):
        defined = np.all([~np.isnan(items[m][metric]) for m in results], axis=0)
        ev = compare({m: items[m][metric][defined] for m in results}, "comp", margin_against=["nnomp", "topk"],
                     chance=chance[metric], groups=head_of_vector[defined])
        print(format_evidence(f"{metric} over {int(defined.sum())} singular vectors", ev, "COMP (lam 0.3)"))
        out[metric] = ev.to_json()
    out["comp_attribute_purity"] = out["attribute_purity"]["value"]
    out["comp_purity_margin"] = out["attribute_purity"]["margin"]

    # -- fidelity: where the methods sit between a random code and the exact target --------------------
    refs = fidelity_references(model, r.layers, concepts, args.k)
    fid = {m: res.fidelity.reshape(-1).numpy().astype(np.float64) for m, res in results.items()}
    fid.update(refs)
    ev = compare(fid, "comp", margin_against=["nnomp", "topk"], chance=refs["fidelity_random_code"],
                 groups=head_of_vector)
    print(format_evidence("fidelity (paper's back-map)", ev, "COMP (lam 0.3)"))
    spread = {m: {"mean": round(float(v.mean()), 4), "std": round(float(v.std()), 4),
                  "quartiles": [round(float(q), 4) for q in np.percentile(v, [25, 50, 75])]} for m, v in fid.items()}
    for m, s in spread.items():
        print(f"  {m:<24} mean {s['mean']:.3f}  std {s['std']:.3f}  quartiles {s['quartiles']}")
    out["fidelity"] = {**ev.to_json(), "spread": spread}
    cos = {m: res.cosine.reshape(-1).numpy().astype(np.float64) for m, res in results.items()}
    ev = compare(cos, "comp", margin_against=["nnomp", "topk"], groups=head_of_vector)
    print(format_evidence("joint-space cosine of the code with its target", ev, "COMP (lam 0.3)"))
    out["joint_cosine"] = ev.to_json()

    # -- head labels against what each head does ------------------------------------------------------
    labels = head_labels(r, args.top_vectors)
    pool = list(labels.values())
    thresholds = {"direct": args.min_drop, "total": args.min_drop_accuracy, "total_logprob": args.min_drop}
    per_seed = {s: causal_attributes(model, list(labels), args.per_value, s, thresholds, args.margin) for s in seeds}
    print(f"SITH labels over {len(labels)} heads: {dict(Counter(pool))}")
    for name in MEASURES:
        rows = [(s, key, attr) for s in seeds for key, (attr, _) in per_seed[s][name].items()]
        if not rows:
            print(f"head labels, {name}: no clear head on any seed")
            out[f"head_label_{name}"] = None
            continue
        scores = label_agreement_scores([labels[key] for _, key, _ in rows], [a for _, _, a in rows], pool)
        groups = np.array([key[0] * 100 + key[1] for _, key, _ in rows])
        ev = compare(scores, "labeller", margin_against=["constant", "frequency"], chance=scores["frequency"],
                     groups=groups, seeds=np.array([s for s, _, _ in rows]))
        print(format_evidence(f"head-label agreement, {name} effect ({len(rows)} (seed, clear head) items, "
                              f"{len({k for _, k, _ in rows})} distinct heads)", ev, "SITH labels"))
        for s in seeds:
            print(f"    seed {s}: " + ", ".join(f"L{k[0]}H{k[1]} {a} (SITH {labels[k]})"
                                               for k, (a, _) in sorted(per_seed[s][name].items())))
        out[f"head_label_{name}"] = {**ev.to_json(), "causal_labels": dict(Counter(a for _, _, a in rows)),
                                     "clear_per_seed": {str(s): len(per_seed[s][name]) for s in seeds}}
    headline = out.get("head_label_direct") or {}
    out.update({
        "head_label_agreement": headline.get("value"),
        "head_label_agreement_ci95": headline.get("ci95"),
        "head_label_constant_baseline": headline.get("baselines", {}).get("constant", {}).get("value"),
        "head_label_frequency_baseline": headline.get("baselines", {}).get("frequency", {}).get("value"),
        "head_label_margin": headline.get("margin"),
        "head_label_agreement_total": (out.get("head_label_total") or {}).get("value"),
        "labels_by_family": dict(Counter(pool)), "eval_seeds": seeds, "k": args.k, "top_vectors": args.top_vectors,
        "min_drop_logprob": args.min_drop, "min_drop_accuracy": args.min_drop_accuracy, "margin": args.margin,
        "seconds": round(time.perf_counter() - start, 1),
    })
    print(json.dumps(out))


if __name__ == "__main__":
    main()
