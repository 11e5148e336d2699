"""Paired activations for LUCID: every patch of each image and the content tokens of its caption,
stored once (safetensors + JSON) and served as seeded, resumable batches of pairs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..atomic import atomic_directory, recover_directory
from ..checks import check_finite

TENSORS_FILE = "activations.safetensors"
META_FILE = "activations.json"


@dataclass
class PairedBatch:
    """B image-caption pairs: image i goes with caption i. L = token slots (the longest caption in
    the batch); slots past a caption's end have ``token_mask`` False and weight 0."""

    patches: Float[Tensor, "B N d"]
    tokens: Float[Tensor, "B L d"]
    #: True for a caption's real tokens (special tokens and padding were dropped at collection).
    token_mask: Bool[Tensor, "B L"]
    #: Transport mass per token slot before normalisation (``terms.token_weight``).
    token_weights: Float[Tensor, "B L"]
    #: Patches per side of the image's patch grid.
    grid: int

    def to(self, device: torch.device | str) -> PairedBatch:
        """The batch on ``device``."""
        return PairedBatch(
            self.patches.to(device), self.tokens.to(device), self.token_mask.to(device),
            self.token_weights.to(device), self.grid,
        )

    def __len__(self) -> int:
        return self.patches.shape[0]

    @property
    def patch_rows(self) -> Float[Tensor, "rows d"]:
        """Every patch of the batch, one row each."""
        return self.patches.reshape(-1, self.patches.shape[-1])

    @property
    def token_rows(self) -> Float[Tensor, "rows d"]:
        """Every real token of the batch, one row each."""
        return self.tokens[self.token_mask]


@dataclass
class PairedActivations:
    """A dataset of image-caption pairs as activations of one model.

    Images and captions are stored apart, so an image with several captions is stored once.
    ``extras`` holds optional per-image (``image.*``) or per-pair (``pair.*``) tensors, such as the
    toy world's ground truth.

    Example:
        >>> acts = collect_toy_activations(model, n_pairs=2048)
        >>> for batch in acts.batches(batch_size=32, seed=0):
        ...     batch.patches.shape            # [32, 64, d]
    """

    #: Every patch of every image: [images, patches, d].
    patches: Float[Tensor, "I N d"]
    #: The content tokens of every caption, left-aligned: [pairs, slots, d].
    tokens: Float[Tensor, "P L d"]
    token_mask: Bool[Tensor, "P L"]
    token_weights: Float[Tensor, "P L"]
    #: Token ids, and the position of each slot in the tokenised caption (-1 for empty slots).
    token_ids: Int[Tensor, "P L"]
    token_positions: Int[Tensor, "P L"]
    #: The image of each pair.
    image_index: Int[Tensor, "P"]
    grid: int
    #: The token strings of each caption's slots, and the captions.
    token_strings: list[list[str]]
    captions: list[str]
    #: Model name, hooks, input space, data source...
    metadata: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_images, n_patches, d = self.patches.shape
        n_pairs = self.tokens.shape[0]
        if self.grid * self.grid != n_patches:
            raise ValueError(f"{n_patches} patches per image do not form a {self.grid}x{self.grid} grid")
        if self.tokens.shape[-1] != d:
            raise ValueError(f"patch width {d} and token width {self.tokens.shape[-1]} differ; "
                             "LUCID needs both modalities in one space (or the same width)")
        for name in ("token_mask", "token_weights", "token_ids", "token_positions"):
            if getattr(self, name).shape != self.tokens.shape[:2]:
                raise ValueError(f"{name} has shape {list(getattr(self, name).shape)}, expected {list(self.tokens.shape[:2])}")
        if self.image_index.shape != (n_pairs,) or (n_pairs and int(self.image_index.max()) >= n_images):
            raise ValueError("image_index must give one image (within range) per pair")
        if len(self.captions) != n_pairs or len(self.token_strings) != n_pairs:
            raise ValueError("captions and token_strings need one entry per pair")
        for name in ("patches", "tokens", "token_weights"):
            check_finite(f"LUCID activations: {name}", getattr(self, name),
                         fix="the model produced them from broken weights or inputs (check its weights and "
                         "the images), or the file is damaged; collect them again")

    @property
    def d_in(self) -> int:
        return self.patches.shape[-1]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def pair_batch(self, pairs: Int[Tensor, "B"]) -> PairedBatch:
        """The pairs ``pairs`` as a PairedBatch, token slots cut to the longest caption."""
        mask = self.token_mask[pairs]
        width = max(int(mask.sum(1).max()), 1)
        return PairedBatch(
            self.patches[self.image_index[pairs]].float(),
            self.tokens[pairs, :width].float(),
            mask[:, :width],
            self.token_weights[pairs, :width].float(),
            self.grid,
        )

    def batch_at(self, step: int, batch_size: int, seed: int) -> PairedBatch:
        """Batch number ``step`` of the seeded stream: epoch e is a permutation drawn from
        (seed, e); its last incomplete batch is dropped. Pure in ``step``, so training can resume."""
        per_epoch = len(self) // batch_size
        if per_epoch == 0:
            raise ValueError(f"batch_size={batch_size} is larger than the {len(self)} pairs collected")
        epoch, k = divmod(step, per_epoch)
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        return self.pair_batch(order[k * batch_size:(k + 1) * batch_size])

    def batches(self, batch_size: int, seed: int, start: int = 0) -> Iterator[PairedBatch]:
        """An endless stream of batches from step ``start`` (see ``batch_at``)."""
        step = start
        while True:
            yield self.batch_at(step, batch_size, seed)
            step += 1

    def split(self, n_holdout: int) -> tuple[PairedActivations, PairedActivations]:
        """The first ``len - n_holdout`` pairs and the last ``n_holdout``, each with only its images."""
        if not 0 < n_holdout < len(self):
            raise ValueError(f"n_holdout must be between 1 and {len(self) - 1}, got {n_holdout}")
        cut = len(self) - n_holdout
        return self.subset(torch.arange(cut)), self.subset(torch.arange(cut, len(self)))

    def subset(self, pairs: Int[Tensor, "P"]) -> PairedActivations:
        """The pairs ``pairs`` with the images they use (renumbered)."""
        images, image_index = torch.unique(self.image_index[pairs], return_inverse=True)
        extras = {
            name: (value[images] if name.startswith("image.") else value[pairs])
            for name, value in self.extras.items()
        }
        idx = pairs.tolist()
        return PairedActivations(
            self.patches[images], self.tokens[pairs], self.token_mask[pairs], self.token_weights[pairs],
            self.token_ids[pairs], self.token_positions[pairs], image_index, self.grid,
            [self.token_strings[i] for i in idx], [self.captions[i] for i in idx], dict(self.metadata), extras,
        )

    def save(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write the dataset to the folder ``path`` (safetensors + JSON), atomically."""
        from safetensors.torch import save_file

        tensors = {
            name: getattr(self, name).contiguous()
            for name in ("patches", "tokens", "token_mask", "token_weights", "token_ids", "token_positions", "image_index")
        }
        tensors.update({f"extra.{k}": v.contiguous() for k, v in self.extras.items()})
        meta = {
            "grid": self.grid, "token_strings": self.token_strings, "captions": self.captions,
            "metadata": self.metadata,
        }
        with atomic_directory(path, overwrite=overwrite) as tmp:
            save_file(tensors, str(tmp / TENSORS_FILE))
            (tmp / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PairedActivations:
        """Read a dataset written by ``save``.

        Example:
            >>> acts = PairedActivations.load("runs/toy-acts")
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        recover_directory(path)
        if not (path / TENSORS_FILE).is_file() or not (path / META_FILE).is_file():
            raise FileNotFoundError(f"{path} holds no LUCID activations ({TENSORS_FILE} + {META_FILE}); "
                                    "collect them with `sith-lens lucid collect` or collect_toy_activations")
        try:
            tensors = load_file(str(path / TENSORS_FILE))
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
            raise ValueError(f"the activations in {path} are corrupt ({err}); collect them again") from err
        extras = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
        return cls(
            tensors["patches"], tensors["tokens"], tensors["token_mask"], tensors["token_weights"],
            tensors["token_ids"], tensors["token_positions"], tensors["image_index"], int(meta["grid"]),
            meta["token_strings"], meta["captions"], meta.get("metadata", {}), extras,
        )
