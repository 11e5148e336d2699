"""The weight mapping between transformers' ``CLIPModel`` and the hooked towers.

One table per tower lists, for every tensor, its name on each side and the einops pattern that
turns the transformers layout (``nn.Linear`` weights ``[out, in]``) into the TransformerLens layout
(``x @ W``). The reverse direction uses the same table, so converting back (for example to export
an edited model) cannot drift from loading.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import einops
import torch
from torch import Tensor

from sith_lens.adapters.transformer_lens import HookedCLIPText, HookedCLIPVision, TowerConfig


class WeightMap(NamedTuple):
    """One tensor's name in each layout and how to go from the transformers one to ours."""

    ours: str
    """Name in the hooked tower's ``state_dict``."""
    theirs: str
    """Name in the transformers ``CLIPModel`` ``state_dict``."""
    pattern: str | None
    """einops pattern from theirs to ours (``None``: same layout)."""


def _rearrange(t: Tensor, pattern: str, sizes: dict[str, int]) -> Tensor:
    axes = set(re.findall(r"\w+", pattern))
    return einops.rearrange(t, pattern, **{k: v for k, v in sizes.items() if k in axes})


def axis_sizes(cfg: TowerConfig) -> dict[str, int]:
    """The axis lengths the patterns need to split a grouped axis: heads, channels, patch side."""
    return {"h": cfg.n_heads, "c": cfg.n_channels, "p1": cfg.patch_size}


def _reverse(pattern: str) -> str:
    left, right = pattern.split("->")
    return f"{right.strip()} -> {left.strip()}"


def _layer_maps(ours: str, theirs: str) -> list[WeightMap]:
    maps = []
    for x in "QKV":
        proj = f"{theirs}.self_attn.{x.lower()}_proj"
        maps.append(WeightMap(f"{ours}.attn.W_{x}", f"{proj}.weight", "(h e) d -> h d e"))
        maps.append(WeightMap(f"{ours}.attn.b_{x}", f"{proj}.bias", "(h e) -> h e"))
    maps += [
        WeightMap(f"{ours}.attn.W_O", f"{theirs}.self_attn.out_proj.weight", "d (h e) -> h e d"),
        WeightMap(f"{ours}.attn.b_O", f"{theirs}.self_attn.out_proj.bias", None),
        WeightMap(f"{ours}.mlp.W_in", f"{theirs}.mlp.fc1.weight", "m d -> d m"),
        WeightMap(f"{ours}.mlp.b_in", f"{theirs}.mlp.fc1.bias", None),
        WeightMap(f"{ours}.mlp.W_out", f"{theirs}.mlp.fc2.weight", "d m -> m d"),
        WeightMap(f"{ours}.mlp.b_out", f"{theirs}.mlp.fc2.bias", None),
    ]
    for i in (1, 2):
        maps.append(WeightMap(f"{ours}.ln{i}.w", f"{theirs}.layer_norm{i}.weight", None))
        maps.append(WeightMap(f"{ours}.ln{i}.b", f"{theirs}.layer_norm{i}.bias", None))
    return maps


def _all_layer_maps(cfg: TowerConfig, prefix: str) -> list[WeightMap]:
    return [m for layer in range(cfg.n_layers) for m in _layer_maps(f"blocks.{layer}", f"{prefix}encoder.layers.{layer}")]


def _ln(ours: str, theirs: str) -> list[WeightMap]:
    return [WeightMap(f"{ours}.w", f"{theirs}.weight", None), WeightMap(f"{ours}.b", f"{theirs}.bias", None)]


def vision_weight_maps(cfg: TowerConfig, prefix: str = "vision_model.") -> list[WeightMap]:
    """Every vision tensor's mapping; ``prefix`` is where the tower sits in the HF state dict."""
    maps = [
        WeightMap("embed.W_E", f"{prefix}embeddings.patch_embedding.weight", "d c p1 p2 -> (c p1 p2) d"),
        WeightMap("embed.cls_token", f"{prefix}embeddings.class_embedding", None),
        WeightMap("embed.W_pos", f"{prefix}embeddings.position_embedding.weight", None),
        *_ln("ln_pre", f"{prefix}pre_layrnorm"),
        *_ln("ln_final", f"{prefix}post_layernorm"),
        WeightMap("W_proj", "visual_projection.weight", "p d -> d p"),
    ]
    return maps + _all_layer_maps(cfg, prefix)


def text_weight_maps(cfg: TowerConfig, prefix: str = "text_model.") -> list[WeightMap]:
    """Every text tensor's mapping; ``prefix`` is where the tower sits in the HF state dict."""
    maps = [
        WeightMap("embed.W_E", f"{prefix}embeddings.token_embedding.weight", None),
        WeightMap("pos_embed.W_pos", f"{prefix}embeddings.position_embedding.weight", None),
        *_ln("ln_final", f"{prefix}final_layer_norm"),
        WeightMap("W_proj", "text_projection.weight", "p d -> d p"),
    ]
    return maps + _all_layer_maps(cfg, prefix)


def to_ours(hf_state: dict[str, Tensor], maps: list[WeightMap], sizes: dict[str, int]) -> dict[str, Tensor]:
    """Convert a transformers state dict to the hooked layout (only the tensors in ``maps``)."""
    missing = [m.theirs for m in maps if m.theirs not in hf_state]
    if missing:
        raise KeyError(f"the checkpoint lacks {len(missing)} expected tensors, e.g. {missing[:3]}")
    out = {}
    for m in maps:
        t = hf_state[m.theirs]
        t = _rearrange(t, m.pattern, sizes) if m.pattern else t
        out[m.ours] = t.detach().clone().contiguous()  # never share storage with the source model
    return out


def to_theirs(our_state: dict[str, Tensor], maps: list[WeightMap], sizes: dict[str, int]) -> dict[str, Tensor]:
    """Convert a hooked tower's state dict back to the transformers layout."""
    return {
        m.theirs: (_rearrange(our_state[m.ours], _reverse(m.pattern), sizes) if m.pattern else our_state[m.ours]).contiguous()
        for m in maps
    }


def tower_configs(hf_config, model_name: str = "custom") -> tuple[TowerConfig, TowerConfig]:
    """Build the vision and text ``TowerConfig`` from a transformers ``CLIPConfig``."""
    v, t = hf_config.vision_config, hf_config.text_config
    vision = TowerConfig(
        modality="vision",
        n_layers=v.num_hidden_layers,
        n_heads=v.num_attention_heads,
        d_model=v.hidden_size,
        d_head=v.hidden_size // v.num_attention_heads,
        d_mlp=v.intermediate_size,
        n_ctx=(v.image_size // v.patch_size) ** 2 + 1,
        d_proj=hf_config.projection_dim,
        act_fn=v.hidden_act,
        eps=v.layer_norm_eps,
        image_size=v.image_size,
        patch_size=v.patch_size,
        n_channels=v.num_channels,
        model_name=model_name,
    )
    text = TowerConfig(
        modality="text",
        n_layers=t.num_hidden_layers,
        n_heads=t.num_attention_heads,
        d_model=t.hidden_size,
        d_head=t.hidden_size // t.num_attention_heads,
        d_mlp=t.intermediate_size,
        n_ctx=t.max_position_embeddings,
        d_proj=hf_config.projection_dim,
        act_fn=t.hidden_act,
        eps=t.layer_norm_eps,
        d_vocab=t.vocab_size,
        eos_token_id=t.eos_token_id,
        model_name=model_name,
    )
    return vision, text


def towers_from_hf(hf_model, model_name: str = "custom") -> tuple[HookedCLIPVision, HookedCLIPText]:
    """Build both hooked towers from a transformers ``CLIPModel``, copying its weights exactly.

    Example:
        >>> from transformers import CLIPConfig, CLIPModel
        >>> vision, text = towers_from_hf(CLIPModel(CLIPConfig()))
    """
    vcfg, tcfg = tower_configs(hf_model.config, model_name)
    state = hf_model.state_dict()
    dtype = next(hf_model.parameters()).dtype
    towers = []
    for cls, cfg, maps in ((HookedCLIPVision, vcfg, vision_weight_maps(vcfg)), (HookedCLIPText, tcfg, text_weight_maps(tcfg))):
        with torch.device("meta"):
            tower = cls(cfg)
        tower.load_state_dict(to_ours(state, maps, axis_sizes(cfg)), strict=True, assign=True)
        towers.append(tower.to(dtype=dtype))
    return towers[0], towers[1]
