"""``HookedCLIP``: a CLIP-family model as two hooked towers (TransformerLens hook names), its
tokenizer and its image preprocessing; ``CLIPInfo``, its model-level facts.

``sith_lens.load_clip`` builds one from a name, a folder or a model instance (``loading``);
``save_pretrained`` writes it back as a transformers checkpoint (``export``).

Example:
    >>> import sith_lens as sl
    >>> model = sl.load_clip("toy")
    >>> type(model).__name__, model.cfg.family, model.cfg.d_proj
    ('HookedCLIP', 'clip', 128)
    >>> model.encode_text(["a red circle", "a dog"], normalize=True).shape
    torch.Size([2, 128])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from sith_lens.adapters.text_tokens import TextTokens, special_token_ids
from sith_lens.adapters.transformer_lens import HookedCLIPText, HookedCLIPVision


@dataclass
class CLIPInfo:
    """Model-level facts; each tower has its own ``TowerConfig`` in ``.vision.cfg`` / ``.text.cfg``."""

    model_name: str
    """The spec the model was loaded from."""
    family: str
    """Architecture family: ``"clip"``, ``"siglip"`` or ``"open_clip"``."""
    d_proj: int
    """Width of the joint image-text space."""


class HookedCLIP(nn.Module):
    """A CLIP model as two hooked towers plus its tokenizer and image preprocessing.

    Attributes:
        vision: ``HookedCLIPVision``, TransformerLens hooks on the image tower.
        text: ``HookedCLIPText``, TransformerLens hooks on the text tower.
        cfg: ``CLIPInfo`` (model name, family, joint-space width).
        logit_scale: the learned temperature, ``exp(logit_scale)`` multiplies cosine similarities.
        logit_bias: added to the scaled similarities (SigLIP's sigmoid loss learns one; 0 for CLIP).
        image_mean: ``[d_proj]`` mean normalised image embedding saved with the checkpoint
            (``image_mean.safetensors``; the toy CLIP ships one), or None. SITH's read-out uses it.
        hf_config: the transformers config the model was built from (``save_pretrained`` writes it).

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")                  # or "openai/clip-vit-base-patch32", a folder, ...
        >>> image = sl.ToyWorld(seed=0).batch(0, 1).images[0]
        >>> img = model.encode_image(model.preprocess([image]), normalize=True)
        >>> txt = model.encode_text(["a red circle"], normalize=True)
        >>> img.shape, txt.shape
        (torch.Size([1, 128]), torch.Size([1, 128]))
    """

    def __init__(
        self,
        vision: HookedCLIPVision,
        text: HookedCLIPText,
        cfg: CLIPInfo,
        logit_scale: float = 0.0,
        logit_bias: float = 0.0,
        tokenizer: Any = None,
        image_processor: Any = None,
        hf_config: Any = None,
    ):
        super().__init__()
        self.hf_config = hf_config
        self.vision = vision
        self.text = text
        self.cfg = cfg
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)), requires_grad=False)
        self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias)), requires_grad=False)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.register_buffer("image_mean", None, persistent=False)

    @property
    def tokenizer(self) -> Any:
        """The text tower's tokenizer (``text.tokenizer``), or None."""
        return self.text.tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: Any) -> None:
        self.text.tokenizer = tokenizer
        # what text.add_sae(..., exclude_special_tokens=True) bypasses
        self.text.special_token_ids = tuple(sorted(special_token_ids(tokenizer))) if tokenizer is not None else ()

    # -- inputs --------------------------------------------------------------------------------------
    def tokenize(self, texts: str | Sequence[str], truncate: bool = True) -> TextTokens:
        """``text.tokenize``: the model's own tokenizer, padded on the right, at most ``n_ctx`` long
        (``truncate=False`` raises instead of cutting). ``text.to_tokens`` gives the ids alone.

        Example:
            >>> import sith_lens as sl
            >>> toks = sl.load_clip("toy").tokenize("a red circle")
            >>> toks.input_ids.tolist(), toks.attention_mask.tolist()
            ([[2, ..., 3]], [[1, 1, 1, 1, 1]])
        """
        return self.text.tokenize(texts, truncate)

    def attach_zero_shot_head(
        self, class_prompts: Sequence[str | Sequence[str]], templates: Sequence[str] = ("{}",),
        labels: Sequence[str] | None = None,
    ) -> None:
        """Give the vision tower a zero-shot head as its unembed (``W_U``, ``b_U``,
        ``return_type="logits"``/``"loss"``), so TransformerLens's attribution code runs on images.

        Args:
            class_prompts: a class name per class (put into every template) or a list of prompts.
            templates: prompt templates with ``{}`` (CLIP's recipe averages them).
            labels: class names for ``to_single_token``/``logit_attrs``; default the class names
                (or each list's first prompt).

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("toy")
            >>> model.attach_zero_shot_head(["red circle", "blue square"], templates=["a {}"])
            >>> pixels = model.preprocess(list(sl.ToyWorld(seed=0).batch(0, 2).images))
            >>> model.vision(pixels, return_type="logits").shape          # [batch, classes]
            torch.Size([2, 2])
        """
        from sith_lens.zeroshot import zero_shot_weights

        weights = zero_shot_weights(self, class_prompts, templates)
        if labels is None:
            labels = [c if isinstance(c, str) else c[0] for c in class_prompts]
        self.vision.set_zero_shot_head(weights, labels, logit_scale=float(self.logit_scale.exp()))

    def preprocess(self, images: Any) -> Float[Tensor, "batch channel height width"]:
        """Resize, crop and normalise images (PIL images, file paths or HWC uint8 arrays).

        Grayscale and RGBA images are converted to RGB.

        Example:
            >>> import sith_lens as sl
            >>> from PIL import Image
            >>> model = sl.load_clip("toy")
            >>> Image.fromarray(sl.ToyWorld(seed=0).batch(0, 1).images[0]).save("scene.png")
            >>> model.preprocess(["scene.png"]).shape                 # file paths, PIL images or arrays
            torch.Size([1, 3, 64, 64])
        """
        if self.image_processor is None:
            raise ValueError(f"model {self.cfg.model_name!r} has no image processor; pass pixel tensors instead")
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise ValueError("preprocess needs at least one image")
        from PIL import Image, UnidentifiedImageError

        loaded = []
        for im in images:
            if isinstance(im, (str, os.PathLike)):
                try:
                    im = Image.open(im)
                except (FileNotFoundError, UnidentifiedImageError) as err:
                    raise ValueError(f"cannot read {str(im)!r} as an image ({err}); pass PNG/JPEG files or PIL images") from None
            loaded.append(im)
        pixels = self.image_processor(images=loaded, return_tensors="pt")["pixel_values"]
        return pixels.to(device=self.vision.W_proj.device, dtype=self.vision.W_proj.dtype)

    # -- embeddings ----------------------------------------------------------------------------------
    def encode_image(
        self, pixels: Float[Tensor, "batch channel height width"], normalize: bool = False
    ) -> Float[Tensor, "batch d_proj"]:
        """Image embeddings in the joint space (``CLIPModel.get_image_features``, or for SigLIP the
        MAP head's pooled output, ``SiglipModel.get_image_features``).

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("toy")
            >>> model.encode_image(model.preprocess(list(sl.ToyWorld(seed=0).batch(0, 3).images)), normalize=True).shape
            torch.Size([3, 128])
        """
        embeds = self.vision(pixels)
        return embeds / embeds.norm(dim=-1, keepdim=True) if normalize else embeds

    def encode_text(
        self, texts: str | Sequence[str] | TextTokens | Int[Tensor, "batch pos"], normalize: bool = False
    ) -> Float[Tensor, "batch d_proj"]:
        """Text embeddings in the joint space from strings, ``TextTokens`` or token ids
        (``CLIPModel.get_text_features`` / ``SiglipModel.get_text_features``).

        Example:
            >>> import sith_lens as sl
            >>> sl.load_clip("toy").encode_text(["a red circle", "a dog"], normalize=True).shape   # [2, d_proj]
            torch.Size([2, 128])
        """
        if isinstance(texts, Tensor):
            embeds = self.text(texts)
        else:
            toks = texts if isinstance(texts, TextTokens) else self.tokenize(texts)
            # SigLIP attends to its padding, as in training (text.cfg.mask_padding is False there)
            embeds = self.text(toks.input_ids, attention_mask=toks.attention_mask if self.text.cfg.mask_padding else None)
        return embeds / embeds.norm(dim=-1, keepdim=True) if normalize else embeds

    def save_pretrained(self, out_dir: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write the model as a standard transformers checkpoint folder (see ``export.save_clip``).

        Example:
            >>> import sith_lens as sl
            >>> from transformers import CLIPModel
            >>> sl.load_clip("random:tiny").save_pretrained("tiny-clip").name
            'tiny-clip'
            >>> type(CLIPModel.from_pretrained("tiny-clip")).__name__
            'CLIPModel'
        """
        from sith_lens.adapters.export import save_clip

        return save_clip(self, out_dir, overwrite=overwrite)

    def summary(self) -> str:
        """A short human-readable description: towers, sizes, hook names, parameter counts."""
        lines = [f"HookedCLIP {self.cfg.model_name!r} (family {self.cfg.family}, joint space d_proj={self.cfg.d_proj})"]
        for name, tower in (("vision", self.vision), ("text", self.text)):
            c = tower.cfg
            n_params = sum(p.numel() for p in tower.parameters())
            extra = (
                f"image {c.image_size}px, patch {c.patch_size}px, {c.n_patches} patches"
                if c.modality == "vision"
                else f"vocab {c.d_vocab}, context {c.n_ctx}"
            )
            hooks = list(tower.hook_dict)
            per_block = [h.split(".", 2)[2] for h in hooks if h.startswith("blocks.0.")]
            top = [h for h in hooks if not h.startswith("blocks.")]
            lines += [
                f"  {name}: {c.n_layers} layers x {c.n_heads} heads, d_model={c.d_model}, d_head={c.d_head}, "
                f"d_mlp={c.d_mlp}, act={c.act_fn}; {extra}; {n_params:,} parameters",
                f"    {len(hooks)} hook points; top level: {', '.join(top)}",
                f"    per block (blocks.{{l}}.*): {', '.join(per_block)}",
            ]
        return "\n".join(lines)
