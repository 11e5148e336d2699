"""Quality of a CLIP on the toy world: zero-shot accuracy per attribute and caption retrieval.

The functions take two encoders (pixels -> embeddings, strings -> embeddings), so the same code scores
a transformers CLIPModel during training and a HookedCLIP after loading.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .attributes import VALUES
from .data import ToyWorld

ImageEncoder = Callable[[Tensor], Tensor]
TextEncoder = Callable[[list[str]], Tensor]


def _normalize(x: Tensor) -> Tensor:
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True)


@torch.no_grad()
def _encode(encode: Callable, items: Tensor | list[str], batch_size: int) -> Tensor:
    """L2-normalised embeddings of ``items`` (pixels or strings), encoded ``batch_size`` at a time."""
    return torch.cat([_normalize(encode(items[i : i + batch_size])) for i in range(0, len(items), batch_size)])


def zero_shot_accuracy(
    encode_image: ImageEncoder,
    encode_text: TextEncoder,
    world: ToyWorld,
    attributes: Sequence[str] = tuple(VALUES),
    per_value: int = 50,
    batch_size: int = 256,
) -> dict[str, float]:
    """Zero-shot accuracy per attribute on single-object scenes, with one prompt per value
    ("a red object", ...): the fraction of images whose most similar prompt names their value.

    Example:
        >>> acc = zero_shot_accuracy(model.encode_image, model.encode_text, ToyWorld(seed=12345))
        >>> acc["color"]
    """
    out = {}
    for attribute in attributes:
        data = world.attribute_set(attribute, per_value)
        images = _encode(encode_image, data.batch.pixels, batch_size)
        prompts = _encode(encode_text, data.prompts, batch_size)
        predicted = (images @ prompts.T).argmax(dim=-1).numpy()
        out[attribute] = float((predicted == data.labels).mean())
    return out


def caption_retrieval(
    encode_image: ImageEncoder,
    encode_text: TextEncoder,
    world: ToyWorld,
    n_pairs: int = 1000,
    ks: Sequence[int] = (1, 5),
    batch_size: int = 256,
) -> dict[str, float]:
    """Image -> caption recall@k among ``n_pairs`` scenes with 2-3 objects and full captions.

    Returns ``{"R@1": ..., "R@5": ...}``: the fraction of images whose own caption ranks in the top k.
    """
    batch = world.batch(0, n_pairs, objects=(2, 3), full_captions=True)
    images = _encode(encode_image, batch.pixels, batch_size)
    texts = _encode(encode_text, batch.texts, batch_size)
    sims = images @ texts.T
    own = sims.diagonal().unsqueeze(1)
    rank = (sims > own).sum(dim=1).numpy()  # captions scoring strictly higher than the image's own
    return {f"R@{k}": float(np.mean(rank < k)) for k in ks}
