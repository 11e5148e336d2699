"""TransformerLens's activation-patching helpers, for images.

TransformerLens's helpers (``transformer_lens.patching.get_act_patch_resid_pre`` and the rest)
take the number of positions from the input's last dimension, ``corrupted_tokens.shape[-1]``. For
pixels ``[batch, 3, H, W]`` that is the image width, not the number of tokens: on the toy CLIP
(64 px, 65 positions) they return 64 positions and never patch the last patch; on a 224-px CLIP
(50 or 197 positions) they index past the end.

The helpers here have the same names, arguments and output shapes as TransformerLens's, with the
positions read from the tower (``cfg.n_ctx`` for a vision tower, the token count for a text
tower). Each one builds the full index table and hands it to TransformerLens's own
``generic_activation_patch`` (its ``index_df`` route), so the patching itself is TransformerLens's
code::

    from sith_lens.adapters import patching
    clean_embeds, clean_cache = tower.run_with_cache(clean_pixels)
    metric = lambda embeds: tower.zero_shot_logits(embeds)[0, label]
    scan = patching.get_act_patch_resid_pre(tower, corrupted_pixels, clean_cache, metric)  # [n_layers, n_ctx]

``patching_metric`` receives the tower's output (the image embedding ``[batch, d_proj]``);
``tower.zero_shot_logits`` turns it into zero-shot logits when a head is attached.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import einops
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import patching as tl_patching

Metric = Callable[[Tensor], Tensor]


def n_positions(model: Any, corrupted_input: Tensor) -> int:
    """Positions of ``model``'s activations for ``corrupted_input``: ``cfg.n_ctx`` for a vision
    tower (CLS + patches, or the patches alone for SigLIP), the token count for a text tower.

    Example:
        >>> import sith_lens as sl
        >>> n_positions(sl.load_clip("random:tiny").vision, torch.randn(1, 3, 32, 32))   # CLS + 16 patches
        17
    """
    if not isinstance(corrupted_input, Tensor):
        raise TypeError(f"the corrupted input must be a tensor (pixels or token ids), got {type(corrupted_input).__name__}")
    if getattr(model.cfg, "modality", None) == "vision":
        model._check_pixels(corrupted_input)  # the tower's own check: shape, dtype, finite, normalised
        return model.cfg.n_ctx
    return corrupted_input.shape[-1]


def _axis_sizes(model: Any, corrupted_input: Tensor, activation_name: str) -> dict[str, int]:
    pos = n_positions(model, corrupted_input)
    heads = model.cfg.n_heads
    if activation_name in ("k", "v") and getattr(model.cfg, "n_key_value_heads", None):
        heads = model.cfg.n_key_value_heads
    return {"layer": model.cfg.n_layers, "pos": pos, "src_pos": pos, "dest_pos": pos, "head_index": heads, "head": heads}


def _positions_from_model(tl_helper: partial) -> Callable[..., Tensor]:
    """TransformerLens's helper ``tl_helper`` (a ``partial`` of ``generic_activation_patch``) with the
    index table built from the model's positions."""
    setter, activation, axes = (tl_helper.keywords[k] for k in ("patch_setter", "activation_name", "index_axis_names"))

    def helper(model: Any, corrupted_tokens: Tensor, clean_cache: Any, patching_metric: Metric) -> Tensor:
        sizes = _axis_sizes(model, corrupted_tokens, activation)
        shape = [sizes[axis] for axis in axes]
        index_df = tl_patching.make_df_from_ranges(shape, list(axes))
        flat = tl_patching.generic_activation_patch(
            model, corrupted_tokens, clean_cache, patching_metric, patch_setter=setter,
            activation_name=activation, index_df=index_df,
        )
        return flat.reshape(shape)

    helper.__doc__ = (tl_helper.__doc__ or "") + (
        "\n    (sith-lens: positions come from the model, not from the input's last dimension.)\n"
    )
    return helper


def _tl(name: str) -> Callable[..., Tensor]:
    return _positions_from_model(getattr(tl_patching, name))


get_act_patch_resid_pre = _tl("get_act_patch_resid_pre")
get_act_patch_resid_mid = _tl("get_act_patch_resid_mid")
get_act_patch_attn_out = _tl("get_act_patch_attn_out")
get_act_patch_mlp_out = _tl("get_act_patch_mlp_out")
get_act_patch_attn_head_out_by_pos = _tl("get_act_patch_attn_head_out_by_pos")
get_act_patch_attn_head_q_by_pos = _tl("get_act_patch_attn_head_q_by_pos")
get_act_patch_attn_head_k_by_pos = _tl("get_act_patch_attn_head_k_by_pos")
get_act_patch_attn_head_v_by_pos = _tl("get_act_patch_attn_head_v_by_pos")
get_act_patch_attn_head_pattern_by_pos = _tl("get_act_patch_attn_head_pattern_by_pos")
get_act_patch_attn_head_pattern_dest_src_pos = _tl("get_act_patch_attn_head_pattern_dest_src_pos")
get_act_patch_attn_head_out_all_pos = _tl("get_act_patch_attn_head_out_all_pos")
get_act_patch_attn_head_q_all_pos = _tl("get_act_patch_attn_head_q_all_pos")
get_act_patch_attn_head_k_all_pos = _tl("get_act_patch_attn_head_k_all_pos")
get_act_patch_attn_head_v_all_pos = _tl("get_act_patch_attn_head_v_all_pos")
get_act_patch_attn_head_pattern_all_pos = _tl("get_act_patch_attn_head_pattern_all_pos")


def get_act_patch_attn_head_all_pos_every(
    model: Any, corrupted_tokens: Tensor, clean_cache: Any, metric: Metric
) -> Float[Tensor, "5 n_layers n_heads"]:
    """Every head's output, query, key, value and pattern patched across all positions, stacked
    ``[5, n_layers, n_heads]``, as TransformerLens's helper of that name.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("random:tiny")
        >>> clean, corrupted = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
        >>> _, clean_cache = model.vision.run_with_cache(clean)
        >>> metric = lambda embeds: embeds[:, 0].mean()
        >>> get_act_patch_attn_head_all_pos_every(model.vision, corrupted, clean_cache, metric).shape
        torch.Size([5, 2, 4])
    """
    parts = (get_act_patch_attn_head_out_all_pos, get_act_patch_attn_head_q_all_pos, get_act_patch_attn_head_k_all_pos,
             get_act_patch_attn_head_v_all_pos, get_act_patch_attn_head_pattern_all_pos)
    return torch.stack([part(model, corrupted_tokens, clean_cache, metric) for part in parts])


def get_act_patch_attn_head_by_pos_every(
    model: Any, corrupted_tokens: Tensor, clean_cache: Any, metric: Metric
) -> Float[Tensor, "5 n_layers pos n_heads"]:
    """Every head's output, query, key, value and pattern patched position by position, stacked
    ``[5, n_layers, pos, n_heads]``, as TransformerLens's helper of that name.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("random:tiny")
        >>> clean, corrupted = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
        >>> _, clean_cache = model.vision.run_with_cache(clean)
        >>> metric = lambda embeds: embeds[:, 0].mean()
        >>> get_act_patch_attn_head_by_pos_every(model.vision, corrupted, clean_cache, metric).shape[0]
        5
    """
    parts = (get_act_patch_attn_head_out_by_pos, get_act_patch_attn_head_q_by_pos, get_act_patch_attn_head_k_by_pos,
             get_act_patch_attn_head_v_by_pos)
    results = [part(model, corrupted_tokens, clean_cache, metric) for part in parts]
    pattern = get_act_patch_attn_head_pattern_by_pos(model, corrupted_tokens, clean_cache, metric)
    results.append(einops.rearrange(pattern, "layer head pos -> layer pos head"))
    return torch.stack(results)


def get_act_patch_block_every(
    model: Any, corrupted_tokens: Tensor, clean_cache: Any, metric: Metric
) -> Float[Tensor, "3 n_layers pos"]:
    """The residual stream (before each block), each attention output and each MLP output patched
    position by position, stacked ``[3, n_layers, pos]``, as TransformerLens's helper of that name.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("random:tiny")
        >>> clean, corrupted = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
        >>> _, clean_cache = model.vision.run_with_cache(clean)
        >>> metric = lambda embeds: embeds[:, 0].mean()
        >>> get_act_patch_block_every(model.vision, corrupted, clean_cache, metric).shape    # [3, layers, positions]
        torch.Size([3, 2, 17])
    """
    parts = (get_act_patch_resid_pre, get_act_patch_attn_out, get_act_patch_mlp_out)
    return torch.stack([part(model, corrupted_tokens, clean_cache, metric) for part in parts])
