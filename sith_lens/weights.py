"""Per-head value-output factors with ``ln_1`` folded in and the weights centred (sith_spec §1.2).

Row-vector convention throughout: a head reads ``x @ W_V`` and writes ``z @ W_O``, so its
value-output matrix is ``W_VO = W_V @ W_O`` with rows indexing the residual features it *reads*
and columns the features it *writes*. Its rank is at most ``d_head``, and we never build it: the
SVD works on the two factors (``svd.factored_svd``).

Folding and centring, per block:

* ``ln_1``'s gain goes into the read weights, ``W' = diag(w) @ W``, and its bias into the read
  biases, ``b' = b + b_ln @ W``; ``ln_1`` becomes non-affine.
* The read weights (Q, K and V) lose their mean over the residual features: the input of a
  non-affine LayerNorm already has zero mean, so this is exact.
* ``W_O`` loses its mean over the residual features it writes: every token's update changes by a
  multiple of the all-ones vector, which every later LayerNorm removes. The network computes the
  same function (``fold_and_center`` + the test in ``tests/test_sith_core.py``).

Biases stay out of ``W_VO``. This module takes plain tensors (and, in ``fold_and_center``, any
tower with TransformerLens-style blocks); it imports no host library.
"""

from __future__ import annotations

import copy
from typing import NamedTuple, TypeVar

import torch
from jaxtyping import Float
from torch import Tensor

from .checks import check_finite
from .model import VisionTowerLike

TowerT = TypeVar("TowerT", bound=VisionTowerLike)


class VOFactors(NamedTuple):
    """The two rank-``d_head`` factors of every head's value-output matrix, folded and centred."""

    W_V: Float[Tensor, "n_layers n_heads d_model d_head"]
    """Read side: ``ln_1``'s gain folded in, mean over ``d_model`` removed."""
    W_O: Float[Tensor, "n_layers n_heads d_head d_model"]
    """Write side: mean over ``d_model`` removed (heads never write along the all-ones vector)."""


def fold_ln(
    W: Float[Tensor, "... d_model d_out"],
    b: Float[Tensor, "... d_out"],
    ln_w: Float[Tensor, " d_model"],
    ln_b: Float[Tensor, " d_model"],
) -> tuple[Tensor, Tensor]:
    """Fold a LayerNorm's affine ``(ln_w, ln_b)`` into the weights ``W`` and biases ``b`` that read it.

    ``(LN0(x) * ln_w + ln_b) @ W + b == LN0(x) @ W' + b'`` with ``LN0`` the non-affine LayerNorm.

    Example:
        >>> W, b = torch.randn(4, 8, 2), torch.randn(4, 2)         # 4 heads reading d_model = 8
        >>> ln_w, ln_b = torch.rand(8) + 0.5, torch.randn(8)
        >>> W2, b2 = fold_ln(W, b, ln_w, ln_b)
        >>> x = torch.randn(8)
        >>> torch.allclose(torch.einsum("d,hde->he", x * ln_w + ln_b, W) + b, torch.einsum("d,hde->he", x, W2) + b2, atol=1e-5)
        True
    """
    W_folded = ln_w[:, None] * W
    b_folded = b + torch.einsum("d,...de->...e", ln_b, W)
    return W_folded, b_folded


def center_reads(W: Float[Tensor, "... d_model d_out"]) -> Float[Tensor, "... d_model d_out"]:
    """Remove each read direction's mean over the residual features (exact after a non-affine LN).

    Example:
        >>> center_reads(torch.ones(4, 2)).abs().max().item()
        0.0
    """
    return W - W.mean(dim=-2, keepdim=True)


def center_writes(W_O: Float[Tensor, "... d_head d_model"]) -> Float[Tensor, "... d_head d_model"]:
    """Remove each written direction's mean over the residual features.

    Example:
        >>> center_writes(torch.ones(2, 4)).abs().max().item()
        0.0
    """
    return W_O - W_O.mean(dim=-1, keepdim=True)


def vo_factors(
    W_V: Float[Tensor, "n_layers n_heads d_model d_head"],
    W_O: Float[Tensor, "n_layers n_heads d_head d_model"],
    ln_w: Float[Tensor, "n_layers d_model"],
    *,
    fold: bool = True,
    center: bool = True,
) -> VOFactors:
    """The folded and centred value-output factors of every head (the paper's setting).

    Only ``ln_1``'s gain ``ln_w`` enters: its bias moves into the value bias, which is not part of
    ``W_VO``.

    Example:
        >>> import sith_lens as sl
        >>> tower = sl.load_clip("random:tiny").vision
        >>> vo = vo_factors(tower.W_V, tower.W_O, torch.stack([b.ln1.w for b in tower.blocks]))
        >>> (vo.W_V[1, 3] @ vo.W_O[1, 3]).shape     # W_VO of layer 1, head 3: [d_model, d_model]
        torch.Size([64, 64])
    """
    if W_V.dim() != 4 or W_O.dim() != 4:
        raise ValueError(
            f"expected W_V [n_layers, n_heads, d_model, d_head] and W_O [n_layers, n_heads, d_head, d_model], "
            f"got {tuple(W_V.shape)} and {tuple(W_O.shape)}"
        )
    L, H, d, e = W_V.shape
    if tuple(W_O.shape) != (L, H, e, d):
        raise ValueError(f"W_O must have shape {(L, H, e, d)} to match W_V {tuple(W_V.shape)}, got {tuple(W_O.shape)}")
    if tuple(ln_w.shape) != (L, d):
        raise ValueError(f"ln_w must have shape {(L, d)} (ln_1's gain per layer), got {tuple(ln_w.shape)}")
    for name, t in (("W_V", W_V), ("W_O", W_O), ("ln_1 weight", ln_w)):
        check_finite(name, t)
    if fold:
        W_V = ln_w[:, None, :, None] * W_V
    if center:
        W_V, W_O = center_reads(W_V), center_writes(W_O)
    return VOFactors(W_V, W_O)


def fold_and_center(tower: TowerT, fold_value_bias: bool = False) -> TowerT:
    """A copy of a hooked tower with every ``ln1`` folded into Q/K/V and all weights centred.

    The copy computes the same outputs (``ln_final`` and everything after it) as ``tower``; only
    the residual stream differs, by a multiple of the all-ones vector per token. Its ``W_V`` and
    ``W_O`` are exactly the factors that ``vo_factors`` returns.

    With ``fold_value_bias`` each head's value bias moves into the output bias as well
    (``b_O += sum_h b_V[h] @ W_O[h]``, ``b_V = 0``; exact, since attention weights sum to one), so
    a head's output is then ``pattern @ x @ W_VO`` alone and editing ``W_VO`` edits all of it.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("random:tiny")
        >>> pixels = torch.randn(2, 3, 32, 32)
        >>> folded = fold_and_center(model.vision)
        >>> torch.allclose(folded(pixels), model.vision(pixels), atol=1e-5)
        True
    """
    folded = copy.deepcopy(tower)
    fold_and_center_(folded, fold_value_bias)
    return folded


def fold_and_center_(tower: VisionTowerLike, fold_value_bias: bool = False) -> None:
    """In-place ``fold_and_center``: the tower's own weights are rewritten (same outputs).

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("random:tiny")
        >>> fold_and_center_(model.vision, fold_value_bias=True)
        >>> float(model.vision.blocks[0].attn.b_V.abs().max())
        0.0
    """
    with torch.no_grad():
        for block in tower.blocks:
            ln, attn = block.ln1, block.attn
            for W, b in ((attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K), (attn.W_V, attn.b_V)):
                W_new, b_new = fold_ln(W, b, ln.w, ln.b)
                W.copy_(center_reads(W_new))
                b.copy_(b_new)
            attn.W_O.copy_(center_writes(attn.W_O))
            if fold_value_bias:
                attn.b_O.add_(torch.einsum("he,hed->d", attn.b_V, attn.W_O))
                attn.b_V.zero_()
            ln.w.fill_(1.0)
            ln.b.zero_()
