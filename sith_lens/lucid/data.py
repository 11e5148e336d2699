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
#: The tensors of a dataset, in the order of PairedActivations' fields.
TENSOR_NAMES = ("patches", "tokens", "token_mask", "token_weights", "token_ids", "token_positions", "image_index")

#: What fills an empty token slot, per tensor, where it is not 0 (``-1``: no position; the toy
#: world's ground truth: ``-2`` no object, ``-1`` no attribute).
SLOT_PADDING = {"token_positions": -1, "extra.pair.token_objects": -2, "extra.pair.token_attributes": -1}


def evenly_spaced(n: int, k: int) -> Int[Tensor, "m"]:
    """``min(n, k)`` indices spread evenly over ``range(n)``, first and last included."""
    return torch.linspace(0, n - 1, min(n, k)).long()


def epoch_permutation(n: int, epoch: int, seed: int) -> Int[Tensor, "n"]:
    """The order of ``n`` pairs in epoch ``epoch``: a permutation drawn from (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def check_split(batch_size: int, world: int) -> None:
    """Refuse a batch of pairs that ``world`` processes cannot share equally.

    Example:
        >>> check_split(32, 2)
    """
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} pairs do not split evenly over {world} processes; "
                         f"pass a multiple of {world}")


def seeded_batch(data: Any, step: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> PairedBatch:
    """Batch number ``step`` of ``data``'s seeded stream: epoch e is ``data.epoch_order(e, seed)``,
    its last incomplete batch dropped. With ``world`` processes each gets the ``rank``-th of
    ``world`` equal parts of the batch, its token slots as wide as the whole batch's.

    Example:
        >>> import sith_lens as sl
        >>> acts = sl.collect_toy_activations(sl.load_clip("toy"), 64, progress=False)
        >>> seeded_batch(acts, step=1, batch_size=32, seed=0, rank=1, world=2).patches.shape[0]
        16
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of {world} processes is not a process")
    check_split(batch_size, world)
    per_epoch = len(data) // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the {len(data)} pairs collected")
    epoch, k = divmod(step, per_epoch)
    pairs = data.epoch_order(epoch, seed)[k * batch_size:(k + 1) * batch_size]
    width = None
    if world > 1:
        width = max(int(data.caption_lengths(pairs).max()), 1)
        share = batch_size // world
        pairs = pairs[rank * share:(rank + 1) * share]
    return data.pair_batch(pairs, width)


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


class SeededBatches:
    """The seeded stream of batches of a dataset with ``epoch_order``, ``caption_lengths`` and
    ``pair_batch`` (``PairedActivations``, ``store.ActivationStore``)."""

    def batch_at(self, step: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> PairedBatch:
        """Batch number ``step`` of the seeded stream (``seeded_batch``): pure in ``step``, so training
        can resume; with ``world`` > 1 processes, rank ``rank``'s share of it."""
        return seeded_batch(self, step, batch_size, seed, rank, world)

    def batches(self, batch_size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1) -> Iterator[PairedBatch]:
        """An endless stream of batches from step ``start`` (see ``batch_at``)."""
        step = start
        while True:
            yield self.batch_at(step, batch_size, seed, rank, world)
            step += 1


@dataclass
class PairedActivations(SeededBatches):
    """A dataset of image-caption pairs as activations of one model.

    Images and captions are stored apart, so an image with several captions is stored once.
    ``extras`` holds optional per-image (``image.*``) or per-pair (``pair.*``) tensors, such as the
    toy world's ground truth.

    Example:
        >>> import sith_lens as sl
        >>> acts = sl.collect_toy_activations(sl.load_clip("toy"), n_pairs=64, progress=False)
        >>> batches = acts.batches(batch_size=32, seed=0)                # endless: epoch after epoch
        >>> next(batches).patches.shape                                  # [32, 64, d]
        torch.Size([32, 64, 128])
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

    def caption_lengths(self, pairs: Int[Tensor, "B"]) -> Int[Tensor, "B"]:
        """Real tokens of each caption of ``pairs``."""
        return self.token_mask[pairs].sum(1)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def pair_batch(self, pairs: Int[Tensor, "B"], width: int | None = None) -> PairedBatch:
        """The pairs ``pairs`` as a PairedBatch, token slots cut to ``width`` (default: the longest
        caption among them)."""
        mask = self.token_mask[pairs]
        width = max(int(mask.sum(1).max()), 1) if width is None else width
        return PairedBatch(
            self.patches[self.image_index[pairs]].float(),
            self.tokens[pairs, :width].float(),
            mask[:, :width],
            self.token_weights[pairs, :width].float(),
            self.grid,
        )

    def epoch_order(self, epoch: int, seed: int) -> Int[Tensor, "P"]:
        """The pairs of epoch ``epoch`` in training order: a permutation drawn from (seed, epoch)."""
        return epoch_permutation(len(self), epoch, seed)

    def sample_rows(self, modality: str, max_rows: int) -> Float[Tensor, "rows d"]:
        """At most ``max_rows`` rows of one modality (every patch; every real token), evenly spaced
        in storage order, as float32."""
        x = self.patches.reshape(-1, self.d_in) if modality == "vision" else self.tokens[self.token_mask]
        return x[evenly_spaced(len(x), max_rows)].float()

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

    def tensors(self) -> dict[str, Tensor]:
        """Every tensor of the dataset by its file name (``extra.`` before the extras)."""
        tensors = {name: getattr(self, name).contiguous() for name in TENSOR_NAMES}
        tensors.update({f"extra.{k}": v.contiguous() for k, v in self.extras.items()})
        return tensors

    def meta(self) -> dict[str, Any]:
        """Everything that is not a tensor: grid, token strings, captions, metadata."""
        return {"grid": self.grid, "token_strings": self.token_strings, "captions": self.captions,
                "metadata": self.metadata}

    @classmethod
    def concat(cls, parts: list[PairedActivations]) -> PairedActivations:
        """The pairs of ``parts`` one after the other (images renumbered, token slots padded to the
        widest part: empty slots get mask False, weight 0 and ``SLOT_PADDING``)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        width = max(part.tokens.shape[1] for part in parts)
        tensors: dict[str, list[Tensor]] = {}
        first_image = 0
        for part in parts:
            for name, value in part.tensors().items():
                if name == "image_index":
                    value = value + first_image
                elif name in TENSOR_NAMES[1:6] or (name.startswith("extra.pair.") and value.ndim > 1
                                                    and value.shape[1] == part.tokens.shape[1]):
                    pad = SLOT_PADDING.get(name, 0)
                    value = torch.cat([value, value.new_full((len(value), width - value.shape[1], *value.shape[2:]), pad)], 1)
                tensors.setdefault(name, []).append(value)
            first_image += part.patches.shape[0]
        meta = {**parts[0].meta(), "token_strings": [r for p in parts for r in p.token_strings],
                "captions": [c for p in parts for c in p.captions]}
        return cls.from_parts({name: torch.cat(values) for name, values in tensors.items()}, meta)

    @classmethod
    def from_parts(cls, tensors: dict[str, Tensor], meta: dict[str, Any]) -> PairedActivations:
        """The inverse of ``tensors()`` and ``meta()``."""
        extras = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
        return cls(*(tensors[name] for name in TENSOR_NAMES[:6]), tensors["image_index"], int(meta["grid"]),
                   meta["token_strings"], meta["captions"], meta.get("metadata", {}), extras)

    def save(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write the dataset to the folder ``path`` (safetensors + JSON), atomically."""
        from safetensors.torch import save_file

        with atomic_directory(path, overwrite=overwrite) as tmp:
            save_file(self.tensors(), str(tmp / TENSORS_FILE))
            (tmp / META_FILE).write_text(json.dumps(self.meta()), encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PairedActivations:
        """Read a dataset written by ``save``, or a whole sharded store (``sith_lens.lucid.store``)
        into memory.

        Example:
            >>> import sith_lens as sl
            >>> acts = sl.collect_toy_activations(sl.load_clip("toy"), 8, progress=False)
            >>> _ = acts.save("toy-acts")
            >>> again = PairedActivations.load("toy-acts")
            >>> len(again), torch.equal(again.patches, acts.patches)
            (8, True)
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from .store import INDEX_FILE, ActivationStore

        path = Path(path)
        if (path / INDEX_FILE).is_file():
            return ActivationStore.open(path).to_memory()
        recover_directory(path)
        if not (path / TENSORS_FILE).is_file() or not (path / META_FILE).is_file():
            raise FileNotFoundError(f"{path} holds no LUCID activations ({TENSORS_FILE} + {META_FILE}); "
                                    "collect them with `sith-lens lucid collect` or collect_toy_activations")
        try:
            tensors = load_file(str(path / TENSORS_FILE))
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
            raise ValueError(f"the activations in {path} are corrupt ({err}); collect them again") from err
        return cls.from_parts(tensors, meta)
