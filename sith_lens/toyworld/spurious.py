"""A toy spurious-correlation task for group robustness (a Waterbirds analogue).

The class is an object attribute (size by default: "small" / "large"); each class is confounded with a
background colour. The toy CLIP was trained on independent attributes, so the confound lives where
Waterbirds' does in a class *name* ("waterbird" carries "water"): each class's prompt names its usual
background ("a large object on a white background"). With ``plain_prompt=True`` the class embedding
averages that with a plain prompt ("a large object"), a milder confound. Images cover all four
(class x background) groups equally; the two groups whose background belongs to the other class
are the minority groups, where a model that reads the background fails.

``write_group_folder`` writes the images as PNGs plus ``groups.csv``, the format
``sith_lens.zeroshot.read_groups_csv`` reads for any image folder.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from jaxtyping import Float, UInt8
from torch import Tensor

from .attributes import BACKGROUNDS, VALUES
from .captions import make_caption
from .data import ToyWorld, batch_from_scenes, sample_scene
from .render import Scene


class SpuriousTask(NamedTuple):
    """Images, their class and group, and the confounded zero-shot prompts."""

    pixels: Float[Tensor, "N 3 H W"]
    images: UInt8[np.ndarray, "N H W 3"]
    labels: list[int]
    """Class index of each image."""
    groups: list[str]
    """``"{class}/{background}"`` of each image."""
    classes: list[str]
    """Class names (attribute values)."""
    class_prompts: list[list[str]]
    """Per class: the prompt naming the class's usual background (after a plain one, with
    ``plain_prompt``)."""


def spurious_task(
    seed: int = 777,
    per_group: int = 100,
    attribute: str = "size",
    classes: tuple[str, str] = ("small", "large"),
    backgrounds: tuple[str, str] = ("black", "white"),
    plain_prompt: bool = False,
) -> SpuriousTask:
    """Single-object scenes for every (class, background) pair; class ``i`` is confounded with
    ``backgrounds[i]`` in its prompt ("a large object on a white background"), which is averaged
    with a plain one ("a large object") when ``plain_prompt``.

    Example:
        >>> import sith_lens as sl
        >>> task = spurious_task(per_group=5)
        >>> len(task.labels), task.class_prompts[0]
        (20, ['a small object on a black background'])
        >>> acc = sl.group_robustness(sl.load_clip("toy"), task.pixels, task.labels, task.groups, task.class_prompts)
        >>> 0.0 <= acc.worst_group <= acc.overall <= 1.0
        True
    """
    if attribute not in VALUES or attribute == "background":
        raise ValueError(f"attribute must be an object attribute {tuple(a for a in VALUES if a != 'background')}, got {attribute!r}")
    for c in classes:
        if c not in VALUES[attribute]:
            raise ValueError(f"{c!r} is not a {attribute} of the toy world; choose from {VALUES[attribute]}")
    for b in backgrounds:
        if b not in BACKGROUNDS:
            raise ValueError(f"{b!r} is not a toy background; choose from {BACKGROUNDS}")
    if per_group < 1:
        raise ValueError(f"per_group must be >= 1, got {per_group}")
    world = ToyWorld(seed=seed)
    rng = world.rng(9)
    scenes, labels, groups = [], [], []
    for i, value in enumerate(classes):
        for background in backgrounds:
            for _ in range(per_group):
                s = sample_scene(rng, 1, fixed={attribute: VALUES[attribute].index(value)})
                scenes.append(Scene(s.objects, BACKGROUNDS.index(background), s.background_tint))
                labels.append(i)
                groups.append(f"{value}/{background}")
    batch = batch_from_scenes(scenes, [make_caption(s, rng) for s in scenes], world.image_size, world.patch_size)
    prompts = [([f"a {value} object"] if plain_prompt else []) + [f"a {value} object on a {background} background"]
               for value, background in zip(classes, backgrounds)]
    return SpuriousTask(batch.pixels, batch.images, labels, groups, list(classes), prompts)


def write_group_folder(task: SpuriousTask, out: str | os.PathLike) -> Path:
    """Write ``task`` as ``out/NNNNN.png`` plus ``out/groups.csv`` (image,label,group), atomically.

    Example:
        >>> csv_path = write_group_folder(spurious_task(per_group=10), "toy-groups")
    """
    from PIL import Image

    from sith_lens.atomic import atomic_directory

    with atomic_directory(out) as tmp:
        rows = []
        for i, (image, label, group) in enumerate(zip(task.images, task.labels, task.groups)):
            name = f"{i:05d}.png"
            Image.fromarray(image).save(tmp / name)
            rows.append({"image": name, "label": task.classes[label], "group": group})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["image", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
        (tmp / "groups.csv").write_text(buf.getvalue(), encoding="utf-8")
    return Path(out) / "groups.csv"


__all__ = ["SpuriousTask", "spurious_task", "write_group_folder"]
