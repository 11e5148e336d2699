"""LUCID's two state-dict layouts, their checks and the conversion between them.

- **Views** (inference, ``LucidSAE``): ``vision.W_enc`` [d_in, d_sae], ``vision.b_enc`` [d_sae],
  ``vision.W_dec`` [d_sae, d_in], ``vision.b_dec`` [d_in], and the same under ``text.``: raw units.
- **Training** (``TrainingLucidSAE``, checkpoints, and LUCID folders saved before the views owned
  their weights): one unit-norm decoder ``W_dec`` [d_sae, d_in] for both modalities and, per
  modality, ``W_enc_m`` [d_in, n_visible], ``b_enc_m``, ``b_dec_m`` and ``scale_m`` in units of
  ``x / scale_m``.

Example:
    >>> from sith_lens.lucid.sae import TrainingLucidSAE, TrainingLucidSAEConfig
    >>> cfg = TrainingLucidSAEConfig(d_in=16, d_sae=64, n_private_vision=8, n_private_text=8)
    >>> raw = raw_state_dict(TrainingLucidSAE(cfg).state_dict(), cfg)
    >>> sorted(raw)[:2]
    ['text.W_dec', 'text.W_enc']
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from sith_lens.checks import check_finite_tensors

from ..sparse import MODALITIES, visible_latents
from .config import LucidShape

_FIX = ". The file is corrupt or belongs to another SAE; save it again with save_model"
_BROKEN = ("the SAE is broken (a diverged training run or a damaged file); train it again or load an earlier "
           "checkpoint")


def check_state_dict(module: nn.Module, state_dict: dict[str, Any], what: str) -> None:
    """Refuse ``state_dict`` unless it holds exactly ``module``'s tensors, in their shapes, all finite."""
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state_dict.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        wrong = sorted(n for n in set(expected) & set(found) if expected[n] != found[n])
        raise ValueError(
            f"{what} weights do not match cfg.json: "
            + "; ".join(p for p in (
                f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else "",
                ", ".join(f"{n} is {found[n]}, expected {expected[n]}" for n in wrong),
            ) if p)
            + _FIX
        )
    check_finite_tensors(state_dict, f"{what} weights", fix=_BROKEN)


def is_normalized_state_dict(state_dict: dict[str, Any]) -> bool:
    """Whether ``state_dict`` is in the training parametrisation: one unit-norm decoder ``W_dec``
    shared by both modalities, and per modality ``W_enc_*`` [d_in, n_visible], ``b_enc_*``,
    ``b_dec_*`` in units of the modality's ``scale_*``."""
    return "W_dec" in state_dict and all(f"scale_{m}" in state_dict for m in MODALITIES)


def raw_state_dict(normalized: dict[str, Tensor], cfg: LucidShape) -> dict[str, Tensor]:
    """The views' raw-unit weights (``vision.W_enc``, ...) from the training parametrisation.

    Inputs are normalised per modality, ``x / scale``, so ``W_enc = W_enc_m / scale``,
    ``W_dec = scale * W_dec_shared``, ``b_dec = scale * b_dec_m``; the encoder columns of the other
    modality's private block are zero."""
    n_visible = {m: cfg.n_shared + getattr(cfg, f"n_private_{m}") for m in MODALITIES}
    expected = {"W_dec": (cfg.d_sae, cfg.d_in), **{name: shape for m in MODALITIES for name, shape in (
        (f"W_enc_{m}", (cfg.d_in, n_visible[m])), (f"b_enc_{m}", (n_visible[m],)), (f"b_dec_{m}", (cfg.d_in,)),
        (f"scale_{m}", ()))}}
    found = {name: tuple(t.shape) for name, t in normalized.items()}
    if found != expected:
        wrong = sorted(set(found) ^ set(expected)) + [n for n in expected if n in found and found[n] != expected[n]]
        raise ValueError(f"LUCID weights (training layout) do not match cfg.json: {wrong} differ from "
                         f"{ {n: expected[n] for n in wrong if n in expected} }" + _FIX)
    check_finite_tensors(normalized, "LUCID weights", fix=_BROKEN)
    raw = {}
    for modality in MODALITIES:
        scale = normalized[f"scale_{modality}"]
        visible = visible_latents(modality, cfg.n_shared, cfg.n_private_vision, cfg.n_private_text)
        visible = visible.to(scale.device)
        W_enc = normalized[f"W_enc_{modality}"] / scale
        b_enc = normalized[f"b_enc_{modality}"]
        raw[f"{modality}.W_enc"] = W_enc.new_zeros(cfg.d_in, cfg.d_sae).index_copy(1, visible, W_enc)  # type: ignore[attr-defined]
        raw[f"{modality}.b_enc"] = b_enc.new_zeros(cfg.d_sae).index_copy(0, visible, b_enc)  # type: ignore[attr-defined]
        raw[f"{modality}.W_dec"] = normalized["W_dec"] * scale
        raw[f"{modality}.b_dec"] = normalized[f"b_dec_{modality}"] * scale
    return {name: t.detach().clone().contiguous() for name, t in raw.items()}
