"""Read residual-stream directions into CLIP's joint image-text space (sith_spec §1.5, §4.2).

``JointReadout(v) = normalize(normalize(LN_final(v) @ W_proj) - image_mean)``: the full final
LayerNorm (its centring, scaling, gain *and* bias), the visual projection, L2 normalisation, then,
optionally, subtraction of the mean normalised image embedding and normalisation again (the image
side of the modality-gap fix; the concept dictionary centres the text side). With no image mean
the read-out is strictly data-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


@dataclass
class JointReadout:
    """The map from the vision residual stream to the joint space, as plain tensors.

    Example:
        >>> ln_w, ln_b, W_proj = torch.ones(16), torch.zeros(16), torch.randn(16, 8)
        >>> ro = JointReadout(ln_w, ln_b, 1e-5, W_proj, image_mean=None)
        >>> ro(torch.randn(10, 16)).norm(dim=-1).allclose(torch.ones(10))     # unit vectors, [10]
        True
    """

    ln_w: Float[Tensor, " d_model"]
    """Final LayerNorm gain (``ln_post`` in CLIP)."""
    ln_b: Float[Tensor, " d_model"]
    """Final LayerNorm bias."""
    eps: float
    """Final LayerNorm epsilon."""
    W_proj: Float[Tensor, "d_model d_proj"]
    """Visual projection into the joint space (row-vector convention)."""
    image_mean: Float[Tensor, " d_proj"] | None = None
    """Mean of L2-normalised image embeddings (not renormalised), or None for no centring."""

    def __post_init__(self) -> None:
        d, p = self.W_proj.shape
        if self.ln_w.shape != (d,) or self.ln_b.shape != (d,):
            raise ValueError(f"ln_w and ln_b must have shape ({d},) to match W_proj {tuple(self.W_proj.shape)}")
        if self.image_mean is not None and self.image_mean.shape != (p,):
            raise ValueError(
                f"image_mean must have shape ({p},) (the joint-space width), got {tuple(self.image_mean.shape)}; "
                "compute it with sith_lens.image_mean(model, images) for this model"
            )

    def __call__(self, vectors: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_proj"]:
        """Unit joint-space vectors for residual directions ``vectors``."""
        x = F.layer_norm(vectors, (vectors.shape[-1],), self.ln_w.to(vectors), self.ln_b.to(vectors), self.eps)
        e = F.normalize(x @ self.W_proj.to(vectors), dim=-1)
        if self.image_mean is None:
            return e
        return F.normalize(e - self.image_mean.to(vectors), dim=-1)

    def to_residual(self, joint: Float[Tensor, "n d_proj"]) -> Float[Tensor, "n d_model"]:
        """The fidelity back-map of the official code (sith_spec §4.2): undo the image centring,
        then the pseudo-inverse of the projection. The final LayerNorm is *not* inverted."""
        z = F.normalize(joint, dim=-1)
        if self.image_mean is not None:
            z = F.normalize(z + self.image_mean.to(z), dim=-1)
        return F.normalize(z @ self._proj_pinv.to(z), dim=-1)

    @cached_property
    def _proj_pinv(self) -> Float[Tensor, "d_proj d_model"]:
        """Pseudo-inverse of ``W_proj``, computed once (``explain_heads`` maps back every layer)."""
        return torch.linalg.pinv(self.W_proj.double())
