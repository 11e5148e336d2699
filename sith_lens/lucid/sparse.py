"""The sparse-coding maths of LUCID, shared by the inference and training SAEs: block Top-K,
reconstruction error, the AuxK loss for dead latents, and the unit-norm decoder constraint.

Latent layout (one index space for both modalities): ``[0, n_shared)`` is the shared block,
then the vision-private block, then the text-private block. A modality sees the shared block and
its own private block; its codes are zero on the other modality's private block.
"""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .distributed import SOLO, ProcessGroup, centred_sum_of_squares

Modality = Literal["vision", "text"]
MODALITIES: tuple[str, str] = ("vision", "text")


def check_modality(modality: object) -> str:
    """``modality`` if it is "vision" or "text", else a ValueError naming the choices."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be 'vision' or 'text', got {modality!r}")
    return str(modality)


def latent_slices(n_shared: int, n_vision: int, n_text: int) -> dict[str, slice]:
    """Where each block lives in the latent index space.

    Example:
        >>> latent_slices(8, 4, 2)
        {'shared': slice(0, 8, None), 'vision': slice(8, 12, None), 'text': slice(12, 14, None)}
    """
    return {
        "shared": slice(0, n_shared),
        "vision": slice(n_shared, n_shared + n_vision),
        "text": slice(n_shared + n_vision, n_shared + n_vision + n_text),
    }


def visible_latents(modality: str, n_shared: int, n_vision: int, n_text: int) -> Int[Tensor, "n"]:
    """Indices of the latents a modality uses: the shared block, then its private block."""
    blocks = latent_slices(n_shared, n_vision, n_text)
    private = blocks[check_modality(modality)]
    return torch.cat([torch.arange(n_shared), torch.arange(private.start, private.stop)])


def topk_relu(pre: Float[Tensor, "... n"], k: int) -> Float[Tensor, "... n"]:
    """Keep the ``k`` largest entries of the last axis (after ReLU), zero the rest. Ties are broken
    by index (torch.topk is deterministic on CPU)."""
    return block_topk(pre, pre.shape[-1], k, 0)


def block_topk_indices(
    pre: Float[Tensor, "rows n"], n_shared: int, k_shared: int, k_private: int
) -> tuple[Float[Tensor, "rows k"], Int[Tensor, "rows k"]]:
    """Block Top-K as (values, indices), ``k = k_shared + k_private`` per row (fewer where a block
    is narrower than its budget): the ``k_shared`` largest of the first ``n_shared`` pre-activations
    and the ``k_private`` largest of the rest, after ReLU (so a kept value may be 0).

    Example:
        >>> values, indices = block_topk_indices(torch.randn(5, 12), n_shared=8, k_shared=2, k_private=1)
        >>> indices.shape, bool((indices[:, 2] >= 8).all())      # 2 shared picks, then 1 private one
        (torch.Size([5, 3]), True)
    """
    blocks = [(pre[..., :n_shared], k_shared, 0), (pre[..., n_shared:], k_private, n_shared)]
    values, indices = [], []
    for block, k, offset in blocks:
        k = min(k, block.shape[-1])
        if k > 0:
            v, i = torch.topk(block, k=k, dim=-1, sorted=False)
            values.append(v.relu())
            indices.append(i + offset)
    if not values:
        return pre[..., :0], torch.zeros(*pre.shape[:-1], 0, dtype=torch.long, device=pre.device)
    return torch.cat(values, -1), torch.cat(indices, -1)


def block_topk(pre: Float[Tensor, "... n"], n_shared: int, k_shared: int, k_private: int) -> Float[Tensor, "... n"]:
    """Separate Top-K budgets: ``k_shared`` over the first ``n_shared`` pre-activations (the shared
    block), ``k_private`` over the rest (one modality's private block); dense codes.

    Example:
        >>> codes = block_topk(torch.randn(5, 12), n_shared=8, k_shared=2, k_private=1)
        >>> bool((codes.count_nonzero(-1) <= 3).all()), bool((codes >= 0).all())    # at most 2 + 1, after ReLU
        (True, True)
    """
    values, indices = block_topk_indices(pre, n_shared, k_shared, k_private)
    return torch.zeros_like(pre).scatter(-1, indices, values)


def decode_sparse(
    values: Float[Tensor, "rows k"], indices: Int[Tensor, "rows k"], decoder: Float[Tensor, "n d"]
) -> Float[Tensor, "rows d"]:
    """``codes @ decoder`` for codes given as (values, indices), without forming the dense codes:
    each row sums its ``k`` decoder rows (``embedding_bag``, about twice as fast as the dense
    product on CPU at k=10 of 1024 latents, gradients included).

    Example:
        >>> pre, W_dec = torch.randn(4, 1024), torch.randn(1024, 16)
        >>> values, indices = block_topk_indices(pre, 768, 8, 2)
        >>> recon = decode_sparse(values, indices, W_dec)
        >>> torch.allclose(recon, block_topk(pre, 768, 8, 2) @ W_dec, atol=1e-4)
        True
    """
    return torch.nn.functional.embedding_bag(indices, decoder, per_sample_weights=values, mode="sum")


def fvu(x: Float[Tensor, "rows d"], x_hat: Float[Tensor, "rows d"], group: ProcessGroup = SOLO) -> Float[Tensor, ""]:
    """Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2. With a
    ``group`` of processes holding a batch's rows between them, ``world`` times this process's
    share of the batch's FVU (see ``sith_lens.lucid.distributed``)."""
    total = centred_sum_of_squares(x, group)
    return group.world * (x - x_hat).pow(2).sum() / total.clamp_min(1e-12)


def auxk_loss(
    residual: Float[Tensor, "rows d"],
    pre: Float[Tensor, "rows n"],
    dead: Bool[Tensor, "n"],
    decoder: Float[Tensor, "n d"],
    k_aux: int,
    group: ProcessGroup = SOLO,
) -> Float[Tensor, ""]:
    """AuxK (Gao et al. 2024): the top ``k_aux`` dead latents try to reconstruct the residual
    ``x - x_hat`` the live ones left; returned as that attempt's error relative to the residual's
    variance. Zero when no latent is dead.

    Args:
        residual: the reconstruction error, detached by the caller or not, in normalised units.
        pre: pre-activations of the latents ``decoder`` holds the rows of.
        dead: which of those latents have not fired for a while.
        group: the processes holding the batch's rows (as for ``fvu``).
    """
    n_dead = int(dead.sum())
    if n_dead == 0 or (residual.shape[0] == 0 and not group.distributed):
        return residual.new_zeros(())
    masked = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
    codes = topk_relu(masked, min(k_aux, n_dead))
    codes = torch.nan_to_num(codes, neginf=0.0)
    estimate = codes @ decoder
    return group.world * (estimate - residual).pow(2).sum() / centred_sum_of_squares(residual, group).clamp_min(1e-12)


@torch.no_grad()
def remove_parallel_gradient(decoder: torch.nn.Parameter) -> None:
    """Project out, for each decoder row, the component of its gradient along the row, so that a
    step keeps unit-norm rows at unit norm to first order."""
    if decoder.grad is None:
        return
    rows = decoder / decoder.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    decoder.grad -= (decoder.grad * rows).sum(-1, keepdim=True) * rows


@torch.no_grad()
def normalize_rows_(decoder: torch.nn.Parameter) -> None:
    """Rescale every decoder row to unit norm, in place."""
    decoder.div_(decoder.norm(dim=-1, keepdim=True).clamp_min(1e-12))
