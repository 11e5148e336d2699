"""Base vs fine-tuned: how each head's value-output matrix moved (sith_spec §6, our reconstruction [R]).

Per head, on the folded and centred ``W_VO`` of both models:

* **principal angles** between the top-``r`` right singular subspaces (what the head writes): all
  near 0 means the basis is stable;
* **singular-value ratios** ``sigma_ft / sigma_base`` for matched vectors, each base vector matched
  to the fine-tuned vector with the largest ``|cos|`` (reweighting of a stable basis shows as ratios
  away from 1 with small angles);
* **SITH of the update**: the SVD of ``delta W_VO = W_VO^ft - W_VO^base`` (taken from the factors,
  rank <= 2 d_head) and a COMP explanation of its top singular vectors, read out through the
  fine-tuned model.

``compare`` returns a ``Comparison``; the models are duck-typed ``HookedCLIP``s.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .atomic import write_text_atomic
from .concepts import ConceptDictionary
from .defaults import COMPARE, EXPLAIN
from .model import CLIPLike, VisionTowerLike, resolve_layers, vision_tower
from .sith import (
    SITHResult, explain_vectors, head_vo_factors, joint_readout, result_from_codes,
)
from .svd import factored_svd

COMPARISON_FORMAT = "sith-lens/comparison/1"


def principal_angles(
    A: Float[Tensor, "... r d"], B: Float[Tensor, "... r d"]
) -> Float[Tensor, "... r"]:
    """Principal angles in degrees, ascending, between the row spaces of ``A`` and ``B`` (orthonormal
    rows). Small angles come from the sines, so identical subspaces give 0 to float64 precision.

    Example:
        >>> principal_angles(torch.eye(3)[:2], torch.eye(3)[:2])
        tensor([0., 0.], dtype=torch.float64)
    """
    A, B = A.double(), B.double()
    cos = torch.linalg.svdvals(A @ B.transpose(-2, -1)).clamp(0, 1)  # descending -> angles ascending
    residual = B - (B @ A.transpose(-2, -1)) @ A  # B's rows minus their projection on A's span
    sin = torch.linalg.svdvals(residual).clamp(0, 1).flip(-1)  # ascending, pairs with descending cos
    angles = torch.where(cos > 0.7071, torch.arcsin(sin), torch.arccos(cos))
    return torch.rad2deg(angles)


def match_vectors(
    base: Float[Tensor, "... r d"], tuned: Float[Tensor, "... R d"]
) -> tuple[Int[Tensor, "... r"], Float[Tensor, "... r"]]:
    """For each base row, the tuned row with the largest ``|cos|`` and that ``|cos|``.

    Example:
        >>> base = torch.eye(4)[:2]                          # rows: e0, e1
        >>> tuned = torch.eye(4)[[1, 0, 2]]                  # the same directions, reordered, plus e2
        >>> idx, cos = match_vectors(base, tuned)
        >>> idx.tolist(), cos.tolist()
        ([1, 0], [1.0, 1.0])
    """
    sims = (base.double() @ tuned.double().transpose(-2, -1)).abs()
    cos, idx = sims.max(-1)
    return idx, cos


@dataclass
class Comparison:
    """Per-head comparison of a base and a fine-tuned vision tower over ``layers``.

    Example:
        >>> import sith_lens as sl
        >>> base = sl.load_clip("toy")
        >>> concepts = sl.ConceptDictionary.from_vocab(base, "toy")
        >>> result = sl.explain_heads(base, concepts, layers=[-1], progress=False)
        >>> edited = sl.suppress(base, result, ["red"])                   # stands in for a fine-tuned model
        >>> cmp = sl.compare(base, edited, concepts, layers=[-2, -1], progress=False)
        >>> cmp.layers, round(float(cmp.angles[0].max()), 3)             # layer 4 was not edited
        ([4, 5], 0.0)
        >>> print(cmp.delta.head(-1, 3))                                  # what the update to L-1 H3 writes
        L5 H3
        ...
    """

    base_name: str
    finetuned_name: str
    layers: list[int]
    top: int
    """``r``: how many leading singular vectors were compared."""
    angles: Float[Tensor, "n_sel n_heads top"]
    """Principal angles (degrees) between the top-``r`` right singular subspaces, ascending."""
    matched: Int[Tensor, "n_sel n_heads top"]
    """Index of the fine-tuned singular vector matched to each base vector."""
    match_cosine: Float[Tensor, "n_sel n_heads top"]
    """|cos| of each match."""
    sv_ratio: Float[Tensor, "n_sel n_heads top"]
    """sigma_ft[matched] / sigma_base for each of the top-``r`` base vectors."""
    relative_change: Float[Tensor, "n_sel n_heads"]
    """||delta W_VO||_F / ||W_VO^base||_F."""
    delta: SITHResult | None
    """SITH explanation of the top singular vectors of delta W_VO (None without a dictionary)."""

    def summary(self) -> list[dict[str, Any]]:
        """One row per layer: mean and max angle, mean |log2 ratio|, mean relative change."""
        rows = []
        for p, layer in enumerate(self.layers):
            rows.append({
                "layer": layer,
                "mean_angle_deg": float(self.angles[p].mean()), "max_angle_deg": float(self.angles[p].max()),
                "mean_abs_log2_sv_ratio": float(self.sv_ratio[p].clamp_min(1e-12).log2().abs().mean()),
                "mean_match_cosine": float(self.match_cosine[p].mean()),
                "mean_relative_change": float(self.relative_change[p].mean()),
            })
        return rows

    def heads_by_change(self, top: int = 10) -> list[tuple[int, int, float]]:
        """Heads ranked by relative change of ``W_VO``: ``[(layer, head, change), ...]``."""
        flat = [(self.layers[p], h, float(self.relative_change[p, h]))
                for p in range(len(self.layers)) for h in range(self.relative_change.shape[1])]
        return sorted(flat, key=lambda x: -x[2])[:top]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": COMPARISON_FORMAT, "base_name": self.base_name, "finetuned_name": self.finetuned_name,
            "layers": self.layers, "top": self.top, "angles": self.angles.tolist(), "matched": self.matched.tolist(),
            "match_cosine": self.match_cosine.tolist(), "sv_ratio": self.sv_ratio.tolist(),
            "relative_change": self.relative_change.tolist(), "summary": self.summary(),
            "delta": self.delta.to_dict() if self.delta is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Comparison:
        if d.get("format") != COMPARISON_FORMAT:
            raise ValueError(f"not a comparison (format {d.get('format')!r}, expected {COMPARISON_FORMAT!r})")
        t = lambda key, dtype=torch.float32: torch.tensor(d[key], dtype=dtype)  # noqa: E731
        return cls(d["base_name"], d["finetuned_name"], list(d["layers"]), d["top"], t("angles"),
                   t("matched", torch.long), t("match_cosine"), t("sv_ratio"), t("relative_change"),
                   SITHResult.from_dict(d["delta"]) if d.get("delta") else None)

    def to_json(self, path: str | os.PathLike) -> None:
        """Write as JSON, atomically."""
        write_text_atomic(path, json.dumps(self.to_dict()))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Comparison:
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_dict(json.load(f))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read a comparison from {path}: {err}") from None


def _explain_update(
    model: CLIPLike, concepts: ConceptDictionary, S: Tensor, V: Tensor, layers: list[int], *,
    k: int, lam: float, method: str, progress: bool,
) -> SITHResult:
    """Explain the update's singular vectors. Their sign is arbitrary (an update ``-s u v^T`` adds
    ``-v`` where its input is along ``u``), and a non-negative code can only explain one orientation,
    so each vector is explained both ways and keeps the one its code fits better (higher cosine)."""
    readout = joint_readout(model, "auto")
    r = V.shape[-2]
    both = torch.cat([V, -V], dim=-2).float()  # [n, H, 2r, d]
    codes = explain_vectors(both, readout, concepts, k=k, lam=lam, method=method, progress=progress,
                            desc="explaining weight updates")
    flip = codes.cosine[..., r:] > codes.cosine[..., :r]  # [n, H, r]
    pick = lambda t: torch.where(flip.reshape(*flip.shape, *([1] * (t.dim() - 3))), t[:, :, r:], t[:, :, :r])  # noqa: E731
    best = type(codes)(*(pick(t) for t in codes))
    return result_from_codes(model, concepts, best, S.float(), layers, method=method, k=k, lam=lam, side="right",
                             readout=readout)


def check_same_shape(base: CLIPLike, finetuned: CLIPLike) -> tuple[VisionTowerLike, VisionTowerLike]:
    """The two vision towers, after checking that they have the same layers, heads and widths.

    Example:
        >>> import sith_lens as sl
        >>> check_same_shape(sl.load_clip("toy"), sl.load_clip("random:tiny"))
        Traceback (most recent call last):
        ValueError: the models differ in shape ...
    """
    vb, vf = vision_tower(base), vision_tower(finetuned)
    shape_b = (vb.cfg.n_layers, vb.cfg.n_heads, vb.cfg.d_model, vb.cfg.d_head)
    shape_f = (vf.cfg.n_layers, vf.cfg.n_heads, vf.cfg.d_model, vf.cfg.d_head)
    if shape_b != shape_f:
        raise ValueError(f"the models differ in shape (layers, heads, d_model, d_head): base {shape_b}, "
                         f"fine-tuned {shape_f}; compare needs a model and its own fine-tuned version")
    return vb, vf


def compare(
    base: CLIPLike,
    finetuned: CLIPLike,
    concepts: ConceptDictionary | None = None,
    layers: int | Iterable[int] | None = None,
    *,
    top: int = COMPARE.top,
    delta_vectors: int = COMPARE.delta_vectors,
    k: int = COMPARE.k,
    lam: float = EXPLAIN.lam,
    method: str = EXPLAIN.method,
    progress: bool = True,
) -> Comparison:
    """Compare every head of two vision towers with the same architecture.

    Args:
        base, finetuned: ``HookedCLIP``s of the same shape (the fine-tuned one defines the read-out
            that explains the update; its saved image mean is used when it has one).
        concepts: dictionary for explaining delta W_VO (encoded with the fine-tuned text tower if it
            was trained); None skips the explanation.
        layers: layers to compare (negative from the end); None for all.
        top: leading singular vectors compared per head.
        delta_vectors: leading singular vectors of delta W_VO explained per head.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> cmp = sl.compare(model, sl.load_clip("toy"), progress=False)    # a model against itself
        >>> round(cmp.summary()[-1]["mean_angle_deg"], 6), round(cmp.summary()[-1]["mean_relative_change"], 6)
        (0.0, 0.0)
    """
    vb, _ = check_same_shape(base, finetuned)
    d_head = vb.cfg.d_head
    if not 1 <= top <= d_head:
        raise ValueError(f"top must be in 1..{d_head} (d_head), got {top}")
    if not 1 <= delta_vectors <= 2 * d_head:
        raise ValueError(f"delta_vectors must be in 1..{2 * d_head}, got {delta_vectors}")
    chosen = resolve_layers(layers, vb.cfg.n_layers)
    Ab, Bb = head_vo_factors(base, chosen)
    Af, Bf = head_vo_factors(finetuned, chosen)
    _, Sb, Vb = factored_svd(Ab, Bb)
    _, Sf, Vf = factored_svd(Af, Bf)
    angles = principal_angles(Vb[..., :top, :], Vf[..., :top, :])
    matched, match_cos = match_vectors(Vb[..., :top, :], Vf)
    ratio = torch.gather(Sf, -1, matched) / Sb[..., :top].clamp_min(1e-30)
    # delta W_VO = A_f B_f - A_b B_b = [A_f, -A_b] @ [B_f; B_b], rank <= 2 d_head
    A, B = torch.cat([Af, -Ab], dim=-1), torch.cat([Bf, Bb], dim=-2)
    if 2 * d_head <= vb.cfg.d_model:
        _, Sd, Vd = factored_svd(A, B)
    else:  # a head wider than half the residual stream: the dense SVD is as cheap
        _, Sd, Vd = torch.linalg.svd(A @ B)
    relative = Sd.norm(dim=-1) / Sb.norm(dim=-1).clamp_min(1e-30)  # Frobenius norms from singular values
    delta = None
    if concepts is not None:
        delta = _explain_update(finetuned, concepts, Sd[..., :delta_vectors], Vd[..., :delta_vectors, :], chosen,
                                k=k, lam=lam, method=method, progress=progress)
    return Comparison(
        base_name=str(base.cfg.model_name), finetuned_name=str(finetuned.cfg.model_name), layers=chosen, top=top,
        angles=angles.float(), matched=matched, match_cosine=match_cos.float(), sv_ratio=ratio.float(),
        relative_change=relative.float(), delta=delta,
    )


class _CallableModule(type(sys.modules[__name__])):
    """``sith_lens.compare`` is both this module and its main function: ``sl.compare`` is the
    module (Python binds a package attribute to its submodule), and calling it calls ``compare``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Comparison:
        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
