"""Collect LUCID's training data from a HookedCLIP: per-patch and per-token activations of image
and caption pairs, with special tokens and padding left out.

Inputs (the ``vision_hook`` / ``text_hook`` arguments):

- ``"hook_joint_tokens"`` (default): every token through the tower's final LayerNorm and
  projection, so both modalities live in the joint image-text space (``tower(...,
  return_type="tokens")``; for SigLIP, each patch through the attention-pooling head as if the
  probe attended to it alone).
- any hook name of the tower (``"blocks.3.hook_resid_post"``...): that activation, read from the
  cache. Both hooks must have the same width, since LUCID's shared decoder serves both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from sith_lens.adapters.text_tokens import special_token_ids, token_strings  # noqa: F401 (re-exported)

from .data import PairedActivations
from .defaults import JOINT  # noqa: F401 (re-exported)
from .terms import token_weight

logger = logging.getLogger(__name__)

#: Transport mass of a function word relative to a content word (our choice, lucid_spec.md §3.2).
FUNCTION_WORD_WEIGHT = 0.1


def _tower_tokens(tower: Any, hook: str, inputs: tuple, kwargs: dict) -> Tensor:
    if hook == JOINT:
        return tower(*inputs, return_type="tokens", **kwargs)
    if hook not in tower.hook_dict:
        raise ValueError(f"{type(tower).__name__} has no hook {hook!r}; use {JOINT!r} or one of "
                         f"{sorted(tower.hook_dict)[:8]}...")
    _, cache = tower.run_with_cache(*inputs, return_type=None, names_filter=[hook], **kwargs)
    acts = cache[hook]
    if acts.ndim != 3:
        raise ValueError(f"hook {hook!r} gives activations of shape {list(acts.shape)}; LUCID needs "
                         "[batch, position, d] (a residual, attention-out or MLP-out hook)")
    return acts


def image_patch_activations(
    model: Any, pixels: Float[Tensor, "B 3 H W"], hook: str = JOINT
) -> Float[Tensor, "B N d"]:
    """Per-patch activations of ``pixels`` at ``hook``, without the CLS token.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> image_patch_activations(model, torch.randn(2, 3, 64, 64)).shape     # [B, 64, d_proj] on the toy CLIP
        torch.Size([2, 64, 128])
    """
    with torch.no_grad():
        acts = _tower_tokens(model.vision, hook, (pixels,), {})
    return acts[:, 1:] if model.vision.cfg.has_cls_token else acts


def caption_token_activations(
    model: Any, captions: Sequence[str], hook: str = JOINT
) -> tuple[Float[Tensor, "B T d"], Int[Tensor, "B T"], torch.Tensor]:
    """Per-token activations of ``captions`` at ``hook``, their token ids, and a mask of the tokens
    LUCID uses (no special token, no padding). Refuses a caption with no such token."""
    bad = [i for i, c in enumerate(captions) if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ValueError(f"captions {bad[:10]} are empty; every image needs a caption with words")
    toks = model.tokenize(list(captions))
    with torch.no_grad():
        acts = _tower_tokens(model.text, hook, (toks.input_ids,), {"attention_mask": toks.attention_mask})
    specials = torch.tensor(sorted(special_token_ids(model.tokenizer)), dtype=toks.input_ids.dtype)
    keep = toks.attention_mask.bool() & ~torch.isin(toks.input_ids, specials.to(toks.input_ids.device))
    empty = (keep.sum(1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"captions {empty[:10]} have no token besides special tokens, e.g. {captions[empty[0]]!r}")
    return acts, toks.input_ids, keep


def _compact(acts: Tensor, ids: Tensor, keep: Tensor, width: int) -> tuple[Tensor, ...]:
    """Left-align the kept tokens of each caption into ``width`` slots."""
    b, _, d = acts.shape
    out = acts.new_zeros(b, width, d)
    out_ids = ids.new_zeros(b, width)
    positions = torch.full((b, width), -1, dtype=torch.long)
    mask = torch.zeros(b, width, dtype=torch.bool)
    for i in range(b):
        pos = keep[i].nonzero().flatten()[:width]
        out[i, : len(pos)] = acts[i, pos]
        out_ids[i, : len(pos)] = ids[i, pos]
        positions[i, : len(pos)] = pos.cpu()
        mask[i, : len(pos)] = True
    return out, out_ids, positions, mask


def _patch_activations(model: Any, pixel_batches: Any, n_batches: int, hook: str, progress: bool) -> Tensor:
    from tqdm.auto import tqdm

    device = model.vision.embed.W_E.device
    parts = [
        image_patch_activations(model, pixels.to(device), hook).float().cpu()
        for pixels in tqdm(pixel_batches, total=n_batches, desc="LUCID image activations", unit="batch",
                           disable=not progress)
    ]
    if not parts:
        raise ValueError("no images to collect")
    return torch.cat(parts)


def _token_activations(model: Any, caption_batches: Any, n_batches: int, hook: str, progress: bool) -> tuple:
    """Tokens of every caption, left-aligned into slots, with ids, positions, mask, strings, weights."""
    from tqdm.auto import tqdm

    raw, captions = [], []
    for batch in tqdm(caption_batches, total=n_batches, desc="LUCID caption activations", unit="batch",
                      disable=not progress):
        acts, ids, keep = caption_token_activations(model, list(batch), hook)
        raw.append((acts.float().cpu(), ids.cpu(), keep.cpu()))
        captions.extend(batch)
    if not raw:
        raise ValueError("no captions to collect")
    width = max(int(keep.sum(1).max()) for _, _, keep in raw)
    tokens, token_ids, positions, mask = (torch.cat(x) for x in zip(*(_compact(*r, width) for r in raw)))
    strings = [token_strings(model.tokenizer, row[m].tolist()) for row, m in zip(token_ids, mask)]
    weights = torch.zeros(mask.shape)
    for i, row in enumerate(strings):
        weights[i, : len(row)] = torch.tensor([token_weight(s, FUNCTION_WORD_WEIGHT) for s in row])
    no_content = (weights.sum(1) == 0).nonzero().flatten().tolist()
    if no_content:
        raise ValueError(f"captions {no_content[:10]} have no content word, e.g. {captions[no_content[0]]!r}")
    return tokens, token_ids, positions, mask, weights, strings, captions


def collect_pairs(
    model: Any,
    pixel_batches: Any,
    caption_batches: Any,
    n_batches: int,
    vision_hook: str = JOINT,
    text_hook: str = JOINT,
    image_index: Tensor | None = None,
    caption_batch_count: int | None = None,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
) -> PairedActivations:
    """Run ``model`` over batches of images and of captions and gather the activations LUCID trains on.

    Args:
        pixel_batches / caption_batches: iterables of ``[B, 3, H, W]`` pixels and of lists of strings.
        n_batches: how many pixel batches there are (for the progress bar); also the number of
            caption batches unless ``caption_batch_count`` says otherwise.
        image_index: the image of each caption (default: caption i describes image i).

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> batch = sl.ToyWorld(seed=0).batch(0, 4)
        >>> acts = collect_pairs(model, [batch.pixels], [batch.texts], n_batches=1, progress=False)
        >>> len(acts), acts.patches.shape
        (4, torch.Size([4, 64, 128]))
    """
    patches = _patch_activations(model, pixel_batches, n_batches, vision_hook, progress)
    tokens, token_ids, positions, mask, weights, strings, captions = _token_activations(
        model, caption_batches, caption_batch_count or n_batches, text_hook, progress
    )
    if image_index is None:
        if len(captions) != len(patches):
            raise ValueError(f"{len(patches)} images but {len(captions)} captions; pair them one to one "
                             "or pass image_index")
        image_index = torch.arange(len(captions))
    grid = int(round(patches.shape[1] ** 0.5))
    meta = {"model_name": model.cfg.model_name, "hook_name_vision": vision_hook, "hook_name_text": text_hook,
            "function_word_weight": FUNCTION_WORD_WEIGHT, **(metadata or {})}
    return PairedActivations(
        patches, tokens, mask, weights, token_ids, positions, image_index, grid, strings, captions, meta,
    )


def read_captions_jsonl(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> tuple[list[Path], list[str], list[int]]:
    """Read a captions file: one JSON object per line, ``{"image": "cat.jpg", "caption": "a cat"}``;
    an image may have several lines. Image paths are relative to ``image_root`` (default: the
    file's folder). Returns the distinct images, the captions and each caption's image index.

    Example:
        >>> _ = Path("captions.jsonl").write_text('{"image": "a.png", "caption": "a red circle"}\\n'
        ...                                       '{"image": "a.png", "caption": "a circle"}\\n')
        >>> _ = Path("a.png").write_bytes(b"")                  # checked to exist here, read when collected
        >>> images, captions, index = read_captions_jsonl("captions.jsonl")
        >>> [p.name for p in images], captions, index
        (['a.png'], ['a red circle', 'a circle'], [0, 0])
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    if not path.is_file():
        raise FileNotFoundError(f"no captions file at {path}; write one JSON object per line: "
                                '{"image": "file.jpg", "caption": "..."}')
    images: dict[Path, int] = {}
    captions, index = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number} is not valid JSON ({err})") from err
        if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not isinstance(row.get("caption"), str):
            raise ValueError(f'{path}:{number} must be an object with string fields "image" and "caption"')
        if not row["caption"].strip():
            raise ValueError(f"{path}:{number} has an empty caption; every image needs words")
        image = (root / row["image"]).resolve()
        if not image.is_file():
            raise FileNotFoundError(f"{path}:{number} names {row['image']!r}, which is not a file under {root}")
        index.append(images.setdefault(image, len(images)))
        captions.append(row["caption"])
    if not captions:
        raise ValueError(f"{path} holds no captions")
    return list(images), captions, index


def collect_folder_activations(
    model: Any,
    captions_file: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    batch_size: int = 32,
    vision_hook: str = JOINT,
    text_hook: str = JOINT,
    progress: bool = True,
) -> PairedActivations:
    """LUCID data from your own images: a captions JSONL (``read_captions_jsonl``) and the images
    it names, preprocessed with the model's own image processor.

    Example:
        >>> import sith_lens as sl
        >>> from PIL import Image
        >>> Image.fromarray(sl.ToyWorld(seed=0).batch(0, 1).images[0]).save("scene.png")
        >>> _ = Path("captions.jsonl").write_text('{"image": "scene.png", "caption": "a red circle"}\\n')
        >>> acts = collect_folder_activations(sl.load_clip("toy"), "captions.jsonl", progress=False)
        >>> len(acts), acts.captions
        (1, ['a red circle'])
    """
    images, captions, index = read_captions_jsonl(captions_file, image_root)
    return collect_images(model, images, captions, index, batch_size, vision_hook, text_hook, progress,
                          source=f"folder:{Path(captions_file).resolve()}")


def collect_images(
    model: Any,
    images: Sequence[Path],
    captions: Sequence[str],
    index: Sequence[int],
    batch_size: int = 32,
    vision_hook: str = JOINT,
    text_hook: str = JOINT,
    progress: bool = True,
    source: str = "images",
) -> PairedActivations:
    """LUCID data from image files and captions, caption i describing ``images[index[i]]``.

    Example:
        >>> import sith_lens as sl
        >>> from PIL import Image
        >>> for i, image in enumerate(sl.ToyWorld(seed=0).batch(0, 2).images):
        ...     Image.fromarray(image).save(f"{i}.png")
        >>> acts = collect_images(sl.load_clip("toy"), [Path("0.png"), Path("1.png")], ["a red circle", "a blue square"],
        ...                       [0, 1], progress=False)
        >>> len(acts)
        2
    """
    from PIL import Image, UnidentifiedImageError

    def pixel_batches():
        for start in range(0, len(images), batch_size):
            loaded = []
            for file in images[start:start + batch_size]:
                try:
                    with Image.open(file) as im:
                        loaded.append(im.convert("RGB"))
                except (UnidentifiedImageError, OSError) as err:
                    raise ValueError(f"cannot read image {file} ({err}); remove it from the captions file") from err
            yield model.preprocess(loaded)

    def caption_batches():
        for start in range(0, len(captions), batch_size):
            yield list(captions[start:start + batch_size])

    return collect_pairs(
        model, pixel_batches(), caption_batches(), -(-len(images) // batch_size), vision_hook, text_hook,
        image_index=torch.as_tensor(list(index), dtype=torch.long),
        caption_batch_count=-(-len(captions) // batch_size), metadata={"source": source}, progress=progress,
    )


def cached(model: Any, spec: dict[str, Any], build: Callable[[], PairedActivations], use_cache: bool = True) -> PairedActivations:
    """``build()``, or its result from an earlier call with the same model weights and ``spec``,
    kept under ``$SITH_LENS_CACHE/lucid/``.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> acts = cached(model, {"toy_pairs": 16, "seed": 0}, lambda: collect_toy_activations(model, 16, progress=False))
        >>> again = cached(model, {"toy_pairs": 16, "seed": 0}, lambda: None)     # read back, not rebuilt
        >>> torch.equal(acts.patches, again.patches)
        True
    """
    from ..concepts import cache_dir, model_fingerprint

    if not use_cache:
        return build()
    key = hashlib.blake2b(json.dumps([model_fingerprint(model), spec], sort_keys=True).encode(), digest_size=12).hexdigest()
    folder = cache_dir() / "lucid" / key
    if (folder / "activations.safetensors").is_file():
        logger.info("LUCID activations from the cache at %s", folder)
        return PairedActivations.load(folder)
    acts = build()
    acts.save(folder)
    return acts


def collect_toy_activations(
    model: Any,
    n_pairs: int,
    seed: int = 0,
    batch_size: int = 64,
    vision_hook: str = JOINT,
    text_hook: str = JOINT,
    progress: bool = True,
    first_batch: int = 0,
) -> PairedActivations:
    """LUCID data from the toy world: ``n_pairs`` scenes of 1-3 objects with their captions, plus
    the ground truth as extras: ``image.patch_labels`` [I, g, g] (object per patch, -1 background),
    ``image.values`` [I, 3, n_attributes], ``image.backgrounds`` [I], and per token slot
    ``pair.token_objects`` / ``pair.token_attributes`` (what the word names, -2 / -1 for nothing).
    ``first_batch`` skips that many batches of the seeded stream (the sharded store collects it a
    shard at a time).

    Example:
        >>> import sith_lens as sl
        >>> acts = collect_toy_activations(sl.load_clip("toy"), n_pairs=64, seed=1, progress=False)
        >>> len(acts), acts.patches.shape
        (64, torch.Size([64, 64, 128]))
    """
    from ..toyworld import ToyWorld

    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    cfg = model.vision.cfg
    world = ToyWorld(seed=seed, image_size=cfg.image_size, patch_size=cfg.patch_size)
    sizes = [min(batch_size, n_pairs - start) for start in range(0, n_pairs, batch_size)]
    batches = [world.batch(first_batch + i, size) for i, size in enumerate(sizes)]
    acts = collect_pairs(
        model, (b.pixels for b in batches), (b.texts for b in batches), len(batches), vision_hook, text_hook,
        metadata={"source": f"toyworld:seed={seed}"}, progress=progress,
    )
    labels = [b.token_label_arrays(model.text.cfg.n_ctx) for b in batches]
    objects = np.concatenate([o for o, _ in labels])
    attributes = np.concatenate([a for _, a in labels])
    pos = acts.token_positions.numpy()
    rows = np.arange(len(pos))[:, None]
    valid = pos >= 0
    acts.extras = {
        "image.patch_labels": torch.from_numpy(np.concatenate([b.patch_labels for b in batches])),
        "image.values": torch.from_numpy(np.concatenate([b.values for b in batches])),
        "image.backgrounds": torch.from_numpy(np.concatenate([b.backgrounds for b in batches])),
        "pair.token_objects": torch.from_numpy(np.where(valid, objects[rows, np.maximum(pos, 0)], -2)),
        "pair.token_attributes": torch.from_numpy(np.where(valid, attributes[rows, np.maximum(pos, 0)], -1)),
    }
    return acts
