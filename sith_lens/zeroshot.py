"""Zero-shot classification and group robustness (the protocol behind sith_spec §5.2's Waterbirds table).

A zero-shot head is one unit vector per class: each class's prompts are encoded, L2-normalised,
averaged and renormalised (the CLIP recipe). Group robustness is overall accuracy plus the accuracy
of the worst group, where a group is any label a CSV gives an image (in Waterbirds: bird x place).

An image folder with a groups CSV works as is: the CSV has a header with at least ``image``
(a path relative to the CSV's folder), ``label`` (the class name) and ``group`` columns.
The model is duck-typed (a ``HookedCLIP``); this module imports no host library.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from .model import CLIPLike


def zero_shot_weights(
    model: CLIPLike, class_prompts: Sequence[str | Sequence[str]], templates: Sequence[str] = ("{}",)
) -> Float[Tensor, "n_classes d_proj"]:
    """One unit vector per class from its prompts (template-averaged, CLIP's recipe).

    ``class_prompts[i]`` is a class name (put into every template) or a list of full prompts.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> zero_shot_weights(model, ["circle", "square"], templates=["a {}", "a {} shape"]).shape
        torch.Size([2, 128])
        >>> zero_shot_weights(model, [["a small object"], ["a large object"]]).shape
        torch.Size([2, 128])
    """
    if len(class_prompts) < 2:
        raise ValueError(f"zero-shot classification needs at least two classes, got {len(class_prompts)}")
    if not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
        raise ValueError(f"templates must be strings with a '{{}}' for the class name, got {list(templates)!r}")
    rows = []
    with torch.no_grad():
        for item in class_prompts:
            prompts = [t.format(item) for t in templates] if isinstance(item, str) else list(item)
            if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
                raise ValueError(f"class prompts must be non-empty strings, got {item!r}")
            emb = model.encode_text(prompts, normalize=True).float()
            rows.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows).cpu()


def predict(
    model: CLIPLike, pixels: Float[Tensor, "batch channel height width"], weights: Float[Tensor, "n_classes d_proj"],
    batch_size: int = 256,
) -> Int[Tensor, " batch"]:
    """The most similar class for each image.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> pixels = model.preprocess(list(sl.ToyWorld(seed=0).batch(0, 4).images))
        >>> predict(model, pixels, zero_shot_weights(model, ["circle", "square", "star"])).shape
        torch.Size([4])
    """
    out = []
    with torch.no_grad():
        for i in range(0, len(pixels), batch_size):
            img = model.encode_image(pixels[i : i + batch_size], normalize=True).float().cpu()
            out.append((img @ weights.T).argmax(-1))
    return torch.cat(out)


class GroupAccuracy(NamedTuple):
    """Accuracy overall and per group."""

    overall: float
    """Accuracy over all images."""
    worst_group: float
    """The lowest accuracy of any group."""
    worst_group_name: str
    """Which group that is."""
    groups: dict[str, tuple[float, int]]
    """``group -> (accuracy, number of images)``."""

    def __str__(self) -> str:
        parts = ", ".join(f"{g} {a:.3f} (n={n})" for g, (a, n) in self.groups.items())
        return f"overall {self.overall:.3f}, worst group {self.worst_group:.3f} ({self.worst_group_name}); {parts}"


def group_accuracy(predictions: Tensor, labels: Tensor, groups: Sequence[str]) -> GroupAccuracy:
    """Overall and per-group accuracy of ``predictions`` against ``labels``.

    Example:
        >>> group_accuracy(torch.tensor([0, 1]), torch.tensor([0, 0]), ["a", "b"]).worst_group
        0.0
    """
    if not len(predictions) == len(labels) == len(groups) or len(labels) == 0:
        raise ValueError(f"predictions, labels and groups must have the same non-zero length, got "
                         f"{len(predictions)}, {len(labels)}, {len(groups)}")
    correct = (torch.as_tensor(predictions) == torch.as_tensor(labels)).float()
    per = {}
    for g in sorted(set(groups)):
        mask = torch.tensor([x == g for x in groups])
        per[g] = (float(correct[mask].mean()), int(mask.sum()))
    worst = min(per, key=lambda g: per[g][0])
    return GroupAccuracy(float(correct.mean()), per[worst][0], worst, per)


def group_robustness(
    model: CLIPLike,
    images: Float[Tensor, "batch channel height width"] | Sequence[object],
    labels: Sequence[int] | Tensor,
    groups: Sequence[str],
    class_prompts: Sequence[str | Sequence[str]],
    templates: Sequence[str] = ("{}",),
    batch_size: int = 64,
) -> GroupAccuracy:
    """Zero-shot overall and worst-group accuracy.

    ``images``: preprocessed pixels, or PIL images / file paths (run through ``model.preprocess``).
    ``labels[i]``: the class index of image ``i`` into ``class_prompts``.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> batch = sl.ToyWorld(seed=0).batch(0, 8)
        >>> pixels = model.preprocess(list(batch.images))
        >>> labels = [i % 2 for i in range(8)]                       # any class index per image
        >>> groups = ["even" if i % 2 == 0 else "odd" for i in range(8)]
        >>> acc = group_robustness(model, pixels, labels, groups, ["circle", "square"])
        >>> 0.0 <= acc.worst_group <= acc.overall <= 1.0
        True
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_prompts)):
        raise ValueError(f"labels must index the {len(class_prompts)} classes, got values {labels.min()}..{labels.max()}")
    weights = zero_shot_weights(model, class_prompts, templates)
    if isinstance(images, Tensor):
        preds = predict(model, images, weights, batch_size)
    else:
        preds = torch.cat([predict(model, model.preprocess(list(images[i : i + batch_size])), weights)
                           for i in range(0, len(images), batch_size)]) if len(images) else torch.zeros(0)
    return group_accuracy(preds, labels, groups)


class GroupData(NamedTuple):
    """Images with class labels and groups, read from a CSV."""

    paths: list[Path]
    labels: list[int]
    """Class index into ``classes``."""
    groups: list[str]
    classes: list[str]
    """Class names, in the order given (or sorted, as found in the CSV)."""


def read_groups_csv(path: str | os.PathLike, classes: Sequence[str] | None = None) -> GroupData:
    """Read ``image,label,group`` rows; image paths are relative to the CSV's folder.

    Example:
        >>> _ = Path("groups.csv").write_text("image,label,group\\na.png,cat,indoor\\nb.png,dog,outdoor\\n")
        >>> for name in ("a.png", "b.png"):
        ...     _ = Path(name).write_bytes(b"")               # the images (checked to exist, read later)
        >>> data = read_groups_csv("groups.csv")      # paths relative to the file
        >>> data.classes, data.labels, data.groups
        (['cat', 'dog'], [0, 1], ['indoor', 'outdoor'])
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise ValueError(f"cannot read the groups CSV {path}: {err}") from None
    need = {"image", "label", "group"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"{path} must have a header with the columns image,label,group and at least one row")
    names = list(classes) if classes is not None else sorted({r["label"] for r in rows})
    unknown = sorted({r["label"] for r in rows} - set(names))
    if unknown:
        raise ValueError(f"{path} has labels {unknown[:5]} that are not among the classes {names}")
    paths = [path.parent / r["image"] for r in rows]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"{len(missing)} images listed in {path} do not exist, e.g. {missing[0]}")
    return GroupData(paths, [names.index(r["label"]) for r in rows], [r["group"] for r in rows], names)
