"""OpenCLIP models on the hooked towers (the optional ``[open_clip]`` extra).

``load_clip("open_clip:ARCH/PRETRAINED")`` builds the model with open_clip, then copies its weights
into ``HookedCLIPVision`` / ``HookedCLIPText`` through weight-map tables, as for transformers
checkpoints: our towers compute the forward pass, open_clip's own forward is the reference in the
tests. What OpenCLIP's ``VisionTransformer`` / ``TextTransformer`` have and how it maps:

- ``nn.MultiheadAttention``'s fused ``in_proj_weight`` ``[3 d, d]`` -> ``W_Q``, ``W_K``, ``W_V``
  (one chunk each), ``out_proj`` -> ``W_O``; ``c_fc`` / ``c_proj`` -> ``W_in`` / ``W_out``;
- ``conv1`` (no bias) -> ``embed.W_E``, ``class_embedding``, ``positional_embedding``,
  ``ln_pre`` (absent with ``no_ln_pre``), ``ln_post`` -> ``ln_final``, ``proj`` -> ``W_proj``;
- ``pool_type`` ``tok`` / ``avg`` -> ``cls`` / ``avg`` pooling, ``final_ln_after_pool`` ->
  ``ln_after_pool``; LayerScale (``ls_init_value``) is folded into ``out_proj`` and ``c_proj``,
  which computes the same function;
- text: causal or not (``no_causal_mask``), pooling ``argmax`` / ``eos`` / ``last`` / ``first``,
  ``text_projection`` as a matrix or a biased linear layer.

Not supported, with a message saying so: towers built on timm (OpenCLIP's SigLIP, ViTamin,
MobileCLIP...), ResNet towers, Hugging Face text encoders, CoCa (attentional pooling and a text
CLS token), and blocks with QK-norm or scaled-cosine attention.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from sith_lens.adapters.transformer_lens import TowerConfig
from sith_lens.adapters.weight_maps import WeightMap, build_towers, fused_qkv_maps, ln_maps, mlp_maps, out_proj_maps

INSTALL_HINT = (
    "OpenCLIP support needs the optional extra: pip install 'sith-lens[open-clip]' (it pulls torchvision, "
    "and with it a CUDA build of torch; see docs/models.md)"
)


def import_open_clip() -> Any:
    """``open_clip``, or an ``ImportError`` that says how to install it."""
    try:
        import open_clip
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from None
    return open_clip


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"open_clip:ARCH/PRETRAINED"`` -> ``(ARCH, PRETRAINED)``; PRETRAINED may be a tag, a file
    path or absent (random weights); ``"open_clip:hf-hub:ORG/NAME"`` is passed to open_clip whole.

    Example:
        >>> parse_spec("open_clip:ViT-B-32/laion2b_s34b_b79k")
        ('ViT-B-32', 'laion2b_s34b_b79k')
    """
    rest = spec[len("open_clip:"):].strip()
    if not rest:
        raise ValueError("'open_clip:' needs an architecture, e.g. 'open_clip:ViT-B-32/laion2b_s34b_b79k'")
    if rest.startswith("hf-hub:"):
        return rest, None
    arch, _, pretrained = rest.partition("/")
    return arch, pretrained or None


class OpenCLIPTokenizer:
    """open_clip's tokenizer behind the calling convention ``HookedCLIP.tokenize`` uses
    (``tokenizer(texts, padding=, truncation=, max_length=, return_tensors=)``).

    Texts are padded to the full context, as open_clip always does; the attention mask marks the
    positions up to and including the end-of-text token.
    """

    def __init__(self, tokenizer: Any, context_length: int):
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.eot_token_id = getattr(tokenizer, "eot_token_id", None)
        self.pad_token_id = None

    def __call__(
        self, texts: Sequence[str], padding: Any = True, truncation: bool = True, max_length: int | None = None,
        return_tensors: str | None = None,
    ) -> dict[str, Any]:
        texts = list(texts)
        if not truncation and hasattr(self.tokenizer, "encode") and self.eot_token_id is not None:
            sot = self.tokenizer.sot_token_id
            return {"input_ids": [[sot, *self.tokenizer.encode(t), self.eot_token_id] for t in texts]}
        ids = self.tokenizer(texts, context_length=max_length or self.context_length)
        if self.eot_token_id is None:
            mask = torch.ones_like(ids)
        else:
            end = (ids == self.eot_token_id).int().argmax(-1)
            mask = (torch.arange(ids.shape[1])[None] <= end[:, None]).long()
        if not truncation:
            return {"input_ids": [row[m.bool()].tolist() for row, m in zip(ids, mask)]}
        return {"input_ids": ids, "attention_mask": mask}


def _activation(mlp: nn.Module) -> str:
    act = mlp.gelu
    if type(act).__name__ == "QuickGELU":
        return "quick_gelu"
    if isinstance(act, nn.GELU):
        return "gelu" if act.approximate == "none" else "gelu_pytorch_tanh"
    raise ValueError(f"unsupported OpenCLIP activation {type(act).__name__}; supported: QuickGELU, GELU")


def _check_blocks(blocks: nn.ModuleList, tower: str) -> None:
    from open_clip.transformer import ResidualAttentionBlock

    if not all(isinstance(b, ResidualAttentionBlock) for b in blocks):
        raise ValueError(
            f"this OpenCLIP {tower} tower uses {type(blocks[0]).__name__} blocks (QK-norm, scaled-cosine "
            "or other custom attention), which sith-lens does not support; standard ViT blocks only"
        )
    if not all(isinstance(b.attn, nn.MultiheadAttention) and b.attn._qkv_same_embed_dim for b in blocks):
        raise ValueError(f"this OpenCLIP {tower} tower's attention is not a fused nn.MultiheadAttention")


def _block_shape(block: nn.Module) -> dict[str, Any]:
    return dict(
        n_heads=block.attn.num_heads, d_head=block.attn.head_dim, d_mlp=block.mlp.c_fc.out_features,
        act_fn=_activation(block.mlp), eps=block.ln_1.eps,
    )


def _text_module(model: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the text tower's parts, and its prefix in the state dict."""
    text = getattr(model, "text", None)
    if text is None:
        return model, ""  # open_clip.CLIP keeps the text parts at the top level
    from open_clip.transformer import TextTransformer

    if not isinstance(text, TextTransformer):
        raise ValueError(
            f"this OpenCLIP model's text tower is a {type(text).__name__} (a Hugging Face text encoder); "
            "sith-lens supports OpenCLIP's own TextTransformer only"
        )
    return text, "text."


def tower_configs(model: nn.Module, model_name: str) -> tuple[TowerConfig, TowerConfig]:
    """Vision and text ``TowerConfig`` read off a built open_clip model (not its JSON config, so
    that every module option is seen as instantiated)."""
    from open_clip.transformer import VisionTransformer

    visual = model.visual
    if not isinstance(visual, VisionTransformer):
        raise ValueError(
            f"this OpenCLIP model's image tower is a {type(visual).__name__} (a timm or ResNet tower, as in "
            "OpenCLIP's SigLIP, ViTamin or RN50 models); sith-lens supports OpenCLIP's own VisionTransformer. "
            "For SigLIP, load the transformers checkpoint instead (e.g. 'google/siglip-base-patch16-224')"
        )
    if visual.attn_pool is not None:
        raise ValueError("CoCa-style attentional pooling (attn_pool) is not supported; use a contrastive CLIP model")
    if visual.proj is None:
        raise ValueError("this OpenCLIP image tower has no projection (proj is None); load the full model")
    blocks = visual.transformer.resblocks
    _check_blocks(blocks, "image")
    (h, w), (ph, pw) = visual.image_size, visual.patch_size
    if h != w or ph != pw:
        raise ValueError(f"non-square images or patches ({h}x{w}, patch {ph}x{pw}) are not supported")
    vision = TowerConfig(
        modality="vision", n_layers=len(blocks), d_model=visual.conv1.out_channels,
        n_ctx=visual.positional_embedding.shape[0], d_proj=visual.proj.shape[1], image_size=h, patch_size=ph,
        has_ln_pre=not isinstance(visual.ln_pre, nn.Identity), pooling={"tok": "cls", "avg": "avg"}[visual.pool_type],
        ln_after_pool=bool(visual.final_ln_after_pool), model_name=model_name, **_block_shape(blocks[0]),
    )
    text, _ = _text_module(model)
    if getattr(text, "cls_emb", None) is not None:
        raise ValueError("a text tower with an appended CLS token (CoCa) is not supported")
    if getattr(text, "use_pad_mask", False):
        raise ValueError("a text tower with a padding mask (use_pad_mask) is not supported")
    projection = text.text_projection
    if projection is None:
        raise ValueError("this OpenCLIP text tower has no projection (text_projection is None)")
    linear = isinstance(projection, nn.Linear)
    pool = getattr(model, "text_pool_type", None) or text.pool_type
    eos = getattr(model, "text_eos_id", None) or getattr(text, "eos_id", None)
    _check_blocks(text.transformer.resblocks, "text")
    text_cfg = TowerConfig(
        modality="text", n_layers=len(text.transformer.resblocks), d_model=text.token_embedding.embedding_dim,
        n_ctx=text.positional_embedding.shape[0], d_proj=projection.out_features if linear else projection.shape[1],
        d_vocab=text.token_embedding.num_embeddings, eos_token_id=-1 if eos is None else int(eos),
        pooling=pool, proj_bias=linear and projection.bias is not None, causal=text.attn_mask is not None,
        mask_padding=False, pad_to_n_ctx=True, model_name=model_name, **_block_shape(text.transformer.resblocks[0]),
    )
    if text_cfg.pooling == "eos" and text_cfg.eos_token_id in (-1, 2):
        raise ValueError(f"text pooling 'eos' needs the end-of-text id, got {eos!r}")
    return vision, text_cfg


def _block_maps(cfg: TowerConfig, prefix: str) -> list[WeightMap]:
    maps = []
    for layer in range(cfg.n_layers):
        ours, theirs = f"blocks.{layer}", f"{prefix}resblocks.{layer}"
        maps += [
            *fused_qkv_maps(f"{ours}.attn", f"{theirs}.attn.in_proj_weight", f"{theirs}.attn.in_proj_bias"),
            *out_proj_maps(f"{ours}.attn", f"{theirs}.attn.out_proj"),
            *ln_maps(f"{ours}.ln1", f"{theirs}.ln_1"),
            *ln_maps(f"{ours}.ln2", f"{theirs}.ln_2"),
            *mlp_maps(f"{ours}.mlp", f"{theirs}.mlp.c_fc", f"{theirs}.mlp.c_proj"),
        ]
    return maps


def vision_weight_maps(cfg: TowerConfig) -> list[WeightMap]:
    """Every tensor of OpenCLIP's ``visual`` tower."""
    maps = [
        WeightMap("embed.W_E", "visual.conv1.weight", "d c p1 p2 -> (c p1 p2) d"),
        WeightMap("embed.cls_token", "visual.class_embedding", None),
        WeightMap("embed.W_pos", "visual.positional_embedding", None),
        *(ln_maps("ln_pre", "visual.ln_pre") if cfg.has_ln_pre else []),
        *ln_maps("ln_final", "visual.ln_post"),
        WeightMap("W_proj", "visual.proj", None),
    ]
    return maps + _block_maps(cfg, "visual.transformer.")


def text_weight_maps(cfg: TowerConfig, prefix: str = "", linear_projection: bool = False) -> list[WeightMap]:
    """Every tensor of OpenCLIP's text tower; ``prefix`` is ``"text."`` in a ``CustomTextCLIP``, and
    ``linear_projection`` says that ``text_projection`` is an ``nn.Linear`` rather than a matrix."""
    if linear_projection:
        projection = [WeightMap("W_proj", f"{prefix}text_projection.weight", "p d -> d p")]
        projection += [WeightMap("b_proj", f"{prefix}text_projection.bias", None)] if cfg.proj_bias else []
    else:
        projection = [WeightMap("W_proj", f"{prefix}text_projection", None)]
    maps = [
        WeightMap("embed.W_E", f"{prefix}token_embedding.weight", None),
        WeightMap("pos_embed.W_pos", f"{prefix}positional_embedding", None),
        *ln_maps("ln_final", f"{prefix}ln_final"),
        *projection,
    ]
    return maps + _block_maps(cfg, f"{prefix}transformer.")


def fold_layer_scale(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Fold LayerScale gains (``ls_1.gamma``, ``ls_2.gamma``) into the projections they scale:
    ``gamma * (x W^T + b)`` = ``x (gamma W)^T + gamma b``. Returns a new dict."""
    state = dict(state)
    for key in [k for k in state if k.endswith((".ls_1.gamma", ".ls_2.gamma"))]:
        block = key.rsplit(".", 2)[0]
        proj = f"{block}.attn.out_proj" if ".ls_1." in key else f"{block}.mlp.c_proj"
        gamma = state.pop(key)
        state[f"{proj}.weight"] = state[f"{proj}.weight"] * gamma[:, None]
        state[f"{proj}.bias"] = state[f"{proj}.bias"] * gamma
    return state


def preprocessing(model: nn.Module, image_size: int) -> Any:
    """A transformers image processor that does what open_clip's eval transform does: resize the
    short side (bicubic), crop the centre, normalise with the model's mean and std."""
    from transformers import CLIPImageProcessorPil

    from sith_lens.adapters.families import resize_and_crop, resize_to_square

    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    kwargs: dict[str, Any] = {}
    if "mean" in cfg:
        kwargs.update(image_mean=list(cfg["mean"]), image_std=list(cfg["std"]))
    if cfg.get("resize_mode", "shortest") == "squash":
        return CLIPImageProcessorPil(**resize_to_square(image_size), do_center_crop=False, **kwargs)
    return CLIPImageProcessorPil(**resize_and_crop(image_size), **kwargs)


def _check_config(config: dict[str, Any] | None, arch: str) -> None:
    """Refuse unsupported architectures from their JSON config, before building a large model."""
    if not config:
        return
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    if "timm_model_name" in vision or isinstance(vision.get("layers"), (list, tuple)):
        tower = "a timm tower" if "timm_model_name" in vision else "a ResNet tower"
        raise ValueError(
            f"OpenCLIP {arch!r} has {tower} for images; sith-lens supports OpenCLIP's own VisionTransformer "
            "(ViT-B-32, ViT-L-14, ViT-H-14, ...). For SigLIP, load the transformers checkpoint instead "
            "(e.g. 'google/siglip-base-patch16-224')"
        )
    if "hf_model_name" in text:
        raise ValueError(f"OpenCLIP {arch!r} has a Hugging Face text encoder; sith-lens supports OpenCLIP's own TextTransformer")
    if vision.get("attentional_pool") or text.get("embed_cls"):
        raise ValueError(f"OpenCLIP {arch!r} is a CoCa model (attentional pooling, text CLS token), which is not supported")


def _create(arch: str, pretrained: str | None, name: str) -> tuple[nn.Module, Any]:
    open_clip = import_open_clip()
    if not arch.startswith("hf-hub:"):
        models = open_clip.list_models()
        if arch not in models:
            import difflib

            close = difflib.get_close_matches(arch, models, n=3)
            raise ValueError(f"unknown OpenCLIP architecture {arch!r}" + (f"; did you mean {close}?" if close else "; see open_clip.list_models()"))
        _check_config(open_clip.get_model_config(arch), arch)
    is_file = pretrained is not None and (os.sep in pretrained or "/" in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors")))
    if is_file:
        if not Path(pretrained).expanduser().is_file():
            raise FileNotFoundError(f"{name!r}: no OpenCLIP checkpoint file at {pretrained!r}")
        pretrained = str(Path(pretrained).expanduser())
    elif pretrained is not None:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if pretrained not in tags:
            raise ValueError(
                f"OpenCLIP {arch!r} has no pretrained weights tagged {pretrained!r}; its tags are {tags or 'none'}. "
                "A checkpoint file is also accepted: 'open_clip:ARCH/path/to/checkpoint.pt'"
            )
    try:
        with torch.random.fork_rng():  # random weights (no PRETRAINED) are seeded
            torch.manual_seed(0)
            model = open_clip.create_model(arch, pretrained=pretrained)
    except Exception as err:
        if pretrained is None:
            raise
        if is_file:
            raise ValueError(
                f"cannot read the OpenCLIP checkpoint {pretrained!r} as weights of {arch!r} ({type(err).__name__}: "
                f"{err}); the file is corrupt or belongs to another architecture"
            ) from None
        from sith_lens.adapters.loading import ModelNotAvailableError

        raise ModelNotAvailableError(
            f"cannot load OpenCLIP weights {name!r} ({type(err).__name__}: {err}). They are not in the cache, "
            "and the hub cannot be reached; download them on a machine with network access "
            "(open_clip.create_model(ARCH, pretrained=TAG)) and pass the checkpoint file: "
            "'open_clip:ARCH/path/to/open_clip_model.safetensors'"
        ) from None
    try:
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception:  # a tokenizer that lives on the hub
        tokenizer = None
    return model.eval(), tokenizer


def load_open_clip(spec: Any, tokenizer: Any = None, image_processor: Any = None) -> Any:
    """A ``HookedCLIP`` from an OpenCLIP spec string or an already-built open_clip model.

    Example:
        >>> model = load_open_clip("open_clip:ViT-B-32/laion2b_s34b_b79k")  # doctest: +SKIP
        >>> model.vision.cfg.act_fn                                          # doctest: +SKIP
        'gelu'
    """
    from sith_lens.adapters.loading import CLIPInfo, HookedCLIP

    if isinstance(spec, str):
        arch, pretrained = parse_spec(spec)
        model, found_tokenizer = _create(arch, pretrained, spec)
        name = spec
    else:
        import_open_clip()
        model, found_tokenizer, name = spec, None, f"open_clip:{type(spec).__name__}"
    vcfg, tcfg = tower_configs(model, name)
    text_module, prefix = _text_module(model)
    text_maps = text_weight_maps(tcfg, prefix, isinstance(text_module.text_projection, nn.Linear))
    state = fold_layer_scale(model.state_dict())
    dtype = model.visual.conv1.weight.dtype
    vision, text = build_towers(state, (vcfg, tcfg), (vision_weight_maps(vcfg), text_maps), dtype)
    tok = tokenizer if tokenizer is not None else found_tokenizer
    if tok is not None and not hasattr(tok, "pad_token_id"):  # open_clip's own tokenizers
        tok = OpenCLIPTokenizer(tok, tcfg.n_ctx)
    bias = getattr(model, "logit_bias", None)
    return HookedCLIP(
        vision, text, CLIPInfo(model_name=name, family="open_clip", d_proj=vcfg.d_proj),
        logit_scale=float(model.logit_scale.detach().reshape(-1)[0]),
        logit_bias=0.0 if bias is None else float(bias.detach().reshape(-1)[0]),
        tokenizer=tok,
        image_processor=image_processor if image_processor is not None else preprocessing(model, vcfg.image_size),
    ).eval()
