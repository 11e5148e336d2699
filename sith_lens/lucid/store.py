"""A sharded on-disk store of LUCID's paired activations, for data sets larger than memory.

A store is a folder::

    store.json                 the index: format, what was collected (model fingerprint, hooks,
                               data, dtype, shard size) and every finished shard with its size and hash
    shard-00000.safetensors    images [0, n) of the data with every caption of them: the tensors of
                               ``PairedActivations`` (patches and tokens in the store's dtype, token
                               masks, weights, ids, positions, each pair's image, ``pair.index``:
                               the pair's position in the source) and, in the header, the captions
    shard-00001.safetensors    images [n, 2n) ...

Collection writes one shard at a time (memory stays that of one shard, whatever the data's
size): each to a temporary file renamed when whole, then the index, the same way. A kill at any
moment loses at most the shard being written, and running the same collection again continues
after the last finished shard. Reading maps shards into memory (``mmap``), so a batch reads only
its own rows from disk; a shard whose size is not the index's (truncated, or half-copied) is
refused when the store is opened, and collected again when the collection is run again.

Example:
    >>> import sith_lens as sl
    >>> store = collect_store(sl.load_clip("toy"), ToySource(n_pairs=128, seed=21), "toy-store", shard_images=64,
    ...                       dtype="float16", progress=False)
    >>> store = ActivationStore.open("toy-store")
    >>> batch = store.batch_at(0, batch_size=32, seed=0)      # a PairedBatch, as PairedActivations gives
    >>> len(store), len(store.shards), batch.patches.shape        # batches come as float32
    (128, 2, torch.Size([32, 64, 128]))
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..atomic import atomic_path, file_digest, write_text_atomic
from ..checks import describe_differences
from .collect import JOINT, collect_images, collect_toy_activations, read_captions_jsonl
from .data import PairedActivations, PairedBatch, SeededBatches, epoch_permutation, evenly_spaced

INDEX_FILE = "store.json"
STORE_FORMAT = "sith-lens/lucid-store/1"
#: Activation dtypes a store can hold.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: safetensors' dtype names.
_SAFETENSORS_DTYPES = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_META_KEY = "sith_lens"


# -- sources: what to collect, a shard at a time ---------------------------------------------------
@dataclass(frozen=True)
class ToySource:
    """``n_pairs`` seeded toy-world scenes with their captions and ground truth (as
    ``collect_toy_activations``; a store of it holds the same pairs in the same order)."""

    n_pairs: int
    seed: int = 0

    @property
    def n_images(self) -> int:
        return self.n_pairs

    def spec(self) -> dict[str, Any]:
        return {"toy_pairs": self.n_pairs, "seed": self.seed}

    def collect(self, model: Any, first: int, count: int, batch_size: int, hooks: dict[str, str]) -> PairedActivations:
        acts = collect_toy_activations(model, count, self.seed, batch_size, progress=False,
                                       first_batch=first // batch_size, **hooks)
        acts.extras["pair.index"] = torch.arange(first, first + count)
        return acts


@dataclass(frozen=True)
class FolderSource:
    """Your own images: a captions JSONL (``read_captions_jsonl``). The store holds the pairs
    grouped by image (images in order of first mention); ``pair.index`` gives each pair's line."""

    captions_file: str
    image_root: str | None = None

    @cached_property
    def _lists(self) -> tuple[list[Path], list[str], list[int]]:
        return read_captions_jsonl(self.captions_file, self.image_root)

    @property
    def n_images(self) -> int:
        return len(self._lists[0])

    def spec(self) -> dict[str, Any]:
        return {"captions": str(Path(self.captions_file).resolve()), "images": self.image_root}

    def collect(self, model: Any, first: int, count: int, batch_size: int, hooks: dict[str, str]) -> PairedActivations:
        images, captions, index = self._lists
        pairs = sorted((i for i, image in enumerate(index) if first <= image < first + count), key=index.__getitem__)
        acts = collect_images(model, images[first:first + count], [captions[i] for i in pairs],
                              [index[i] - first for i in pairs], batch_size, progress=False,
                              source=f"folder:{Path(self.captions_file).resolve()}", **hooks)
        acts.extras["pair.index"] = torch.tensor(pairs, dtype=torch.long)
        return acts


# -- writing ---------------------------------------------------------------------------------------
def _shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def _write_shard(folder: Path, number: int, acts: PairedActivations, dtype: str, first_image: int) -> dict[str, Any]:
    from safetensors.torch import save_file

    from ..checks import check_finite

    tensors = acts.tensors()
    for name in ("patches", "tokens"):
        tensors[name] = tensors[name].to(DTYPES[dtype])
        check_finite(f"LUCID activations ({name}) in {dtype}", tensors[name],
                     fix="they overflow that dtype; collect with --dtype bfloat16 or float32")
    name = _shard_name(number)
    with atomic_path(folder / name) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps({**acts.meta(), "first_image": first_image})})
    return {"number": number, "file": name, "first_image": first_image, "n_images": acts.patches.shape[0],
            "n_pairs": len(acts), "width": acts.tokens.shape[1], "bytes": (folder / name).stat().st_size,
            "blake2b": file_digest(folder / name)}


def _read_index(folder: Path) -> dict[str, Any] | None:
    file = folder / INDEX_FILE
    if not file.is_file():
        return None
    try:
        index = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{file} is not readable JSON ({err}); delete the folder and collect again") from None
    if not isinstance(index, dict) or index.get("format") != STORE_FORMAT:
        raise ValueError(f"{file} is not a LUCID activation store index (format {STORE_FORMAT}); "
                         "collect into another folder")
    return index


def check_store_settings(shard_images: int, batch_size: int, dtype: str) -> None:
    """Refuse a dtype a store cannot hold, or shards that are not whole batches of the seeded stream.

    Example:
        >>> check_store_settings(4096, 64, "float16")
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if batch_size < 1 or shard_images < 1 or shard_images % batch_size:
        raise ValueError(f"shard_images ({shard_images}) must be a positive multiple of batch_size ({batch_size}) "
                         "(--shard-images of --collect-batch-size), so that every shard holds whole batches")


def collect_store(
    model: Any,
    source: ToySource | FolderSource,
    out: str | os.PathLike,
    shard_images: int = 4096,
    dtype: str = "float32",
    batch_size: int = 64,
    vision_hook: str = JOINT,
    text_hook: str = JOINT,
    progress: bool = True,
) -> ActivationStore:
    """Collect ``source``'s pairs into a sharded store at ``out``, ``shard_images`` images a shard,
    activations in ``dtype``; resumable: run it again after a kill and it continues.

    A folder holding a store of another model (by weight fingerprint), hooks, data, dtype or shard
    size is refused. Shards the index lists but whose file is missing or truncated are collected again.

    Example:
        >>> import sith_lens as sl
        >>> store = collect_store(sl.load_clip("toy"), ToySource(128, seed=21), "store", shard_images=64, progress=False)
        >>> len(store)
        128
    """
    from tqdm.auto import tqdm

    from ..concepts import model_fingerprint

    check_store_settings(shard_images, batch_size, dtype)
    if source.n_images < 1:
        raise ValueError("the source holds no images")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; pass a folder for the store")
    out.mkdir(parents=True, exist_ok=True)
    spec = {"source": source.spec(), "vision_hook": vision_hook, "text_hook": text_hook, "dtype": dtype,
            "shard_images": shard_images, "batch_size": batch_size}
    fingerprint = model_fingerprint(model)
    index = _read_index(out)
    if index is None:
        if any(out.glob("shard-*.safetensors")):
            raise ValueError(f"{out} holds shards but no {INDEX_FILE}; collect into an empty folder")
        index = {"format": STORE_FORMAT, "fingerprint": fingerprint, "model_name": model.cfg.model_name,
                 "spec": spec, "n_images": source.n_images, "shards": [], "complete": False}
    else:
        _check_same(index, out, fingerprint, spec)
    kept = []
    for entry in index["shards"]:
        try:
            _Shard(out / entry["file"], entry)
            kept.append(entry)
        except ValueError as err:
            import logging

            logging.getLogger(__name__).warning("collecting %s again: %s", entry["file"], err)
    done = {entry["number"] for entry in kept}
    n_shards = math.ceil(source.n_images / shard_images)
    hooks = {"vision_hook": vision_hook, "text_hook": text_hook}
    bar = tqdm(total=source.n_images, desc="LUCID store", unit="image", disable=not progress,
               initial=sum(e["n_images"] for e in kept))
    for number in range(n_shards):
        if number in done:
            continue
        first = number * shard_images
        acts = source.collect(model, first, min(shard_images, source.n_images - first), batch_size, hooks)
        kept = sorted([*kept, _write_shard(out, number, acts, dtype, first)], key=lambda e: e["number"])
        index.update(shards=kept, d_in=acts.d_in, grid=acts.grid, metadata=acts.metadata)
        write_text_atomic(out / INDEX_FILE, json.dumps(index, indent=1))
        bar.update(acts.patches.shape[0])
        del acts
    bar.close()
    index["complete"] = True
    write_text_atomic(out / INDEX_FILE, json.dumps(index, indent=1))
    return ActivationStore.open(out)


def _check_same(index: dict[str, Any], out: Path, fingerprint: str, spec: dict[str, Any]) -> None:
    if index.get("fingerprint") != fingerprint:
        raise ValueError(f"{out} holds activations of another model ({index.get('model_name')!r}, weight "
                         f"fingerprint {str(index.get('fingerprint'))[:12]}..., this model's is {fingerprint[:12]}...); "
                         "collect into another folder, or delete it")
    detail = describe_differences(index.get("spec", {}), spec, "there")
    if detail:
        raise ValueError(f"{out} holds a store collected with other settings ({detail}); run the same "
                         "collection to resume it, or collect into another folder")


# -- reading ---------------------------------------------------------------------------------------
class _Shard:
    """One shard file, memory-mapped: its tensors are views of the file, read on access."""

    def __init__(self, path: Path, entry: dict[str, Any]):
        if not path.is_file():
            raise ValueError(f"shard {path.name} is missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise ValueError(f"shard {path.name} has {size} bytes, the index says {entry['bytes']} (truncated "
                             "or damaged)")
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # copy-on-write: writable views
        try:
            (n,) = struct.unpack("<Q", self._map[:8])
            header = json.loads(self._map[8:8 + n])
        except (struct.error, ValueError) as err:
            raise ValueError(f"shard {path.name} has no readable safetensors header ({err})") from None
        base = 8 + n
        self.meta_json: str = header.pop("__metadata__", {}).get(_META_KEY, "{}")
        self.tensors: dict[str, Tensor] = {}
        for name, info in header.items():
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            begin, end = info["data_offsets"]
            if base + end > size:
                raise ValueError(f"shard {path.name} ends before its tensor {name} (truncated)")
            count = math.prod(info["shape"])
            self.tensors[name] = (torch.frombuffer(self._map, dtype=dtype, count=count, offset=base + begin)
                                  .view(info["shape"]) if count else torch.empty(info["shape"], dtype=dtype))
        self.entry = entry

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors[name]

    def to_memory(self) -> PairedActivations:
        return PairedActivations.from_parts({k: v.clone() for k, v in self.tensors.items()}, json.loads(self.meta_json))


class ActivationStore(SeededBatches):
    """A sharded store, read through memory maps; serves batches as ``PairedActivations`` does.

    ``shuffle_shards`` sets the data order: 0 (default) draws each epoch's order over all pairs,
    exactly as ``PairedActivations`` does (a store and the same pairs in memory train identically);
    k > 0 shuffles the shards, then the pairs within each run of k shards, so that a window of
    k shards is all a stretch of training reads (a shuffle buffer for slow disks).

    Example:
        >>> import sith_lens as sl
        >>> _ = collect_store(sl.load_clip("toy"), ToySource(64, seed=21), "toy-store", shard_images=64, progress=False)
        >>> store = ActivationStore.open("toy-store")
        >>> len(store), store.d_in, store.grid
        (64, 128, 8)
    """

    def __init__(self, folder: Path, index: dict[str, Any], shards: list[_Shard], limit: int | None = None,
                 shuffle_shards: int = 0):
        self.folder, self.index, self.shards = folder, index, shards
        self.shuffle_shards = shuffle_shards
        counts = torch.tensor([s.entry["n_pairs"] for s in shards])
        self._pair_starts = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        self._n_pairs = int(self._pair_starts[-1]) if limit is None else limit
        self._order: tuple[int, int, Tensor] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike, shuffle_shards: int = 0) -> ActivationStore:
        """Open the store at ``path``; refuses an unfinished store and any truncated or missing shard.

        Example:
            >>> import sith_lens as sl
            >>> _ = collect_store(sl.load_clip("toy"), ToySource(128, seed=21), "toy-store", shard_images=64, progress=False)
            >>> len(ActivationStore.open("toy-store", shuffle_shards=2))
            128
        """
        folder = Path(path)
        if shuffle_shards < 0:
            raise ValueError(f"shuffle_shards must be >= 0 (0: all pairs), got {shuffle_shards}")
        index = _read_index(folder)
        if index is None:
            raise FileNotFoundError(f"{folder} holds no LUCID activation store ({INDEX_FILE}); collect one with "
                                    "`sith-lens lucid collect --out FOLDER` or collect_store")
        if not index.get("complete"):
            n_shards = math.ceil(index["n_images"] / index["spec"]["shard_images"])
            raise ValueError(f"the collection of {folder} stopped after {len(index['shards'])} of {n_shards} shards; "
                             "run the same collection again to finish it")
        shards = []
        for entry in index["shards"]:
            try:
                shards.append(_Shard(folder / entry["file"], entry))
            except ValueError as err:
                raise ValueError(f"{folder}: {err}; run the same collection again: it collects that shard "
                                 "again and keeps the others") from None
        return cls(folder, index, shards, shuffle_shards=shuffle_shards)

    # -- what PairedActivations offers
    def __len__(self) -> int:
        return self._n_pairs

    @property
    def d_in(self) -> int:
        return int(self.index["d_in"])

    @property
    def grid(self) -> int:
        return int(self.index["grid"])

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.index.get("metadata", {}))

    @property
    def fingerprint(self) -> str:
        """The weight fingerprint of the model the activations come from (``model_fingerprint``)."""
        return str(self.index["fingerprint"])

    def check_source(self, model: Any, vision_hook: str = JOINT, text_hook: str = JOINT) -> None:
        """Refuse, with a clear message, unless the store holds ``model``'s activations at these hooks.

        Example:
            >>> import sith_lens as sl
            >>> store = collect_store(sl.load_clip("toy"), ToySource(64), "toy-store", shard_images=64, progress=False)
            >>> store.check_source(sl.load_clip("toy"))
            >>> store.check_source(sl.load_clip("toy"), vision_hook="blocks.0.hook_resid_post")
            Traceback (most recent call last):
            ValueError: ...
        """
        from ..concepts import model_fingerprint

        spec = {**self.index["spec"], "vision_hook": vision_hook, "text_hook": text_hook}
        _check_same(self.index, self.folder, model_fingerprint(model), spec)

    def _shard_of(self, pairs: Tensor) -> tuple[Tensor, Tensor]:
        """The shard of each pair of the whole store, and the pair's row in it."""
        shard = torch.searchsorted(self._pair_starts, pairs, right=True) - 1
        return shard, pairs - self._pair_starts[shard]

    def _locate(self, pairs: Tensor) -> tuple[Tensor, Tensor]:
        """``_shard_of``, for pairs of this store (or of its prefix) only."""
        if len(pairs) and (int(pairs.min()) < 0 or int(pairs.max()) >= len(self)):
            raise IndexError(f"pairs must lie in [0, {len(self)}), got {int(pairs.min())}..{int(pairs.max())}")
        return self._shard_of(pairs)

    def caption_lengths(self, pairs: Int[Tensor, "B"]) -> Int[Tensor, "B"]:
        """Real tokens of each caption of ``pairs``."""
        shard, local = self._locate(pairs)
        out = torch.zeros(len(pairs), dtype=torch.long)
        for s in shard.unique().tolist():
            sel = shard == s
            out[sel] = self.shards[s]["token_mask"][local[sel]].sum(1)
        return out

    def pair_batch(self, pairs: Int[Tensor, "B"], width: int | None = None) -> PairedBatch:
        """The pairs ``pairs`` as a PairedBatch (float32), token slots cut or padded to ``width``
        (default: the longest caption among them); reads only those rows."""
        pairs = torch.as_tensor(pairs, dtype=torch.long)
        if width is None:
            width = max(int(self.caption_lengths(pairs).max()), 1)
        shard, local = self._locate(pairs)
        n_patches = self.grid * self.grid
        b = len(pairs)
        patches = torch.empty(b, n_patches, self.d_in)
        tokens = torch.zeros(b, width, self.d_in)
        mask = torch.zeros(b, width, dtype=torch.bool)
        weights = torch.zeros(b, width)
        for s in shard.unique().tolist():
            sel, rows, data = shard == s, local[shard == s], self.shards[s]
            w = min(width, data["tokens"].shape[1])
            patches[sel] = data["patches"][data["image_index"][rows]].float()
            tokens[sel, :w] = data["tokens"][rows, :w].float()
            mask[sel, :w] = data["token_mask"][rows, :w]
            weights[sel, :w] = data["token_weights"][rows, :w].float()
        return PairedBatch(patches, tokens, mask, weights, self.grid)

    def epoch_order(self, epoch: int, seed: int) -> Int[Tensor, "P"]:
        """The pairs of epoch ``epoch`` in training order (see the class docstring)."""
        if self._order is not None and self._order[:2] == (epoch, seed):
            return self._order[2]
        n_shards = len(self.shards)
        if self.shuffle_shards == 0 or self.shuffle_shards >= n_shards:
            order = epoch_permutation(len(self), epoch, seed)
        else:
            base = seed * 100_003 + epoch
            shards = torch.randperm(n_shards, generator=torch.Generator().manual_seed(base))
            parts = []
            for w, start in enumerate(range(0, n_shards, self.shuffle_shards)):
                window = torch.cat([torch.arange(int(self._pair_starts[s]), int(self._pair_starts[s + 1]))
                                    for s in shards[start:start + self.shuffle_shards].tolist()])
                window = window[window < len(self)]
                generator = torch.Generator().manual_seed(base * 1_000_003 + w + 1)
                parts.append(window[torch.randperm(len(window), generator=generator)])
            order = torch.cat(parts)
        self._order = (epoch, seed, order)
        return order

    @cached_property
    def _image_starts(self) -> Tensor:
        counts = torch.tensor([s.entry["n_images"] for s in self.shards])
        return torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])

    @cached_property
    def _token_starts(self) -> Tensor:
        counts = torch.tensor([int(s["token_mask"].sum()) for s in self.shards])
        return torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])

    def _n_images(self) -> int:
        """Images that the first ``len(self)`` pairs use (a prefix: pairs are stored by image)."""
        if len(self) == int(self._pair_starts[-1]):
            return int(self._image_starts[-1])
        shard, local = self._locate(torch.tensor([len(self) - 1]))
        s = int(shard)
        return int(self._image_starts[s]) + int(self.shards[s]["image_index"][int(local)]) + 1

    def sample_rows(self, modality: str, max_rows: int) -> Float[Tensor, "rows d"]:
        """At most ``max_rows`` rows of one modality, evenly spaced in storage order, as float32:
        the rows ``PairedActivations.sample_rows`` gives on the same pairs."""
        if modality == "vision":
            n_patches = self.grid * self.grid
            starts, total = self._image_starts * n_patches, self._n_images() * n_patches
        else:
            starts = self._token_starts
            total = int(starts[-1])
            if len(self) < int(self._pair_starts[-1]):
                shard, local = (int(x) for x in self._shard_of(torch.tensor(len(self))))  # the first pair left out
                total = int(starts[shard]) + int(self.shards[shard]["token_mask"][:local].sum())
        rows = evenly_spaced(total, max_rows)
        which = torch.searchsorted(starts, rows, right=True) - 1
        out = torch.empty(len(rows), self.d_in)
        for s in which.unique().tolist():
            sel = which == s
            data = self.shards[s]
            x = data["patches"].reshape(-1, self.d_in) if modality == "vision" else data["tokens"][data["token_mask"]]
            out[sel] = x[rows[sel] - starts[s]].float()
        return out

    def split(self, n_holdout: int) -> tuple[ActivationStore, PairedActivations]:
        """The first ``len - n_holdout`` pairs (a store) and the last ``n_holdout`` (in memory)."""
        if not 0 < n_holdout < len(self):
            raise ValueError(f"n_holdout must be between 1 and {len(self) - 1}, got {n_holdout}")
        cut = len(self) - n_holdout
        first = int(self._locate(torch.tensor([cut]))[0])  # only the shards the holdout lies in are read
        tail = PairedActivations.concat([s.to_memory() for s in self.shards[first:]])
        offset = int(self._pair_starts[first])
        holdout = tail.subset(torch.arange(cut - offset, len(self) - offset))
        return ActivationStore(self.folder, self.index, self.shards, cut, self.shuffle_shards), holdout

    def to_memory(self) -> PairedActivations:
        """Every pair of the store in memory (activations keep the store's dtype).

        Example:
            >>> import sith_lens as sl
            >>> _ = collect_store(sl.load_clip("toy"), ToySource(64), "toy-store", shard_images=64, progress=False)
            >>> acts = ActivationStore.open("toy-store").to_memory()
            >>> type(acts).__name__, len(acts)
            ('PairedActivations', 64)
        """
        acts = PairedActivations.concat([s.to_memory() for s in self.shards])
        return acts if len(self) == len(acts) else acts.subset(torch.arange(len(self)))


def open_activations(path: str | os.PathLike, shuffle_shards: int = 0) -> ActivationStore | PairedActivations:
    """A store (``store.json``) or an in-memory dataset (``PairedActivations.save``) at ``path``.

    Example:
        >>> import sith_lens as sl
        >>> _ = collect_store(sl.load_clip("toy"), ToySource(64), "toy-store", shard_images=64, progress=False)
        >>> type(open_activations("toy-store")).__name__
        'ActivationStore'
    """
    if (Path(path) / INDEX_FILE).is_file():
        return ActivationStore.open(path, shuffle_shards)
    return PairedActivations.load(path)
