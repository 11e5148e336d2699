"""Scores of a trained LUCID SAE on held-out pairs: reconstruction per modality, sparsity, dead
latents, and how well shared codes ground words in patches (the pointing game).

The SAE is duck-typed: anything with ``vision``/``text`` views that ``encode``/``decode``
(a LucidSAE) and a config with ``d_sae``, ``n_private_vision``, ``n_private_text``.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .data import PairedActivations, PairedBatch
from .sparse import fvu, latent_slices


def n_shared(sae: Any) -> int:
    cfg = sae.cfg
    return cfg.d_sae - cfg.n_private_vision - cfg.n_private_text


@torch.no_grad()
def encode_pairs(sae: Any, acts: PairedActivations, max_pairs: int = 4096) -> tuple[PairedBatch, Tensor, Tensor]:
    """The first ``max_pairs`` pairs as a batch, with the codes of every patch [P, N, d_sae] and
    every token slot [P, L, d_sae] (zero on empty slots)."""
    batch = acts.pair_batch(torch.arange(min(len(acts), max_pairs)))
    patch_codes = sae.vision.encode(batch.patches)
    token_codes = sae.text.encode(batch.tokens) * batch.token_mask[..., None]
    return batch, patch_codes, token_codes


@torch.no_grad()
def modality_rows(sae: Any, acts: PairedActivations, max_pairs: int = 4096) -> tuple[PairedBatch, dict[str, tuple[Tensor, Tensor]]]:
    """The first ``max_pairs`` pairs as a batch, and per modality its activation rows [rows, d_in]
    (every patch; every real token) with their codes [rows, d_sae]."""
    batch, patch_codes, token_codes = encode_pairs(sae, acts, max_pairs)
    return batch, {"vision": (batch.patch_rows, patch_codes.reshape(-1, patch_codes.shape[-1])),
                   "text": (batch.token_rows, token_codes[batch.token_mask])}


@torch.no_grad()
def reconstruction_report(sae: Any, acts: PairedActivations, max_pairs: int = 4096) -> dict[str, Any]:
    """FVU and mean L0 per modality, dead latents per block (never firing on these pairs), and the
    share of each modality's reconstructed signal that the shared block carries.

    Example:
        >>> import sith_lens as sl
        >>> from sae_lens import SAE
        >>> sae = SAE.from_pretrained("sith-lens-toy-lucid", "final")
        >>> holdout = sl.collect_toy_activations(sl.load_clip("toy"), 64, seed=22, progress=False)
        >>> 0.0 < reconstruction_report(sae, holdout)["fvu_vision"] < 1.0
        True
    """
    batch, rows = modality_rows(sae, acts, max_pairs)
    blocks = latent_slices(n_shared(sae), sae.cfg.n_private_vision, sae.cfg.n_private_text)
    report: dict[str, Any] = {}
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    for modality, (x, codes) in rows.items():
        view = getattr(sae, modality)
        recon = view.decode(codes)
        report[f"fvu_{modality}"] = round(float(fvu(x, recon)), 4)
        report[f"l0_{modality}"] = round(float((codes != 0).sum(-1).float().mean()), 2)
        shared = codes.clone()
        shared[:, blocks["shared"].stop:] = 0
        shared_part = shared @ view.W_dec
        private_part = (codes - shared) @ view.W_dec
        energy = shared_part.pow(2).sum() / (shared_part.pow(2).sum() + private_part.pow(2).sum()).clamp_min(1e-12)
        report[f"shared_energy_{modality}"] = round(float(energy), 3)
        fired |= (codes != 0).any(0).cpu()
    report["dead"] = {name: int((~fired[s]).sum()) for name, s in blocks.items()}
    report["pairs"] = len(batch)
    return report


def word_heatmaps(patch_codes: Float[Tensor, "P N f"], token_codes: Float[Tensor, "P L f"]) -> Float[Tensor, "P L N"]:
    """For every token slot, its heat over its own image's patches: the dot product of their shared codes."""
    return torch.einsum("pnf,plf->pln", patch_codes, token_codes)


@torch.no_grad()
def pointing_game(sae: Any, acts: PairedActivations, max_pairs: int = 4096) -> dict[str, Any]:
    """For each caption word that names an attribute of one object (toy-world ground truth), is the
    peak of its shared-code heat map on that object? A word whose shared code is empty, or
    overlaps no patch's, counts as a miss (``pointing.score_heatmap``; ``pointing.pointing_table``
    puts the figure next to chance and word-agnostic maps).

    Returns the overall hit rate, the rate per attribute, and how many words had any heat.

    Example:
        >>> import sith_lens as sl
        >>> from sae_lens import SAE
        >>> sae = SAE.from_pretrained("sith-lens-toy-lucid", "final")
        >>> holdout = sl.collect_toy_activations(sl.load_clip("toy"), 64, seed=22, progress=False)
        >>> 0.0 <= pointing_game(sae, holdout)["pointing_game"] <= 1.0
        True
    """
    from ..toyworld.attributes import ATTRIBUTES
    from .pointing import pointing_words, score_heatmap, word_heat

    batch, patch_codes, token_codes = encode_pairs(sae, acts, max_pairs)
    words = pointing_words(acts.subset(torch.arange(len(batch))) if len(batch) < len(acts) else acts,
                           width=batch.tokens.shape[1])
    s = n_shared(sae)
    heat = word_heat(word_heatmaps(patch_codes[..., :s], token_codes[..., :s]), words)
    hit = score_heatmap(heat, words).hit
    per_attribute = {
        name: round(float(hit[words.attribute == i].float().mean()), 3)
        for i, name in enumerate(ATTRIBUTES) if bool((words.attribute == i).any())
    }
    return {
        "pointing_game": round(float(hit.float().mean()), 4),
        "per_attribute": per_attribute,
        "words": int(len(hit)),
        "words_with_heat": round(float((heat.max(-1).values > 0).float().mean()), 3),
    }
