"""Weight-map tables: how each tensor of a reference implementation becomes a hooked-tower tensor.

A family (transformers CLIP, SigLIP, OpenCLIP) is one list of ``WeightMap`` per tower: for every
tensor, its name on each side and the einops pattern from the reference layout (``nn.Linear``
weights ``[out, in]``) to the TransformerLens layout (``x @ W``). A fused tensor, such as
``nn.MultiheadAttention``'s ``in_proj_weight`` ``[3 * d_model, d_model]``, is named by several maps,
each taking one chunk. The reverse direction (``to_theirs``) uses the same tables, so exporting
cannot drift from loading.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import einops
import torch
from torch import Tensor

from sith_lens.adapters.transformer_lens import HookedCLIPText, HookedCLIPVision, TowerConfig


class WeightMap(NamedTuple):
    """One tensor's name in each layout and how to go from the reference one to ours."""

    ours: str
    """Name in the hooked tower's ``state_dict``."""
    theirs: str
    """Name in the reference model's ``state_dict``."""
    pattern: str | None
    """einops pattern from theirs to ours (``None``: same layout)."""
    chunk: tuple[int, int] | None = None
    """``(index, count)``: ours is chunk ``index`` of ``count`` equal chunks of theirs along dim 0."""


def _rearrange(t: Tensor, pattern: str, sizes: dict[str, int]) -> Tensor:
    axes = set(re.findall(r"\w+", pattern))
    return einops.rearrange(t, pattern, **{k: v for k, v in sizes.items() if k in axes})


def _reverse(pattern: str) -> str:
    left, right = pattern.split("->")
    return f"{right.strip()} -> {left.strip()}"


def axis_sizes(cfg: TowerConfig) -> dict[str, int]:
    """The axis lengths the patterns need to split a grouped axis: heads, channels, patch side."""
    return {"h": cfg.n_heads, "c": cfg.n_channels, "p1": cfg.patch_size}


def ln_maps(ours: str, theirs: str) -> list[WeightMap]:
    """A LayerNorm's gain and bias (``w``/``b`` here, ``weight``/``bias`` in torch)."""
    return [WeightMap(f"{ours}.w", f"{theirs}.weight", None), WeightMap(f"{ours}.b", f"{theirs}.bias", None)]


def fused_qkv_maps(ours: str, weight: str, bias: str | None) -> list[WeightMap]:
    """Q, K and V of ``ours`` (an ``Attention``) from a fused ``in_proj`` ``[3 * d_model, d_model]``."""
    maps = []
    for i, x in enumerate("QKV"):
        maps.append(WeightMap(f"{ours}.W_{x}", weight, "(h e) d -> h d e", (i, 3)))
        if bias is not None:
            maps.append(WeightMap(f"{ours}.b_{x}", bias, "(h e) -> h e", (i, 3)))
    return maps


def mlp_maps(ours: str, fc_in: str, fc_out: str) -> list[WeightMap]:
    """An ``MLP`` (``W_in``, ``b_in``, ``W_out``, ``b_out``) from two ``nn.Linear`` layers."""
    return [
        WeightMap(f"{ours}.W_in", f"{fc_in}.weight", "m d -> d m"),
        WeightMap(f"{ours}.b_in", f"{fc_in}.bias", None),
        WeightMap(f"{ours}.W_out", f"{fc_out}.weight", "d m -> m d"),
        WeightMap(f"{ours}.b_out", f"{fc_out}.bias", None),
    ]


def out_proj_maps(ours: str, out_proj: str) -> list[WeightMap]:
    """An ``Attention``'s ``W_O`` / ``b_O`` from its output ``nn.Linear``."""
    return [
        WeightMap(f"{ours}.W_O", f"{out_proj}.weight", "d (h e) -> h e d"),
        WeightMap(f"{ours}.b_O", f"{out_proj}.bias", None),
    ]


def to_ours(state: dict[str, Tensor], maps: list[WeightMap], sizes: dict[str, int]) -> dict[str, Tensor]:
    """Convert a reference state dict to the hooked layout (only the tensors in ``maps``)."""
    missing = sorted({m.theirs for m in maps if m.theirs not in state})
    if missing:
        raise KeyError(f"the checkpoint lacks {len(missing)} expected tensors, e.g. {missing[:3]}")
    out = {}
    for m in maps:
        t = state[m.theirs]
        if m.chunk is not None:
            index, count = m.chunk
            t = t.chunk(count, dim=0)[index]
        t = _rearrange(t, m.pattern, sizes) if m.pattern else t
        out[m.ours] = t.detach().clone().contiguous()  # never share storage with the source model
    return out


def to_theirs(our_state: dict[str, Tensor], maps: list[WeightMap], sizes: dict[str, int]) -> dict[str, Tensor]:
    """Convert a hooked tower's state dict back to the reference layout (fused tensors re-joined)."""
    parts: dict[str, dict[int, Tensor]] = {}
    for m in maps:
        t = our_state[m.ours]
        t = _rearrange(t, _reverse(m.pattern), sizes) if m.pattern else t
        parts.setdefault(m.theirs, {})[m.chunk[0] if m.chunk else 0] = t
    return {name: torch.cat([p[i] for i in sorted(p)], dim=0).contiguous() for name, p in parts.items()}


def build_towers(
    state: dict[str, Tensor],
    configs: tuple[TowerConfig, TowerConfig],
    maps: tuple[list[WeightMap], list[WeightMap]],
    dtype: torch.dtype,
) -> tuple[HookedCLIPVision, HookedCLIPText]:
    """Both hooked towers, holding copies of ``state``'s tensors (every tower tensor must be mapped)."""
    towers = []
    for cls, cfg, tower_maps in zip((HookedCLIPVision, HookedCLIPText), configs, maps):
        with torch.device("meta"):
            tower = cls(cfg)
        tower.load_state_dict(to_ours(state, tower_maps, axis_sizes(cfg)), strict=True, assign=True)
        towers.append(tower.to(dtype=dtype))
    return towers[0], towers[1]
