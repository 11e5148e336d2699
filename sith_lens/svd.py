"""Deterministic SVD of a low-rank matrix given as two factors, ``M = A @ B`` (sith_spec §1.4, §3.2).

A head's ``W_VO = W_V @ W_O`` is ``d_model x d_model`` but has rank at most ``d_head``. Instead of a
``d_model x d_model`` SVD we take QR decompositions of the two thin factors and the SVD of the small
``d_head x d_head`` core: ``A = Qa Ra``, ``B^T = Qb Rb``, ``Ra Rb^T = u s v^T``, so
``M = (Qa u) s (Qb v)^T``. Signs are fixed so that the largest-magnitude entry of every left vector
is positive (the official code's rule), and the right vector flips with it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor


class FactoredSVD(NamedTuple):
    """``M = U @ diag(S) @ Vh`` with all ``rank`` singular triplets, largest first."""

    U: Float[Tensor, "... d_in rank"]
    """Left singular vectors (columns): the directions a head *reads*."""
    S: Float[Tensor, "... rank"]
    """Singular values, descending."""
    Vh: Float[Tensor, "... rank d_out"]
    """Right singular vectors (rows): the directions a head *writes*; SITH explains these."""


def fix_signs(U: Tensor, Vh: Tensor) -> tuple[Tensor, Tensor]:
    """Flip each pair ``(U[:, i], Vh[i])`` so that ``U[:, i]``'s largest-|entry| is positive.

    Example:
        >>> U, Vh = fix_signs(-torch.eye(2), torch.eye(2))
        >>> U.diagonal().tolist(), Vh.diagonal().tolist()
        ([1.0, 1.0], [-1.0, -1.0])
    """
    peak = U.abs().argmax(dim=-2, keepdim=True)  # [..., 1, rank]
    sign = torch.sign(torch.gather(U, -2, peak))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return U * sign, Vh * sign.transpose(-2, -1)


def factored_svd(
    A: Float[Tensor, "... d_in rank"],
    B: Float[Tensor, "... rank d_out"],
) -> FactoredSVD:
    """Sign-fixed SVD of ``A @ B`` from its factors, batched over leading axes; never forms ``A @ B``.

    Computed in float64 and returned in the factors' dtype.

    Example:
        >>> A, B = torch.randn(12, 768, 64), torch.randn(12, 64, 768)      # 12 heads of ViT-B
        >>> U, S, Vh = factored_svd(A, B)                                  # [12,768,64] [12,64] [12,64,768]
        >>> torch.allclose(U @ torch.diag_embed(S) @ Vh, A @ B, atol=1e-3)
        True
    """
    if A.dim() < 2 or B.dim() < 2 or A.shape[-1] != B.shape[-2] or A.shape[:-2] != B.shape[:-2]:
        raise ValueError(
            f"factored_svd needs A [..., d_in, rank] and B [..., rank, d_out] with the same leading axes, "
            f"got {tuple(A.shape)} and {tuple(B.shape)}"
        )
    if A.shape[-1] > min(A.shape[-2], B.shape[-1]):
        raise ValueError(f"rank {A.shape[-1]} exceeds the matrix sides {A.shape[-2]} x {B.shape[-1]}; "
                         "this routine is for thin factors")
    dtype = A.dtype
    Qa, Ra = torch.linalg.qr(A.double())
    Qb, Rb = torch.linalg.qr(B.double().transpose(-2, -1))
    u, s, vh = torch.linalg.svd(Ra @ Rb.transpose(-2, -1))
    U, Vh = fix_signs(Qa @ u, vh @ Qb.transpose(-2, -1))
    return FactoredSVD(U.to(dtype), s.to(dtype), Vh.to(dtype))
