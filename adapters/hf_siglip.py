"""The weight mapping between transformers' ``SiglipModel`` and the hooked towers.

What SigLIP adds to CLIP, and how the towers hold it:

- no CLS token and no ``ln_pre``; the patch embedding has a bias (``embed.b_E``);
- the vision tower pools with an attention head, the "MAP" head: a learned probe attends over the
  tokens after ``post_layernorm`` (``ln_final`` here), then a LayerNorm + MLP residual. It is
  ``vision.attn_pool`` (``components.AttentionPool``), with the hooks of every other attention
  (``attn_pool.attn.hook_pattern``, ``hook_z``, ``hook_result``). Its output is the image
  embedding: SigLIP has no projection after it;
- the text tower attends bidirectionally, pools the *last* position (texts are padded to the full
  context, 64 tokens, as in training) and projects with a linear head that has a bias
  (``text.W_proj`` / ``text.b_proj``).

The encoder layers are named as in CLIP, so ``hf_clip.all_layer_maps`` serves both.
"""

from __future__ import annotations

from typing import Any

from sith_lens.adapters.hf_clip import all_layer_maps
from sith_lens.adapters.transformer_lens import TowerConfig
from sith_lens.adapters.weight_maps import WeightMap, fused_qkv_maps, ln_maps, mlp_maps, out_proj_maps


def vision_weight_maps(cfg: TowerConfig, prefix: str = "vision_model.") -> list[WeightMap]:
    """Every vision tensor's mapping, the MAP head's fused ``in_proj`` included."""
    head = f"{prefix}head"
    maps = [
        WeightMap("embed.W_E", f"{prefix}embeddings.patch_embedding.weight", "d c p1 p2 -> (c p1 p2) d"),
        WeightMap("embed.b_E", f"{prefix}embeddings.patch_embedding.bias", None),
        WeightMap("embed.W_pos", f"{prefix}embeddings.position_embedding.weight", None),
        *ln_maps("ln_final", f"{prefix}post_layernorm"),
        WeightMap("attn_pool.probe", f"{head}.probe", "1 1 d -> d"),
        *fused_qkv_maps("attn_pool.attn", f"{head}.attention.in_proj_weight", f"{head}.attention.in_proj_bias"),
        *out_proj_maps("attn_pool.attn", f"{head}.attention.out_proj"),
        *ln_maps("attn_pool.ln", f"{head}.layernorm"),
        *mlp_maps("attn_pool.mlp", f"{head}.mlp.fc1", f"{head}.mlp.fc2"),
    ]
    return maps + all_layer_maps(cfg, prefix)


def text_weight_maps(cfg: TowerConfig, prefix: str = "text_model.") -> list[WeightMap]:
    """Every text tensor's mapping; the head is a biased linear layer."""
    maps = [
        WeightMap("embed.W_E", f"{prefix}embeddings.token_embedding.weight", None),
        WeightMap("pos_embed.W_pos", f"{prefix}embeddings.position_embedding.weight", None),
        *ln_maps("ln_final", f"{prefix}final_layer_norm"),
        WeightMap("W_proj", f"{prefix}head.weight", "p d -> d p"),
        WeightMap("b_proj", f"{prefix}head.bias", None),
    ]
    return maps + all_layer_maps(cfg, prefix)


def tower_configs(hf_config: Any, model_name: str = "custom") -> tuple[TowerConfig, TowerConfig]:
    """Build the vision and text ``TowerConfig`` from a transformers ``SiglipConfig``."""
    v, t = hf_config.vision_config, hf_config.text_config
    if not getattr(v, "vision_use_head", True):
        raise ValueError(
            f"{model_name!r}: this SigLIP vision config has vision_use_head=False, so it has no image "
            "embedding (no MAP head); load_clip supports SigLIP models with their pooling head"
        )
    if t.projection_size != v.hidden_size:
        raise ValueError(
            f"{model_name!r}: the text head projects to {t.projection_size} but the image embedding has "
            f"{v.hidden_size} dimensions; SiglipModel needs them equal"
        )
    vision = TowerConfig(
        modality="vision", n_layers=v.num_hidden_layers, n_heads=v.num_attention_heads, d_model=v.hidden_size,
        d_head=v.hidden_size // v.num_attention_heads, d_mlp=v.intermediate_size,
        n_ctx=(v.image_size // v.patch_size) ** 2, d_proj=v.hidden_size, act_fn=v.hidden_act, eps=v.layer_norm_eps,
        image_size=v.image_size, patch_size=v.patch_size, n_channels=v.num_channels,
        has_cls_token=False, has_ln_pre=False, patch_bias=True, pooling="map", model_name=model_name,
    )
    text = TowerConfig(
        modality="text", n_layers=t.num_hidden_layers, n_heads=t.num_attention_heads, d_model=t.hidden_size,
        d_head=t.hidden_size // t.num_attention_heads, d_mlp=t.intermediate_size,
        n_ctx=t.max_position_embeddings, d_proj=t.projection_size, act_fn=t.hidden_act, eps=t.layer_norm_eps,
        d_vocab=t.vocab_size, eos_token_id=t.eos_token_id if t.eos_token_id is not None else -1,
        pooling="last", proj_bias=True, causal=False, mask_padding=False, pad_to_n_ctx=True, model_name=model_name,
    )
    return vision, text
