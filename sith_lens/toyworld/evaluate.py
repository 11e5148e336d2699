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


def zero_shot_items(
    encode_image: ImageEncoder,
    encode_text: TextEncoder,
    world: ToyWorld,
    attributes: Sequence[str] = tuple(VALUES),
    per_value: int = 50,
    batch_size: int = 256,
    logit_scale: float = 100.0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per attribute and per image: ``(correct [n] bool, log-probability of the correct prompt [n])``
    on single-object scenes, with one prompt per value ("a red object", ...) and a softmax over that
    attribute's prompts at ``logit_scale``. Per-image scores are what a bootstrap interval needs.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> items = zero_shot_items(model.encode_image, model.encode_text, ToyWorld(seed=12345), ["color"], per_value=8)
        >>> items["color"][0].shape, float(items["color"][0].mean())       # per image, accuracy
        ((64,), 1.0)
    """
    out = {}
    for attribute in attributes:
        data = world.attribute_set(attribute, per_value)
        images = _encode(encode_image, data.batch.pixels, batch_size)
        prompts = _encode(encode_text, data.prompts, batch_size)
        logits = logit_scale * images @ prompts.T
        labels = torch.from_numpy(data.labels).long()
        correct = (logits.argmax(dim=-1) == labels).numpy()
        logp = logits.log_softmax(-1).gather(1, labels[:, None])[:, 0].double().numpy()
        out[attribute] = (correct, logp)
    return out


def zero_shot_scores(
    encode_image: ImageEncoder,
    encode_text: TextEncoder,
    world: ToyWorld,
    attributes: Sequence[str] = tuple(VALUES),
    per_value: int = 50,
    batch_size: int = 256,
    logit_scale: float = 100.0,
) -> dict[str, tuple[float, float]]:
    """Per attribute: ``(accuracy, mean log-probability of the correct prompt)`` on single-object
    scenes (the means of ``zero_shot_items``). The log-probability moves before accuracy does, so it
    shows partial effects on a redundant model.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> accuracy, logp = zero_shot_scores(model.encode_image, model.encode_text, ToyWorld(seed=12345), ["color"], 8)["color"]
        >>> accuracy, logp < 0
        (1.0, True)
    """
    items = zero_shot_items(encode_image, encode_text, world, attributes, per_value, batch_size, logit_scale)
    return {a: (float(correct.mean()), float(logp.mean())) for a, (correct, logp) in items.items()}


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
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> zero_shot_accuracy(model.encode_image, model.encode_text, ToyWorld(seed=12345), ["color"], per_value=8)
        {'color': 1.0}
    """
    scores = zero_shot_scores(encode_image, encode_text, world, attributes, per_value, batch_size)
    return {a: accuracy for a, (accuracy, _) in scores.items()}


def linear_probe_accuracy(
    encode_image: ImageEncoder,
    train_world: ToyWorld,
    test_world: ToyWorld,
    attributes: Sequence[str] = tuple(VALUES),
    per_value: int = 100,
    ridge: float = 1e-3,
    batch_size: int = 256,
) -> dict[str, float]:
    """How much of each attribute the image embedding holds, whether or not the text side agrees:
    a ridge-regression probe from L2-normalised image embeddings (plus a bias) to one-hot values,
    fitted on ``train_world``'s single-object scenes and scored on ``test_world``'s.

    High probe accuracy with low zero-shot accuracy means the image tower encodes the attribute
    but image and text are not aligned on it.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> acc = linear_probe_accuracy(model.encode_image, ToyWorld(seed=5), ToyWorld(seed=777), ["shape"], per_value=20)
        >>> round(acc["shape"], 2)                # chance: 1 / len(VALUES["shape"])
        0.86
    """
    out = {}
    for attribute in attributes:
        fit, test = train_world.attribute_set(attribute, per_value), test_world.attribute_set(attribute, per_value)
        x_fit, x_test = (
            torch.nn.functional.pad(_encode(encode_image, d.batch.pixels, batch_size), (0, 1), value=1.0).double()
            for d in (fit, test)
        )
        target = torch.nn.functional.one_hot(torch.from_numpy(fit.labels), len(VALUES[attribute])).double()
        gram = x_fit.T @ x_fit + ridge * len(x_fit) * torch.eye(x_fit.shape[1], dtype=torch.float64)
        weights = torch.linalg.solve(gram, x_fit.T @ target)
        out[attribute] = float(((x_test @ weights).argmax(-1).numpy() == test.labels).mean())
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
