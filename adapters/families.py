"""The model families ``load_clip`` knows, and what each one needs: a config reader, two
weight-map tables and, for transformers families, the model and image-processor classes.

``HF_FAMILIES`` maps a transformers ``config.model_type`` to its family; OpenCLIP, which is not a
transformers model, goes through ``adapters.open_clip`` with the same tables machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from sith_lens.adapters import hf_clip, hf_siglip
from sith_lens.adapters.transformer_lens import HookedCLIPText, HookedCLIPVision, TowerConfig
from sith_lens.adapters.weight_maps import WeightMap, axis_sizes, build_towers, to_theirs


@dataclass(frozen=True)
class HFFamily:
    """A transformers dual-encoder family."""

    name: str
    """``CLIPInfo.family``: ``"clip"`` or ``"siglip"``."""
    model_class: str
    """The transformers class of the whole model (``CLIPModel``)."""
    processor_class: str
    """The image processor used when a checkpoint ships none."""
    tower_configs: Callable[[Any, str], tuple[TowerConfig, TowerConfig]]
    """``(hf_config, model_name) -> (vision, text)`` tower configs."""
    vision_maps: Callable[[TowerConfig], list[WeightMap]]
    """The vision tower's weight-map table."""
    text_maps: Callable[[TowerConfig], list[WeightMap]]
    """The text tower's weight-map table."""
    processor_kwargs: Callable[[int], dict[str, Any]]
    """The image processor's size settings for a given image size (``default_processor``)."""

    def model_cls(self) -> Any:
        import transformers

        return getattr(transformers, self.model_class)

    def default_processor(self, image_size: int) -> Any:
        """The family's standard preprocessing at ``image_size``: CLIP resizes the short side and
        crops the centre, SigLIP resizes to a square (both normalise with their own statistics)."""
        import transformers

        return getattr(transformers, self.processor_class)(**self.processor_kwargs(image_size))

    def maps(self, vision: TowerConfig, text: TowerConfig) -> tuple[list[WeightMap], list[WeightMap]]:
        return self.vision_maps(vision), self.text_maps(text)


def resize_and_crop(size: int) -> dict[str, Any]:
    """Image-processor settings: resize the short side to ``size``, then crop the centre square."""
    return {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}


def resize_to_square(size: int) -> dict[str, Any]:
    """Image-processor settings: resize to a ``size`` square (no crop)."""
    return {"size": {"height": size, "width": size}}


HF_FAMILIES: dict[str, HFFamily] = {
    "clip": HFFamily("clip", "CLIPModel", "CLIPImageProcessorPil", hf_clip.tower_configs,
                     hf_clip.vision_weight_maps, hf_clip.text_weight_maps, resize_and_crop),
    "siglip": HFFamily("siglip", "SiglipModel", "SiglipImageProcessorPil", hf_siglip.tower_configs,
                       hf_siglip.vision_weight_maps, hf_siglip.text_weight_maps, resize_to_square),
}

# model_types users reach for that are not (yet) supported, with what to do instead
UNSUPPORTED_MODEL_TYPES: dict[str, str] = {
    "clip_vision_model": "it is a vision tower alone; load the full CLIPModel checkpoint (both towers)",
    "clip_text_model": "it is a text tower alone; load the full CLIPModel checkpoint (both towers)",
    "siglip_vision_model": "it is a vision tower alone; load the full SiglipModel checkpoint (both towers)",
    "siglip_text_model": "it is a text tower alone; load the full SiglipModel checkpoint (both towers)",
    "siglip2": "SigLIP 2 (variable-resolution NaFlex patches) is not supported yet; use a SigLIP (v1) checkpoint",
}


def hf_family(model_type: str, name: str) -> HFFamily:
    """The family of a transformers ``model_type``, or a ``ValueError`` that names what is supported."""
    if model_type in HF_FAMILIES:
        return HF_FAMILIES[model_type]
    hint = UNSUPPORTED_MODEL_TYPES.get(model_type, "it is not a CLIP-family dual encoder")
    raise ValueError(
        f"{name!r} is a {model_type!r} checkpoint, which load_clip does not support: {hint}. "
        f"Supported transformers families: {', '.join(repr(k) for k in HF_FAMILIES)} "
        "(plus OpenCLIP through 'open_clip:ARCH/PRETRAINED'); see docs/models.md"
    )


def towers_from_hf(hf_model: Any, model_name: str = "custom") -> tuple[HookedCLIPVision, HookedCLIPText]:
    """Both hooked towers of a transformers ``CLIPModel`` or ``SiglipModel``, with copies of its weights.

    Example:
        >>> import sith_lens as sl
        >>> from transformers import SiglipConfig, SiglipModel
        >>> from sith_lens.adapters.loading import RANDOM_CONFIGS
        >>> settings = {k: v for k, v in RANDOM_CONFIGS["siglip-tiny"].items() if k != "family"}
        >>> vision, text = towers_from_hf(SiglipModel(SiglipConfig(**settings)))
        >>> type(vision).__name__, vision.cfg.n_layers
        ('HookedCLIPVision', 2)
    """
    family = hf_family(hf_model.config.model_type, model_name)
    configs = family.tower_configs(hf_model.config, model_name)
    dtype = next(hf_model.parameters()).dtype
    return build_towers(hf_model.state_dict(), configs, family.maps(*configs), dtype)


def hf_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The transformers state dict (``CLIPModel`` or ``SiglipModel``) of a ``HookedCLIP``'s weights.

    Example:
        >>> import sith_lens as sl
        >>> from transformers import CLIPModel
        >>> model = sl.load_clip("random:tiny")
        >>> CLIPModel(model.hf_config).load_state_dict(hf_state_dict(model), strict=False).unexpected_keys
        []
    """
    if model.cfg.family not in HF_FAMILIES:
        raise ValueError(
            f"a {model.cfg.family!r} model has no transformers layout to export to; "
            f"export works for {', '.join(HF_FAMILIES)} models"
        )
    family = HF_FAMILIES[model.cfg.family]
    state: dict[str, torch.Tensor] = {}
    for tower, maps in zip((model.vision, model.text), family.maps(model.vision.cfg, model.text.cfg)):
        ours = {k: v.detach() for k, v in tower.state_dict().items()}
        state.update(to_theirs(ours, maps, axis_sizes(tower.cfg)))
    state["logit_scale"] = model.logit_scale.detach().clone()
    if model.cfg.family == "siglip":  # SiglipModel keeps both as [1] tensors
        state["logit_scale"] = state["logit_scale"].reshape(1)
        state["logit_bias"] = model.logit_bias.detach().clone().reshape(1)
    return state
