"""TransformerLens 3 ``TransformerBridge`` architecture adapters for CLIP and SigLIP towers.

``TransformerBridge.boot_transformers(name)`` wraps a transformers model in TransformerLens's hook
and weight vocabulary through one *architecture adapter* per model class. TransformerLens 3.9 has
none for CLIP or SigLIP; this module adds them and ``pyproject.toml`` declares them under the
entry-point group ``transformer_lens.architectures``:

=================================  =============================================================
Architecture (``config.json``)     What the bridge wraps
=================================  =============================================================
``CLIPModel``                      the vision tower and its projection, loaded as
                                   ``CLIPVisionModelWithProjection`` (the text weights are skipped)
``CLIPVisionModelWithProjection``  the same
``CLIPVisionModel``                the vision tower alone (no projection)
``SiglipModel``                    the vision tower with its attention-pooling head, loaded as
                                   ``SiglipVisionModel``
``SiglipVisionModel``              the same
=================================  =============================================================

A bridge runs the transformers model's own forward (``bridge(pixels)`` returns its
``last_hidden_state``) and hooks the modules it passes through. Its names against ours
(``HookedCLIPVision``), same activations (tested to 1e-5):

================================  ==============================  ================================
Bridge                            sith-lens                       Note
================================  ==============================  ================================
``embed.hook_out``                ``hook_embed`` + ``hook_pos_embed``  CLIP: before ``ln_pre``
``ln_pre.hook_out``               ``ln_pre.hook_normalized``      CLIP only; ours is w/b applied
``blocks.{l}.hook_resid_pre``     ``blocks.{l}.hook_resid_pre``
``blocks.{l}.attn.hook_q/k/v``    ``blocks.{l}.attn.hook_q/k/v``  [batch, pos, head, d_head]
``blocks.{l}.attn.hook_z``        ``blocks.{l}.attn.hook_z``
``blocks.{l}.attn.hook_pattern``  ``blocks.{l}.attn.hook_pattern``
``blocks.{l}.hook_attn_out``      ``blocks.{l}.hook_attn_out``
``blocks.{l}.hook_resid_mid``     ``blocks.{l}.hook_resid_mid``
``blocks.{l}.mlp.hook_pre``       ``blocks.{l}.mlp.hook_pre``
``blocks.{l}.mlp.hook_post``      ``blocks.{l}.mlp.hook_post``
``blocks.{l}.hook_mlp_out``       ``blocks.{l}.hook_mlp_out``
``blocks.{l}.hook_resid_post``    ``blocks.{l}.hook_resid_post``
``ln_final.hook_out``             ``ln_final.affine`` of the pooled token  CLIP: CLS only
``W_Q/W_K/W_V/W_O``, ``OV``, ``QK``  the same, stacked [layer, head, ...]
================================  ==============================  ================================

The bridge's ``attn.hook_attn_scores`` is *not* our pre-softmax score: the bridge delegates
attention to transformers, which returns only the pattern, and TransformerLens fires
``hook_attn_scores`` with that pattern.

Three things do not come through the bridge, and are refused rather than given wrong:

- ``enable_compatibility_mode()`` / ``process_weights()``: TransformerLens's folding and centring
  assume every residual read goes through ``ln1``/``ln2``/``ln_final`` into an ``unembed``;
  CLIP's vision tower has an ``ln_pre`` after the embedding and reads out one token through a
  projection the bridge does not treat as an unembed, SigLIP's through an attention-pooling head.
  ``load_clip(bridge)`` gives the ``HookedCLIP`` whose towers do this right (``ln_final`` is
  centre-and-scale only; ``W_joint`` holds the folded read-out).
- a whole ``CLIPModel`` / ``SiglipModel`` instance as ``hf_model=``: its forward needs text and
  images. Pass ``hf_model=vision_tower(model)`` (a copy of its vision half).
- the text towers: ``boot()`` loads a text model as a causal LM and a tokenizer from the hub, and
  TransformerLens's text path assumes an ``unembed``; use ``load_clip(...).text``.

TransformerLens 3.9.0's ``boot()`` looks an architecture up in its built-in table before it loads
entry points, so an entry-point adapter for a new architecture is never reached through
``boot_transformers``. ``install_boot_lookup()`` extends that lookup, and only that: a config
TransformerLens resolves itself is never touched. It runs when this module is imported, which
``import sith_lens`` arranges for the moment TransformerLens's loader is imported; the installed
``sith_lens-tl3.pth`` (see ``setup.py``) imports sith_lens at interpreter start, so that code which
never imports sith_lens finds the adapters too.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import torch

from transformer_lens.model_bridge.architecture_adapter import ArchitectureAdapter
from transformer_lens.model_bridge.generalized_components import (
    AttentionBridge,
    BlockBridge,
    LinearBridge,
    MLPBridge,
    NormalizationBridge,
)
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent


class CompatibilityModeRefused(RuntimeError):
    """TransformerLens's weight processing cannot apply to a CLIP-family tower (see the module)."""


COMPATIBILITY_REFUSAL = (
    "TransformerLens's weight processing (enable_compatibility_mode / process_weights: fold_ln, "
    "centring) cannot apply to a {family} vision tower: it assumes every read of the residual "
    "stream goes through ln1/ln2/ln_final into an unembed, but {reason}, so the folded weights "
    "would give wrong numbers. Use the bridge's default (raw-weight) forward, or "
    "sith_lens.load_clip(bridge) for a HookedCLIP whose ln_final is centre-and-scale only and whose "
    "W_joint holds the folded read-out"
)
_REASONS = {
    "CLIP": "CLIP's embedding passes through ln_pre before the residual stream and the read-out takes one "
    "token through post_layernorm and a projection that the bridge does not treat as an unembed",
    "SigLIP": "SigLIP reads the residual stream out through an attention-pooling head",
}


class PixelEmbeddingsBridge(GeneralizedComponent):
    """The patch + position (+ CLS) embedding module, run as transformers runs it; ``hook_in`` sees
    the pixels, ``hook_out`` the embedded tokens."""

    def forward(self, pixel_values: torch.Tensor, **kwargs: Any) -> Any:
        # positional, so that the base class's hook_in sees the pixels
        return super().forward(pixel_values, **kwargs)


def _layers(cfg: Any) -> BlockBridge:
    """The encoder layers of CLIP and SigLIP (same module names)."""

    def norm(name: str) -> NormalizationBridge:
        return NormalizationBridge(name=name, config=cfg, use_native_layernorm_autograd=True)

    return BlockBridge(
        name="encoder.layers",
        hook_alias_overrides={"hook_mlp_out": "mlp.out.hook_out", "hook_mlp_in": "mlp.in.hook_in"},
        submodules={
            "ln1": norm("layer_norm1"),
            "ln2": norm("layer_norm2"),
            "attn": AttentionBridge(
                name="self_attn",
                config=cfg,
                submodules={
                    "q": LinearBridge(name="q_proj"),
                    "k": LinearBridge(name="k_proj"),
                    "v": LinearBridge(name="v_proj"),
                    "o": LinearBridge(name="out_proj"),
                },
            ),
            "mlp": MLPBridge(
                name="mlp", config=cfg, submodules={"in": LinearBridge(name="fc1"), "out": LinearBridge(name="fc2")}
            ),
        },
    )


class _VisionTowerAdapter(ArchitectureAdapter):
    """What the CLIP and SigLIP vision adapters share: a pre-LN ViT, raw weights, no generation."""

    family = ""
    n_extra_tokens = 0
    """Tokens besides the patches (CLIP's CLS)."""
    supports_generation: bool = False
    applicable_phases: list[int] = [1]
    load_class = ""
    """The transformers class ``boot()`` loads a checkpoint of this architecture with."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.cfg.is_visual_model = True
        self.cfg.normalization_type = "LN"
        self.cfg.positional_embedding_type = "standard"
        self.cfg.final_rms = False
        self.cfg.gated_mlp = False
        self.cfg.attn_only = False
        self.supports_fold_ln = False
        self.weight_processing_conversions = {}
        self.component_mapping = self._mapping("", None)

    @property
    def supports_compatibility_mode(self) -> bool:  # read by TransformerBridge.enable_compatibility_mode
        raise CompatibilityModeRefused(COMPATIBILITY_REFUSAL.format(family=self.family, reason=_REASONS[self.family]))

    def preprocess_weights(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Called by ``process_weights``: refused, see ``COMPATIBILITY_REFUSAL``."""
        raise CompatibilityModeRefused(COMPATIBILITY_REFUSAL.format(family=self.family, reason=_REASONS[self.family]))

    def _mapping(self, prefix: str, projection: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def prepare_loading(self, model_name: str, model_kwargs: dict) -> None:
        """Load a dual-encoder checkpoint's vision half: the vision config, with the projection width."""
        config = model_kwargs.get("config")
        vision_config = getattr(config, "vision_config", None)
        if vision_config is not None:
            vision_config = vision_config.__class__.from_dict(vision_config.to_dict())
            if hasattr(config, "projection_dim"):
                vision_config.projection_dim = config.projection_dim
            model_kwargs["config"] = vision_config
        vision_config = model_kwargs.get("config")
        if vision_config is not None and hasattr(vision_config, "_attn_implementation"):
            vision_config._attn_implementation = "eager"

    def prepare_model(self, hf_model: Any) -> None:
        """Point the mapping at where this model class keeps the tower; eager attention, so that
        transformers returns the attention pattern the bridge hooks."""
        if hasattr(hf_model, "text_model"):
            raise ValueError(
                f"TransformerBridge runs the wrapped model's own forward, and a whole {type(hf_model).__name__} "
                "needs text and images; bridge its vision tower instead: "
                "TransformerBridge.boot_transformers(name, hf_model=sith_lens.adapters.bridge.vision_tower(model))"
            )
        if hasattr(hf_model, "set_attn_implementation"):
            hf_model.set_attn_implementation("eager")
        vision = getattr(hf_model, "vision_model", None)
        prefix = "vision_model." if vision is not None else ""
        projection = "visual_projection" if hasattr(hf_model, "visual_projection") else None
        _copy_vision_dims(self.cfg, hf_model.config, self.n_extra_tokens)
        self.component_mapping = self._mapping(prefix, projection)


def _copy_vision_dims(cfg: Any, vision_config: Any, n_extra_tokens: int) -> None:
    """The bridge config's sizes from the vision config (``boot`` reads a dual-encoder config's
    text side)."""
    cfg.d_model = vision_config.hidden_size
    cfg.n_heads = vision_config.num_attention_heads
    cfg.d_head = vision_config.hidden_size // vision_config.num_attention_heads
    cfg.n_layers = vision_config.num_hidden_layers
    cfg.d_mlp = vision_config.intermediate_size
    cfg.act_fn = vision_config.hidden_act
    cfg.eps = vision_config.layer_norm_eps
    cfg.n_ctx = (vision_config.image_size // vision_config.patch_size) ** 2 + n_extra_tokens
    cfg.d_vocab = -1


class CLIPVisionArchitectureAdapter(_VisionTowerAdapter):
    """transformers' CLIP vision tower: ``embed`` -> ``ln_pre`` -> ``blocks`` -> ``ln_final`` on the
    CLS token (-> ``proj``, the visual projection, when the model has one)."""

    family = "CLIP"
    n_extra_tokens = 1
    load_class = "CLIPVisionModelWithProjection"

    def _mapping(self, prefix: str, projection: str | None) -> dict[str, Any]:
        def norm(name: str) -> NormalizationBridge:
            return NormalizationBridge(name=name, config=self.cfg, use_native_layernorm_autograd=True)

        mapping: dict[str, Any] = {
            "embed": PixelEmbeddingsBridge(name=f"{prefix}embeddings"),
            "ln_pre": norm(f"{prefix}pre_layrnorm"),
            "blocks": _layers(self.cfg),
            "ln_final": norm(f"{prefix}post_layernorm"),
        }
        mapping["blocks"].name = f"{prefix}encoder.layers"
        if projection is not None:
            mapping["proj"] = LinearBridge(name=projection)
        return mapping


class SiglipVisionArchitectureAdapter(_VisionTowerAdapter):
    """transformers' SigLIP vision tower: ``embed`` (no CLS) -> ``blocks`` -> ``ln_final`` on every
    token -> ``pool`` (the attention-pooling head, whose output is the image embedding)."""

    family = "SigLIP"
    n_extra_tokens = 0
    load_class = "SiglipVisionModel"

    def _mapping(self, prefix: str, projection: str | None) -> dict[str, Any]:
        mapping: dict[str, Any] = {
            "embed": PixelEmbeddingsBridge(name=f"{prefix}embeddings"),
            "blocks": _layers(self.cfg),
            "ln_final": NormalizationBridge(
                name=f"{prefix}post_layernorm", config=self.cfg, use_native_layernorm_autograd=True
            ),
            "pool": GeneralizedComponent(name=f"{prefix}head"),
        }
        mapping["blocks"].name = f"{prefix}encoder.layers"
        return mapping


ARCHITECTURES: dict[str, type[_VisionTowerAdapter]] = {
    "CLIPModel": CLIPVisionArchitectureAdapter,
    "CLIPVisionModel": CLIPVisionArchitectureAdapter,
    "CLIPVisionModelWithProjection": CLIPVisionArchitectureAdapter,
    "SiglipModel": SiglipVisionArchitectureAdapter,
    "SiglipVisionModel": SiglipVisionArchitectureAdapter,
}
"""Architecture name (``config.architectures[0]``) -> adapter; the entry points in ``pyproject.toml``."""

_MODEL_TYPES = {
    "clip": "CLIPModel",
    "clip_vision_model": "CLIPVisionModel",
    "siglip": "SiglipModel",
    "siglip_vision_model": "SiglipVisionModel",
}
"""A config without ``architectures`` (a model built in memory) is recognised by its model_type."""


def architecture_of(hf_config: Any) -> str | None:
    """The architecture name of a CLIP or SigLIP config this module adapts, or None.

    Example:
        >>> from transformers import CLIPVisionConfig
        >>> architecture_of(CLIPVisionConfig())
        'CLIPVisionModel'
    """
    for name in getattr(hf_config, "architectures", None) or []:
        if name in ARCHITECTURES:
            return name
    return _MODEL_TYPES.get(getattr(hf_config, "model_type", None))


def _entry_points_installed() -> bool:
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="transformer_lens.architectures") if ep.value.startswith(__name__)}
    return set(ARCHITECTURES) <= names


def install_boot_lookup() -> None:
    """Let ``TransformerBridge.boot_transformers`` find this module's adapters (idempotent).

    TransformerLens 3.9's ``boot()`` resolves the architecture in its built-in table and picks the
    transformers class to load before it consults entry points; this wraps those two lookups so that
    a CLIP or SigLIP config TransformerLens cannot resolve resolves here. The adapter itself still
    comes through TransformerLens's factory (the entry points, or ``register_adapter``).

    Example:
        >>> install_boot_lookup()
    """
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory
    from transformer_lens.model_bridge.sources import transformers as source

    if not _entry_points_installed():  # a source checkout without installed metadata
        for name, adapter in ARCHITECTURES.items():
            ArchitectureAdapterFactory._adapters.setdefault(name, adapter)
    if getattr(source.determine_architecture_from_hf_config, "sith_lens", False):
        return
    tl_determine = source.determine_architecture_from_hf_config
    tl_model_class = source.get_hf_model_class_for_architecture

    @functools.wraps(tl_determine)
    def determine_architecture_from_hf_config(hf_config: Any) -> str:
        try:
            return tl_determine(hf_config)
        except ValueError:
            name = architecture_of(hf_config)
            if name is None:
                raise
            return name

    @functools.wraps(tl_model_class)
    def get_hf_model_class_for_architecture(architecture: str) -> Any:
        if architecture in ARCHITECTURES:
            import transformers

            return getattr(transformers, ARCHITECTURES[architecture].load_class)
        return tl_model_class(architecture)

    determine_architecture_from_hf_config.sith_lens = True  # type: ignore[attr-defined]
    source.determine_architecture_from_hf_config = determine_architecture_from_hf_config
    source.get_hf_model_class_for_architecture = get_hf_model_class_for_architecture


def vision_tower(model: Any) -> Any:
    """A copy of the vision half of a transformers ``CLIPModel`` or ``SiglipModel``, as the model
    class the bridge wraps (``CLIPVisionModelWithProjection`` / ``SiglipVisionModel``). A copy,
    because the bridge rewires the module tree it wraps (``model.state_dict()`` keys would change).

    Example:
        >>> from transformers import CLIPConfig, CLIPModel
        >>> tower = vision_tower(CLIPModel(CLIPConfig()))
        >>> type(tower).__name__
        'CLIPVisionModelWithProjection'
    """
    import transformers

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type == "clip":
        config = model.config.vision_config.__class__.from_dict(model.config.vision_config.to_dict())
        config.projection_dim = model.config.projection_dim
        with torch.device("meta"):
            tower = transformers.CLIPVisionModelWithProjection(config)
        tower.vision_model = copy.deepcopy(model.vision_model)
        tower.visual_projection = copy.deepcopy(model.visual_projection)
        tower.config.architectures = ["CLIPVisionModelWithProjection"]
        return tower.train(model.training)
    if model_type == "siglip":
        return copy.deepcopy(model.vision_model)
    raise TypeError(
        f"vision_tower takes a transformers CLIPModel or SiglipModel, got {type(model).__name__}"
        + (f" (model_type {model_type!r})" if model_type else "")
    )


def is_clip_bridge(obj: Any) -> bool:
    """Whether ``obj`` is a TransformerBridge over a tower this module adapts."""
    return isinstance(getattr(obj, "adapter", None), _VisionTowerAdapter) and hasattr(obj, "original_model")


def from_bridge(bridge: Any, text_from: Any = None) -> Any:
    """A ``HookedCLIP`` whose vision tower holds the bridge's current weights (edits included) and
    whose text tower, tokenizer and image processor come from ``text_from`` (default: the folder or
    hub id the bridge was booted from). ``load_clip(bridge)`` calls this.

    SITH explains heads with text concepts, so it needs the text tower the bridge does not wrap.

    Example:
        >>> from transformer_lens.model_bridge import TransformerBridge
        >>> from sith_lens.adapters.loading import toy_checkpoint_dir
        >>> bridge = TransformerBridge.boot_transformers(str(toy_checkpoint_dir()), device="cpu")
        >>> model = from_bridge(bridge)
        >>> model.vision.cfg.n_heads == bridge.cfg.n_heads
        True
    """
    from sith_lens.adapters.families import HF_FAMILIES
    from sith_lens.adapters.loading import HookedCLIP, ModelNotAvailableError, load_clip
    from sith_lens.adapters.weight_maps import axis_sizes, to_ours

    if not is_clip_bridge(bridge):
        raise TypeError(
            f"from_bridge takes a TransformerBridge booted with sith-lens's CLIP or SigLIP adapter, got "
            f"{type(bridge).__name__}" + (f" with {type(bridge.adapter).__name__}" if hasattr(bridge, "adapter") else "")
        )
    source = bridge.cfg.model_name if text_from is None else text_from
    try:
        model = copy.deepcopy(source) if isinstance(source, HookedCLIP) else load_clip(source)
    except (ModelNotAvailableError, ValueError, TypeError) as err:
        raise ValueError(
            f"the bridge's vision tower needs a text tower for SITH, and {source!r} gave none ({err}); "
            "pass text_from= the full checkpoint: a folder, a hub id, a CLIPModel/SiglipModel or a HookedCLIP"
        ) from err
    family = HF_FAMILIES[model.cfg.family]
    hf = bridge.original_model
    cfg = model.vision.cfg
    if (bridge.cfg.n_layers, bridge.cfg.n_heads, bridge.cfg.d_model) != (cfg.n_layers, cfg.n_heads, cfg.d_model):
        raise ValueError(
            f"the bridge's vision tower ({bridge.cfg.n_layers} layers, {bridge.cfg.n_heads} heads, width "
            f"{bridge.cfg.d_model}) is not the one of {source!r} ({cfg.n_layers}, {cfg.n_heads}, {cfg.d_model}); "
            "pass text_from= the checkpoint the bridge was booted from"
        )
    prefix = "vision_model." if hasattr(hf, "vision_model") else ""
    # the bridge nests each wrapped module under ``_original_component``
    state = {k.replace("._original_component", ""): v.detach() for k, v in hf.state_dict().items()}
    maps = family.vision_maps(cfg, prefix=prefix)
    missing = [m.theirs for m in maps if m.theirs not in state and m.ours != "W_proj"]
    if missing:  # the projection alone may be absent (a bare CLIPVisionModel): it comes from the source
        raise ValueError(f"the bridged {type(hf).__name__} lacks {missing[:3]}; is it a {family.name} vision tower?")
    maps = [m for m in maps if m.theirs in state]
    ours = to_ours(state, maps, axis_sizes(cfg))
    dtype = next(model.vision.parameters()).dtype
    model.vision.load_state_dict({k: v.to(dtype) for k, v in ours.items()}, strict=False)
    return model


install_boot_lookup()  # importing this module is what sith_lens arranges when transformer_lens loads
