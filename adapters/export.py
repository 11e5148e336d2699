"""Write a ``HookedCLIP`` (edited or not) as a standard transformers checkpoint (``CLIPModel`` or
``SiglipModel``, by family).

The towers go back through the same weight-map tables that loaded them (``families.hf_state_dict``), so
export cannot drift from loading. What is written is whatever the towers hold: after
``sith_lens.edit_heads`` that is the folded form (``ln_1`` with unit gain and zero bias, its affine
folded into Q/K/V, centred weights, value biases folded into the output bias), which transformers
runs as an ordinary CLIP with the same outputs. The folder also gets the tokenizer, the image
processor and, when the model has one, ``image_mean.safetensors``. Writes are atomic: a temporary
sibling folder renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sith_lens.adapters.families import HF_FAMILIES, hf_state_dict
from sith_lens.atomic import atomic_directory


def to_hf_clip(model: Any) -> Any:
    """A transformers model (``CLIPModel``, ``SiglipModel``) holding a ``HookedCLIP``'s current weights (a copy).

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("random:tiny")
        >>> hf = to_hf_clip(model)                                    # e.g. an edited model
        >>> pixels = torch.randn(2, 3, 32, 32)
        >>> torch.allclose(hf.get_image_features(pixel_values=pixels).pooler_output, model.encode_image(pixels), atol=1e-5)
        True
    """
    state = hf_state_dict(model)  # raises for families without a transformers layout
    if getattr(model, "hf_config", None) is None:
        raise ValueError(
            "this HookedCLIP has no transformers config (hf_config); load it with sl.load_clip(...) so "
            "that it can be exported"
        )
    with torch.random.fork_rng():
        hf = HF_FAMILIES[model.cfg.family].model_cls()(model.hf_config)
    expected = {k for k in hf.state_dict()}
    missing = sorted(expected - set(state))
    if missing:
        raise ValueError(f"cannot export: the transformers model expects tensors this model lacks: {missing[:5]}")
    hf.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)
    return hf.to(model.vision.W_proj.dtype).eval()


def save_clip(model: Any, out_dir: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``model`` to ``out_dir`` so that ``CLIPModel.from_pretrained(out_dir)`` and
    ``sl.load_clip(out_dir)`` load it as is; returns the folder.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> result = sl.explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), layers=[-1], progress=False)
        >>> save_clip(sl.suppress(model, result, ["red"]), "no-red-clip").name
        'no-red-clip'
        >>> sl.load_clip("no-red-clip").vision.cfg.n_layers
        6
    """
    from safetensors.torch import save_file

    from sith_lens.adapters.loading import IMAGE_MEAN_FILE

    hf = to_hf_clip(model)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        hf.save_pretrained(tmp)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(tmp)
        if model.image_processor is not None:
            model.image_processor.save_pretrained(tmp)
        if getattr(model, "image_mean", None) is not None:
            save_file({"image_mean": model.image_mean.detach().float().cpu().contiguous()}, str(tmp / IMAGE_MEAN_FILE))
    return Path(out_dir)
