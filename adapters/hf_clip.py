"""The weight mapping between transformers' ``CLIPModel`` and the hooked towers (see
``weight_maps`` for how a table is read). SigLIP's encoder layers are named like CLIP's, so
``hf_siglip`` reuses ``layer_maps``.
"""

from __future__ import annotations

from typing import Any

from sith_lens.adapters.transformer_lens import TowerConfig
from sith_lens.adapters.weight_maps import WeightMap, ln_maps, mlp_maps, out_proj_maps


def layer_maps(ours: str, theirs: str) -> list[WeightMap]:
    """One encoder layer (``self_attn.{q,k,v,out}_proj``, ``layer_norm1/2``, ``mlp.fc1/fc2``)."""
    maps = []
    for x in "QKV":
        proj = f"{theirs}.self_attn.{x.lower()}_proj"
        maps.append(WeightMap(f"{ours}.attn.W_{x}", f"{proj}.weight", "(h e) d -> h d e"))
        maps.append(WeightMap(f"{ours}.attn.b_{x}", f"{proj}.bias", "(h e) -> h e"))
    return [
        *maps,
        *out_proj_maps(f"{ours}.attn", f"{theirs}.self_attn.out_proj"),
        *mlp_maps(f"{ours}.mlp", f"{theirs}.mlp.fc1", f"{theirs}.mlp.fc2"),
        *ln_maps(f"{ours}.ln1", f"{theirs}.layer_norm1"),
        *ln_maps(f"{ours}.ln2", f"{theirs}.layer_norm2"),
    ]


def all_layer_maps(cfg: TowerConfig, prefix: str) -> list[WeightMap]:
    """Every block's tensors, ``blocks.{l}`` <- ``{prefix}encoder.layers.{l}``."""
    return [m for layer in range(cfg.n_layers) for m in layer_maps(f"blocks.{layer}", f"{prefix}encoder.layers.{layer}")]


def vision_weight_maps(cfg: TowerConfig, prefix: str = "vision_model.") -> list[WeightMap]:
    """Every vision tensor's mapping; ``prefix`` is where the tower sits in the HF state dict."""
    maps = [
        WeightMap("embed.W_E", f"{prefix}embeddings.patch_embedding.weight", "d c p1 p2 -> (c p1 p2) d"),
        WeightMap("embed.cls_token", f"{prefix}embeddings.class_embedding", None),
        WeightMap("embed.W_pos", f"{prefix}embeddings.position_embedding.weight", None),
        *ln_maps("ln_pre", f"{prefix}pre_layrnorm"),
        *ln_maps("ln_final", f"{prefix}post_layernorm"),
        WeightMap("W_proj", "visual_projection.weight", "p d -> d p"),
    ]
    return maps + all_layer_maps(cfg, prefix)


def text_weight_maps(cfg: TowerConfig, prefix: str = "text_model.") -> list[WeightMap]:
    """Every text tensor's mapping; ``prefix`` is where the tower sits in the HF state dict."""
    maps = [
        WeightMap("embed.W_E", f"{prefix}embeddings.token_embedding.weight", None),
        WeightMap("pos_embed.W_pos", f"{prefix}embeddings.position_embedding.weight", None),
        *ln_maps("ln_final", f"{prefix}final_layer_norm"),
        WeightMap("W_proj", "text_projection.weight", "p d -> d p"),
    ]
    return maps + all_layer_maps(cfg, prefix)


def tower_configs(hf_config: Any, model_name: str = "custom") -> tuple[TowerConfig, TowerConfig]:
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
