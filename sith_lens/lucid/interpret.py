"""Reading a LUCID dictionary without looking at it: automatic labels by term clustering, the
top-activating patches of each shared latent, and patch heat maps for a latent or a word.

Labels (lucid_spec.md §6, our reconstruction): for each shared latent, take the caption tokens
that fire it most, merge word pieces into words, drop function words, weight each term by its
summed activation, embed the terms with the model's text tower (centred over all the terms, as
SITH centres its concept atoms) and cluster them (average linkage, cosine distance below
``threshold``). The label is the heaviest term of the heaviest cluster; its
purity is that cluster's share of the latent's weight; its category comes from a small lexicon.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from ..atomic import write_text_atomic
from ..concepts import center_atoms
from .data import PairedActivations
from .evaluate import encode_pairs, n_shared
from .terms import FUNCTION_WORDS, normalize_term

#: Categories of label words: the toy world's attribute vocabulary plus common English words.
#: A content word that none of these lists holds is an "object".
CATEGORY_LEXICON: dict[str, frozenset[str]] = {
    "color": frozenset("red green blue yellow purple orange cyan pink black white gray grey brown "
                       "golden silver dark light colorful".split()),
    "shape": frozenset("circle square triangle diamond cross star round rectangle oval".split()),
    "size": frozenset("small large big little tiny huge tall short long".split()),
    "position": frozenset("top bottom left right center middle above below front behind corner "
                          "background foreground".split()),
    "texture": frozenset("solid striped dotted spotted plain patterned wooden metal furry".split()),
}


def category(term: str) -> str:
    """The category of a label term ("object" when no lexicon list holds it).

    Example:
        >>> category("red"), category("striped"), category("dog")
        ('color', 'texture', 'object')
    """
    for name, words in CATEGORY_LEXICON.items():
        if term in words:
            return name
    return "object"


def slot_words(pieces: Sequence[str]) -> list[str]:
    """The whole word each token piece belongs to, for SentencePiece ("▁bath", "room"), byte-level
    BPE ("Ġbath"), CLIP BPE ("bath", "room</w>") and word-level tokenizers.

    Example:
        >>> slot_words(["▁a", "▁bath", "room"])
        ['a', 'bathroom', 'bathroom']
    """
    if any(p.endswith("</w>") for p in pieces):  # CLIP BPE: a word ends with </w>
        words, current = [], []
        for piece in pieces:
            current.append(piece)
            if piece.endswith("</w>"):
                words.append(current)
                current = []
        if current:
            words.append(current)
    elif any(p[:1] in ("▁", "Ġ") for p in pieces):  # a word starts with a marker
        words = []
        for piece in pieces:
            if piece[:1] in ("▁", "Ġ") or not words:
                words.append([piece])
            else:
                words[-1].append(piece)
    else:  # word-level
        words = [[p] for p in pieces]
    out = []
    for group in words:
        term = normalize_term("".join(group))
        out.extend([term] * len(group))
    return out


@dataclass
class LatentLabel:
    """What term clustering says about one shared latent."""

    latent: int
    label: str | None
    #: Share of the latent's term weight held by the label's cluster (0 when unlabelled).
    purity: float
    category: str | None
    #: The label's cluster, heaviest term first, and every term with its weight.
    cluster: list[str] = field(default_factory=list)
    terms: dict[str, float] = field(default_factory=dict)
    #: Top-activating patches: (image index into the activations' images, row, column, activation).
    top_patches: list[tuple[int, int, int, float]] = field(default_factory=list)
    #: How often the latent fires on patches and on tokens (share of rows).
    patch_frequency: float = 0.0
    token_frequency: float = 0.0


@dataclass
class LucidReport:
    """Labels of the shared latents of a LUCID SAE, and what they were computed from."""

    labels: list[LatentLabel]
    settings: dict[str, Any]

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON, atomically."""
        return write_text_atomic(path, json.dumps({"settings": self.settings, "labels": [asdict(x) for x in self.labels]}))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> LucidReport:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        labels = [LatentLabel(**{**x, "top_patches": [tuple(p) for p in x["top_patches"]]}) for x in data["labels"]]
        return cls(labels, data["settings"])

    def label_of(self, latent: int) -> LatentLabel | None:
        return next((x for x in self.labels if x.latent == latent), None)


def cluster_terms(
    terms: Sequence[str], weights: Sequence[float], embeddings: Float[Tensor, "T D"], threshold: float
) -> list[list[int]]:
    """Average-linkage agglomerative clustering of terms by cosine distance; merging stops when
    the closest clusters are ``threshold`` or farther apart. Returns clusters as index lists,
    heaviest cluster first, each heaviest term first."""
    sim = F.normalize(embeddings.float(), dim=-1) @ F.normalize(embeddings.float(), dim=-1).T
    clusters = [[i] for i in range(len(terms))]
    while len(clusters) > 1:
        best, pair = -2.0, None
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                s = float(sim[clusters[i]][:, clusters[j]].mean())
                if s > best:
                    best, pair = s, (i, j)
        if pair is None or 1.0 - best >= threshold:
            break
        i, j = pair
        clusters[i] = clusters[i] + clusters.pop(j)
    for c in clusters:
        c.sort(key=lambda t: (-weights[t], terms[t]))
    clusters.sort(key=lambda c: (-sum(weights[t] for t in c), terms[c[0]]))
    return clusters


@torch.no_grad()
def label_latents(
    sae: Any,
    acts: PairedActivations,
    model: Any,
    n_top_tokens: int = 200,
    n_top_patches: int = 16,
    threshold: float = 0.35,
    min_purity: float = 0.4,
    max_pairs: int = 4096,
    progress: bool = False,
) -> LucidReport:
    """Label every shared latent that fires on text by term clustering, and list its top patches.

    Args:
        model: the HookedCLIP the activations come from; its text tower embeds the terms.
        n_top_tokens: strongest token activations per latent that vote for its label.
        threshold: cosine distance under which clusters merge.
        min_purity: below this the latent is left unlabelled (polysemantic).
        progress: show a progress bar over the latents (the clustering is per latent).

    Example:
        >>> import sith_lens as sl
        >>> from sae_lens import SAE
        >>> sae = SAE.from_pretrained("sith-lens-toy-lucid", "final")
        >>> holdout = sl.collect_toy_activations(sl.load_clip("toy"), 64, seed=22, progress=False)
        >>> report = label_latents(sae, holdout, sl.load_clip("toy"), progress=False)
        >>> report.to_json("lucid-labels.json")
        PosixPath('lucid-labels.json')
    """
    batch, _, token_codes = encode_pairs(sae, acts, max_pairs)
    s = n_shared(sae)
    words = [slot_words(row) for row in acts.token_strings[: len(batch)]]
    p_idx, l_idx = batch.token_mask.nonzero(as_tuple=True)
    token_terms = [words[p][l] for p, l in zip(p_idx.tolist(), l_idx.tolist())]
    codes = token_codes[p_idx, l_idx, :s]  # [T, s]
    # patches of each distinct image once (an image with several captions appears in several pairs)
    images = acts.patches[: int(acts.image_index[: len(batch)].max()) + 1].float()
    patch_rows = sae.vision.encode(images)[..., :s].reshape(-1, s)
    grid = acts.grid

    votes: dict[int, dict[str, float]] = {}
    top = codes.topk(min(n_top_tokens, len(codes)), dim=0)
    for latent in range(s):
        weights: dict[str, float] = defaultdict(float)
        for value, row in zip(top.values[:, latent].tolist(), top.indices[:, latent].tolist()):
            term = token_terms[row]
            if value > 0 and term and term not in FUNCTION_WORDS:
                weights[term] += value
        votes[latent] = dict(weights)
    vocabulary = sorted({t for v in votes.values() for t in v})
    # centred as SITH centres concept atoms: text embeddings of bare words sit in a narrow cone,
    # where every pair of words looks alike
    term_embeddings = center_atoms(model.encode_text(vocabulary).float())[0] if len(vocabulary) > 1 else torch.ones(len(vocabulary), 1)
    position = {t: i for i, t in enumerate(vocabulary)}

    patch_top = patch_rows.topk(min(n_top_patches, len(patch_rows)), dim=0)
    from tqdm.auto import tqdm

    labels = []
    for latent in tqdm(range(s), desc="LUCID labels", unit="latent", disable=not progress):
        terms = sorted(votes[latent], key=lambda t: (-votes[latent][t], t))
        entry = LatentLabel(
            latent, None, 0.0, None,
            patch_frequency=round(float((patch_rows[:, latent] > 0).float().mean()), 4),
            token_frequency=round(float((codes[:, latent] > 0).float().mean()), 4) if len(codes) else 0.0,
        )
        entry.top_patches = [
            (int(r // (grid * grid)), int(r % (grid * grid)) // grid, int(r % grid), round(v, 4))
            for v, r in zip(patch_top.values[:, latent].tolist(), patch_top.indices[:, latent].tolist()) if v > 0
        ]
        if terms:
            w = [votes[latent][t] for t in terms]
            clusters = cluster_terms(terms, w, term_embeddings[[position[t] for t in terms]], threshold)
            total = sum(w)
            best = clusters[0]
            entry.purity = round(sum(w[t] for t in best) / total, 4)
            entry.cluster = [terms[t] for t in best]
            entry.terms = {t: round(votes[latent][t], 4) for t in terms[:20]}
            if entry.purity >= min_purity:
                entry.label = terms[best[0]]
                entry.category = category(entry.label)
        labels.append(entry)
    settings = {"n_top_tokens": n_top_tokens, "n_top_patches": n_top_patches, "threshold": threshold,
                "min_purity": min_purity, "pairs": len(batch), "n_shared": s}
    return LucidReport(labels, settings)


@torch.no_grad()
def latent_heatmap(sae: Any, patch_acts: Float[Tensor, "N d"], latent: int) -> Float[Tensor, "g g"]:
    """One latent's activation over an image's patch grid.

    Example:
        >>> import torch, sith_lens as sl
        >>> from sae_lens import SAE
        >>> from sith_lens.lucid.collect import image_patch_activations
        >>> sae = SAE.from_pretrained("sith-lens-toy-lucid", "final")
        >>> pixels = torch.randn(1, 3, 64, 64)
        >>> latent_heatmap(sae, image_patch_activations(sl.load_clip("toy"), pixels)[0], latent=17).shape
        torch.Size([8, 8])
    """
    codes = sae.vision.encode(patch_acts)
    if not 0 <= latent < codes.shape[-1]:
        raise ValueError(f"latent must be in [0, {codes.shape[-1]}), got {latent}")
    grid = int(round(patch_acts.shape[0] ** 0.5))
    return codes[:, latent].reshape(grid, grid)


@torch.no_grad()
def word_heatmap(
    sae: Any, patch_acts: Float[Tensor, "N d"], token_acts: Float[Tensor, "L d"], slots: Sequence[int]
) -> Float[Tensor, "g g"]:
    """Where the words at ``slots`` of a caption land on the image: the dot product of their summed
    shared codes with each patch's shared code.

    Example:
        >>> import sith_lens as sl
        >>> from sae_lens import SAE
        >>> sae = SAE.from_pretrained("sith-lens-toy-lucid", "final")
        >>> acts = sl.collect_toy_activations(sl.load_clip("toy"), 2, progress=False)
        >>> word_heatmap(sae, acts.patches[0], acts.tokens[0], slots=[2]).shape     # the caption's third word
        torch.Size([8, 8])
    """
    s = n_shared(sae)
    word = sae.text.encode(token_acts[list(slots)])[:, :s].sum(0)
    heat = sae.vision.encode(patch_acts)[:, :s] @ word
    grid = int(round(patch_acts.shape[0] ** 0.5))
    return heat.reshape(grid, grid)
