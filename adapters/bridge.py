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
``CLIPTextModel(WithProjection)``  the text tower (and ``proj``, its projection)
``SiglipTextModel``                the text tower and ``proj``, its biased head
=================================  =============================================================

A whole ``CLIPModel`` / ``SiglipModel`` checkpoint boots as its vision tower, the tower SITH reads.
For a text tower from one, ``hf_model=text_tower(model)`` with ``tokenizer=``. Text towers have the
same per-block hooks (``embed.hook_out`` is token + position embeddings, ours
``blocks.0.hook_resid_pre``); ``bridge(tokens)`` returns the last hidden state after
``final_layer_norm`` (tested on unpadded token ids; padding masks were not tested).

A bridge runs the transformers model's own forward (``bridge(pixels)`` returns its
``last_hidden_state``) and hooks the modules it passes through. Its hooks against ours
(``HookedCLIPVision``), same activations to 1e-5 of each tensor's scale (``tests/test_bridge.py``):

======================================  ============================================================
Bridge                                  sith-lens
======================================  ============================================================
``hook_embed`` (= ``embed.hook_out``)   ``embed.hook_patches + embed.hook_pos`` (CLIP: before ln_pre)
``ln_pre.hook_out``                     ``hook_embed`` (after ``ln_pre``; CLIP only)
``blocks.{l}.hook_resid_pre/mid/post``  the same
``blocks.{l}.attn.hook_q/k/v/z``        the same, [batch, pos, head, d_head]
``blocks.{l}.attn.hook_pattern``        the same
``blocks.{l}.hook_attn_out``            the same
``blocks.{l}.ln1/ln2.hook_scale``       the same
``blocks.{l}.ln1/ln2.hook_out``         ``blocks.{l}.ln1/ln2.hook_normalized`` (after the affine, as
                                        TransformerLens's; the bridge's ``hook_normalized`` is before)
``blocks.{l}.mlp.hook_pre/hook_post``   the same
``blocks.{l}.hook_mlp_out``             the same
``ln_final.hook_scale/hook_normalized`` the same (before the affine); CLIP: the CLS token only
``ln_final.hook_out``                   ``ln_final.affine`` of that
``proj.hook_out`` (CLIP)                ``vision(pixels)``, the image embedding
``pool.hook_out`` (SigLIP)              ``vision(pixels)``, the image embedding
``W_Q/W_K/W_V/W_O``, ``OV``, ``QK``     the same, stacked [layer, head, ...]
======================================  ============================================================

The bridge's ``attn.hook_attn_scores`` is *not* our pre-softmax score: the bridge delegates
attention to transformers, which returns only the pattern, and TransformerLens fires
``hook_attn_scores`` with that pattern.

Refused rather than given wrong:

- ``enable_compatibility_mode()`` / ``process_weights()``: TransformerLens's folding and centring
  assume every residual read goes through ``ln1``/``ln2``/``ln_final`` into an ``unembed``;
  CLIP's vision tower has an ``ln_pre`` after the embedding and reads out one token through a
  projection the bridge does not treat as an unembed, SigLIP's through an attention-pooling head.
  ``load_clip(bridge)`` gives the ``HookedCLIP`` whose towers do this right (``ln_final`` is
  centre-and-scale only; ``W_joint`` holds the folded read-out).
- a whole ``CLIPModel`` / ``SiglipModel`` instance as ``hf_model=``: its forward needs text and
  images. Pass ``hf_model=vision_tower(model)`` (a copy of its vision half) or ``text_tower(model)``.
- ``load_clip(bridge)`` of a text-tower bridge: SITH reads vision heads; use ``load_clip(name)``.

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
    "centring) cannot apply to a {family} {modality} tower: it assumes every read of the residual "
    "stream goes through ln1/ln2/ln_final into an unembed, but {reason}, so the folded weights "
    "would give wrong numbers. Use the bridge's default (raw-weight) forward, or "
    "sith_lens.load_clip(bridge) for a HookedCLIP whose ln_final is centre-and-scale only and whose "
    "W_joint holds the folded read-out"
)
_REASONS = {
    ("CLIP", "vision"): "CLIP's embedding passes through ln_pre before the residual stream and the read-out "
    "takes one token through post_layernorm and a projection that the bridge does not treat as an unembed",
    ("SigLIP", "vision"): "SigLIP reads the residual stream out through an attention-pooling head",
    ("CLIP", "text"): "the text tower reads out one token (end of text) through final_layer_norm and a "
    "projection into the joint space, not through an unembed over a vocabulary",
    ("SigLIP", "text"): "the text tower reads out its last token through final_layer_norm and a biased "
    "head into the joint space, not through an unembed over a vocabulary",
}


class PixelEmbeddingsBridge(GeneralizedComponent):
    """The patch + position (+ CLS) embedding module, run as transformers runs it; ``hook_in`` sees
    the pixels, ``hook_out`` the embedded tokens."""

    def forward(self, pixel_values: torch.Tensor, **kwargs: Any) -> Any:
        # positional, so that the base class's hook_in sees the pixels
        return super().forward(pixel_values, **kwargs)


def _norm(cfg: Any, name: str) -> NormalizationBridge:
    return NormalizationBridge(name=name, config=cfg, use_native_layernorm_autograd=True)


def _layers(cfg: Any, prefix: str) -> BlockBridge:
    """The encoder layers of CLIP and SigLIP (same module names in both towers)."""

    def norm(name: str) -> NormalizationBridge:
        return _norm(cfg, name)

    return BlockBridge(
        name=f"{prefix}encoder.layers",
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


class _TowerAdapter(ArchitectureAdapter):
    """What every adapter here shares: a pre-LN transformer tower, raw weights, no generation, and
    TransformerLens's weight processing refused (see ``COMPATIBILITY_REFUSAL``)."""

    family = ""
    modality = ""
    supports_generation: bool = False
    applicable_phases: list[int] = [1]

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.cfg.is_visual_model = self.modality == "vision"
        self.cfg.normalization_type = "LN"
        self.cfg.positional_embedding_type = "standard"
        self.cfg.final_rms = False
        self.cfg.gated_mlp = False
        self.cfg.attn_only = False
        self.supports_fold_ln = False
        self.weight_processing_conversions = {}
        self.component_mapping = self._mapping("", None)

    def _refusal(self) -> CompatibilityModeRefused:
        return CompatibilityModeRefused(COMPATIBILITY_REFUSAL.format(
            family=self.family, modality=self.modality, reason=_REASONS[self.family, self.modality]
        ))

    @property
    def supports_compatibility_mode(self) -> bool:  # read by TransformerBridge.enable_compatibility_mode
        raise self._refusal()

    def preprocess_weights(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Called by ``process_weights``: refused, see ``COMPATIBILITY_REFUSAL``."""
        raise self._refusal()

    def _mapping(self, prefix: str, projection: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def _half(self, model_kwargs: dict) -> None:
        """Load a dual-encoder checkpoint's half of this modality: its config, with the projection
        width; eager attention, so that transformers returns the pattern the bridge hooks."""
        config = model_kwargs.get("config")
        half = getattr(config, f"{self.modality}_config", None)
        if half is not None:
            half = half.__class__.from_dict(half.to_dict())
            if hasattr(config, "projection_dim"):
                half.projection_dim = config.projection_dim
            model_kwargs["config"] = half
        if hasattr(model_kwargs.get("config"), "_attn_implementation"):
            model_kwargs["config"]._attn_implementation = "eager"

    def prepare_loading(self, model_name: str, model_kwargs: dict) -> None:
        self._half(model_kwargs)

    def prepare_model(self, hf_model: Any) -> None:
        """Point the mapping at where this model class keeps the tower; eager attention."""
        if hasattr(hf_model, "text_model") and hasattr(hf_model, "vision_model"):
            raise ValueError(
                f"TransformerBridge runs the wrapped model's own forward, and a whole {type(hf_model).__name__} "
                f"needs text and images; bridge one tower: TransformerBridge.boot_transformers(name, "
                "hf_model=sith_lens.adapters.bridge.vision_tower(model)) (or text_tower(model), with tokenizer=)"
            )
        if hasattr(hf_model, "set_attn_implementation"):
            hf_model.set_attn_implementation("eager")
        inner = f"{self.modality}_model"
        prefix = f"{inner}." if hasattr(hf_model, inner) else ""
        projection = next((p for p in ("visual_projection", "text_projection") if hasattr(hf_model, p)), None)
        self._copy_dims(hf_model.config)
        self.component_mapping = self._mapping(prefix, projection)

    def _copy_dims(self, config: Any) -> None:
        """The bridge config's sizes from the tower's config (``boot`` reads a dual-encoder config's
        text side)."""
        self.cfg.d_model = config.hidden_size
        self.cfg.n_heads = config.num_attention_heads
        self.cfg.d_head = config.hidden_size // config.num_attention_heads
        self.cfg.n_layers = config.num_hidden_layers
        self.cfg.d_mlp = config.intermediate_size
        self.cfg.act_fn = config.hidden_act
        self.cfg.eps = config.layer_norm_eps


class _VisionTowerAdapter(_TowerAdapter):
    """A CLIP or SigLIP vision tower."""

    modality = "vision"
    n_extra_tokens = 0
    """Tokens besides the patches (CLIP's CLS)."""

    def _copy_dims(self, config: Any) -> None:
        super()._copy_dims(config)
        self.cfg.n_ctx = (config.image_size // config.patch_size) ** 2 + self.n_extra_tokens
        self.cfg.d_vocab = -1


class _TextTowerAdapter(_TowerAdapter):
    """A CLIP or SigLIP text tower: ``embed`` (token + position) -> ``blocks`` -> ``ln_final`` on
    every token (-> ``proj``, the text projection or SigLIP's head, when the model has one)."""

    modality = "text"
    head = ""

    def _copy_dims(self, config: Any) -> None:
        super()._copy_dims(config)
        self.cfg.n_ctx = config.max_position_embeddings
        self.cfg.d_vocab = config.vocab_size

    def _mapping(self, prefix: str, projection: str | None) -> dict[str, Any]:
        mapping: dict[str, Any] = {
            "embed": GeneralizedComponent(name=f"{prefix}embeddings"),
            "blocks": _layers(self.cfg, prefix),
            "ln_final": _norm(self.cfg, f"{prefix}final_layer_norm"),
        }
        head = projection or (f"{prefix}{self.head}" if self.head else None)
        if head is not None:
            mapping["proj"] = LinearBridge(name=head)
        return mapping


class CLIPTextArchitectureAdapter(_TextTowerAdapter):
    """transformers' CLIP text tower (causal; transformers builds the mask)."""

    family = "CLIP"


class SiglipTextArchitectureAdapter(_TextTowerAdapter):
    """transformers' SigLIP text tower (bidirectional; ``proj`` is its biased ``head``)."""

    family = "SigLIP"
    head = "head"


class CLIPVisionArchitectureAdapter(_VisionTowerAdapter):
    """transformers' CLIP vision tower: ``embed`` -> ``ln_pre`` -> ``blocks`` -> ``ln_final`` on the
    CLS token (-> ``proj``, the visual projection, when the model has one)."""

    family = "CLIP"
    n_extra_tokens = 1

    def _mapping(self, prefix: str, projection: str | None) -> dict[str, Any]:
        mapping: dict[str, Any] = {
            "embed": PixelEmbeddingsBridge(name=f"{prefix}embeddings"),
            "ln_pre": _norm(self.cfg, f"{prefix}pre_layrnorm"),
            "blocks": _layers(self.cfg, prefix),
            "ln_final": _norm(self.cfg, f"{prefix}post_layernorm"),
        }
        if projection is not None:
            mapping["proj"] = LinearBridge(name=projection)
        return mapping


class SiglipVisionArchitectureAdapter(_VisionTowerAdapter):
    """transformers' SigLIP vision tower: ``embed`` (no CLS) -> ``blocks`` -> ``ln_final`` on every
    token -> ``pool`` (the attention-pooling head, whose output is the image embedding)."""

    family = "SigLIP"
    n_extra_tokens = 0

    def _mapping(self, prefix: str, projection: str | None) -> dict[str, Any]:
        mapping: dict[str, Any] = {
            "embed": PixelEmbeddingsBridge(name=f"{prefix}embeddings"),
            "blocks": _layers(self.cfg, prefix),
            "ln_final": _norm(self.cfg, f"{prefix}post_layernorm"),
            "pool": GeneralizedComponent(name=f"{prefix}head"),
        }
        return mapping


ARCHITECTURES: dict[str, type[_TowerAdapter]] = {
    "CLIPModel": CLIPVisionArchitectureAdapter,
    "CLIPVisionModel": CLIPVisionArchitectureAdapter,
    "CLIPVisionModelWithProjection": CLIPVisionArchitectureAdapter,
    "SiglipModel": SiglipVisionArchitectureAdapter,
    "SiglipVisionModel": SiglipVisionArchitectureAdapter,
    "CLIPTextModel": CLIPTextArchitectureAdapter,
    "CLIPTextModelWithProjection": CLIPTextArchitectureAdapter,
    "SiglipTextModel": SiglipTextArchitectureAdapter,
}
"""Architecture name (``config.architectures[0]``) -> adapter; the entry points in ``pyproject.toml``."""

LOAD_CLASS = {
    "CLIPModel": "CLIPVisionModelWithProjection",
    "CLIPVisionModel": "CLIPVisionModel",
    "CLIPVisionModelWithProjection": "CLIPVisionModelWithProjection",
    "SiglipModel": "SiglipVisionModel",
    "SiglipVisionModel": "SiglipVisionModel",
    "CLIPTextModel": "CLIPTextModel",
    "CLIPTextModelWithProjection": "CLIPTextModelWithProjection",
    "SiglipTextModel": "SiglipTextModel",
}
"""The transformers class ``boot()`` loads a checkpoint of each architecture with (a dual encoder's
vision half; a bare tower as itself, so that it gets no randomly initialised projection)."""

_MODEL_TYPES = {
    "clip": "CLIPModel",
    "clip_vision_model": "CLIPVisionModel",
    "siglip": "SiglipModel",
    "siglip_vision_model": "SiglipVisionModel",
    "clip_text_model": "CLIPTextModel",
    "siglip_text_model": "SiglipTextModel",
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

            return getattr(transformers, LOAD_CLASS[architecture])
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
    return _tower_copy(model, "vision", "visual_projection")


def text_tower(model: Any) -> Any:
    """A copy of the text half of a transformers ``CLIPModel`` (as ``CLIPTextModelWithProjection``)
    or ``SiglipModel`` (``SiglipTextModel``, whose ``head`` is its projection), for
    ``boot_transformers(name, hf_model=text_tower(model), tokenizer=...)``.

    Example:
        >>> from transformers import CLIPConfig, CLIPModel
        >>> type(text_tower(CLIPModel(CLIPConfig()))).__name__
        'CLIPTextModelWithProjection'
    """
    return _tower_copy(model, "text", "text_projection")


def _tower_copy(model: Any, modality: str, projection: str) -> Any:
    import transformers

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    inner = f"{modality}_model"
    if model_type == "siglip":  # SiglipModel's halves are whole SiglipVisionModel / SiglipTextModel
        return copy.deepcopy(getattr(model, inner))
    if model_type != "clip":
        raise TypeError(
            f"{modality}_tower takes a transformers CLIPModel or SiglipModel, got {type(model).__name__}"
            + (f" (model_type {model_type!r})" if model_type else "")
        )
    half = getattr(model.config, f"{modality}_config")
    config = half.__class__.from_dict(half.to_dict())
    config.projection_dim = model.config.projection_dim
    cls_name = f"CLIP{modality.capitalize()}ModelWithProjection"
    with torch.device("meta"):
        tower = getattr(transformers, cls_name)(config)
    setattr(tower, inner, copy.deepcopy(getattr(model, inner)))
    setattr(tower, projection, copy.deepcopy(getattr(model, projection)))
    tower.config.architectures = [cls_name]
    return tower.train(model.training)


def is_clip_bridge(obj: Any) -> bool:
    """Whether ``obj`` is a TransformerBridge over a vision tower this module adapts."""
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
        adapter = type(getattr(bridge, "adapter", None)).__name__
        raise TypeError(
            f"from_bridge takes a TransformerBridge over a CLIP or SigLIP vision tower (SITH reads vision "
            f"heads), got {type(bridge).__name__} with {adapter}; for a text tower, load the checkpoint "
            "itself with sith_lens.load_clip(name)"
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
