"""``ConceptDictionary``: concept strings, their text embeddings, and the centred atoms COMP uses.

Embeddings come from the model's own text tower, in batches, with a progress bar, and are cached
on disk keyed by a fingerprint of the text tower's weights plus a hash of the vocabulary and the
prompt templates, so a second run with the same model and vocabulary encodes nothing. The cache
lives in ``$SITH_LENS_CACHE`` (default ``~/.cache/sith_lens``); writes are atomic.

Atoms are centred as in the paper (sith_spec §2): L2-normalise each embedding, subtract the
dictionary mean, L2-normalise again. ``embeddings`` keeps the uncentred (L2-normalised) version.

This module duck-types the model (``encode_text``, ``text``, ``cfg``); it imports no host library.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from .atomic import atomic_path
from .checks import check_finite
from .model import CLIPLike
from .vocabularies import clean_concepts, load_vocabulary

logger = logging.getLogger(__name__)

DICTIONARY_FORMAT = "sith-lens/concept-dictionary/1"


def cache_dir() -> Path:
    """Where sith-lens caches concept embeddings: ``$SITH_LENS_CACHE`` or ``~/.cache/sith_lens``."""
    return Path(os.environ.get("SITH_LENS_CACHE", "~/.cache/sith_lens")).expanduser()


def text_fingerprint(model: CLIPLike) -> str:
    """A hash of everything that decides a text embedding: text-tower weights and the tokenizer.

    Example:
        >>> import sith_lens as sl
        >>> len(text_fingerprint(sl.load_clip("toy")))      # the same on every machine
        32
    """
    return model_fingerprint(model, towers=("text",))


def model_fingerprint(model: CLIPLike, towers: Sequence[str] = ("vision", "text")) -> str:
    """A hash of the weights of ``towers`` and of the tokenizer: what decides activations.

    Example:
        >>> import sith_lens as sl
        >>> model_fingerprint(sl.load_clip("toy")) == model_fingerprint(sl.load_clip("toy"))
        True
    """
    h = hashlib.blake2b(digest_size=16)
    for tower in towers:
        for name, t in sorted(getattr(model, tower).state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        h.update(_tokenizer_signature(tok).encode())
    return h.hexdigest()


#: Text whose token ids stand for the tokenizer in a fingerprint (vocabulary, merges, lower-casing).
TOKENIZER_PROBE = "A photo of 2 Striped-RED triangles, Zürich 東京."


def _tokenizer_signature(tok: Any) -> str:
    """The tokenizer's class, its size where it has one, and its ids for ``TOKENIZER_PROBE``.

    Hugging Face tokenizers have ``len``; OpenCLIP's (wrapped in ``OpenCLIPTokenizer``) do not, so
    the ids of a fixed text are what tells two of them apart."""
    size = len(tok) if hasattr(tok, "__len__") else getattr(getattr(tok, "tokenizer", None), "vocab_size", None)
    try:
        ids = tok([TOKENIZER_PROBE], truncation=False)["input_ids"][0]
        ids = [int(i) for i in ids]
    except Exception as err:  # a tokenizer with another calling convention: its size and class only
        ids = f"unavailable ({type(err).__name__})"
    return f"{type(tok).__name__}:{size}:{ids}"


def _vocab_hash(concepts: Sequence[str], templates: Sequence[str] | None) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([list(concepts), list(templates or [])]).encode())
    return h.hexdigest()


def center_atoms(embeddings: Float[Tensor, "M D"]) -> tuple[Tensor, Tensor]:
    """``(atoms, mean)``: L2-normalise, subtract the mean, L2-normalise (sith_spec §2).

    Example:
        >>> atoms, mean = center_atoms(torch.randn(100, 16))
        >>> atoms.norm(dim=-1).allclose(torch.ones(100))
        True
    """
    e = F.normalize(embeddings, dim=-1)
    mean = e.mean(0)
    return F.normalize(e - mean, dim=-1), mean


def encode_concepts(
    model: CLIPLike,
    concepts: Sequence[str],
    templates: Sequence[str] | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> Float[Tensor, "M d_proj"]:
    """L2-normalised text embeddings of ``concepts`` (averaged over ``templates`` when given).

    Example:
        >>> import sith_lens as sl
        >>> encode_concepts(sl.load_clip("toy"), ["red", "a dog"], progress=False).shape      # [2, d_proj]
        torch.Size([2, 128])
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    templates = list(templates) if templates else ["{}"]
    for t in templates:
        if "{}" not in t:
            raise ValueError(f"template {t!r} has no '{{}}' for the concept; e.g. 'a photo of {{}}.'")
    out = []
    bar = tqdm(total=len(concepts) * len(templates), desc="encoding concepts", unit="text", disable=not progress)
    with torch.no_grad():
        for i in range(0, len(concepts), batch_size):
            chunk = concepts[i : i + batch_size]
            acc = None
            for t in templates:
                e = model.encode_text([t.format(c) for c in chunk], normalize=True).float().cpu()
                acc = e if acc is None else acc + e
                bar.update(len(chunk))
            out.append(F.normalize(acc, dim=-1))
    bar.close()
    return torch.cat(out)


def _warn_on_collisions(concepts: Sequence[str], embeddings: Tensor) -> None:
    """Warn when concepts share one embedding: the tokenizer does not know their words (they all
    became the unknown token) or truncated them, so explanations cannot tell them apart."""
    _, inverse, counts = torch.unique(embeddings.round(decimals=5), dim=0, return_inverse=True, return_counts=True)
    shared = counts[inverse] > 1
    n = int(shared.sum())
    if n:
        examples = [concepts[i] for i in shared.nonzero()[:5, 0].tolist()]
        logger.warning(
            "%d of %d concepts share their embedding with another (e.g. %s): the model's tokenizer probably "
            "does not know their words; use a vocabulary in the model's language (the toy CLIP knows only "
            "the 'toy' vocabulary's words)", n, len(concepts), examples,
        )


def _save_atomic(tensors: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))


@dataclass
class ConceptDictionary:
    """Concept strings with their text embeddings and centred atoms.

    Example:
        >>> import sith_lens as sl
        >>> concepts = ConceptDictionary.from_vocab(sl.load_clip("toy"), "toy")
        >>> len(concepts), concepts.atoms.shape          # M, [M, d_proj]
        (137, torch.Size([137, 128]))
        >>> concepts.concepts[concepts.index("red")]
        'red'
    """

    concepts: list[str]
    """The concept strings, in order."""
    embeddings: Float[Tensor, "M d_proj"]
    """L2-normalised text embeddings (uncentred)."""
    fingerprint: str = ""
    """``text_fingerprint`` of the model that encoded them ("" if unknown)."""
    centered: bool = True
    """Whether ``atoms`` are centred (the paper's setting) or only normalised."""
    atoms: Float[Tensor, "M d_proj"] = field(init=False)
    """What pursuits explain with: centred and normalised (or only normalised)."""
    mean: Float[Tensor, " d_proj"] = field(init=False)
    """Mean of the normalised embeddings (zero when not centred)."""

    def __post_init__(self) -> None:
        if self.embeddings.dim() != 2 or self.embeddings.shape[0] != len(self.concepts):
            raise ValueError(
                f"embeddings must be [n_concepts={len(self.concepts)}, d], got {tuple(self.embeddings.shape)}"
            )
        if not self.concepts:
            raise ValueError("the vocabulary is empty; give at least one concept string")
        check_finite("concept embeddings", self.embeddings,
                     fix="the text tower produced them from broken weights (load_clip refuses those; check a model "
                     "passed as an object), or a saved dictionary file is damaged (encode it again)")
        self.embeddings = F.normalize(self.embeddings.float(), dim=-1)
        if self.centered:
            self.atoms, self.mean = center_atoms(self.embeddings)
        else:
            self.atoms, self.mean = self.embeddings, torch.zeros(self.embeddings.shape[1])
        self._positions = {c: i for i, c in enumerate(self.concepts)}

    def __len__(self) -> int:
        return len(self.concepts)

    def index(self, concept: str) -> int:
        """Position of ``concept``; a ``KeyError`` naming close matches if it is absent."""
        try:
            return self._positions[concept]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(concept, self.concepts, n=3)
            raise KeyError(f"{concept!r} is not in this dictionary; close: {close}") from None

    @property
    def dim(self) -> int:
        """Width of the joint space the atoms live in."""
        return self.embeddings.shape[1]

    @classmethod
    def from_vocab(
        cls,
        model: CLIPLike,
        source: str | os.PathLike | Iterable[str],
        *,
        templates: Sequence[str] | None = None,
        centered: bool = True,
        batch_size: int = 256,
        use_cache: bool = True,
        progress: bool = True,
    ) -> ConceptDictionary:
        """Encode a vocabulary with ``model``'s text tower, using the disk cache when possible.

        Args:
            model: a ``HookedCLIP`` (anything with ``encode_text`` and a ``text`` tower).
            source: ``"toy"``, ``"english"``, a text file (one concept per line) or a list of strings.
            templates: optional prompt templates such as ``["a photo of {}."]``; embeddings are
                averaged over them. The paper uses none.
            centered: centre the atoms (the paper's setting for explanations).

        Example:
            >>> import sith_lens as sl
            >>> concepts = ConceptDictionary.from_vocab(sl.load_clip("toy"), ["red", "blue", "dog"])
            >>> concepts.concepts
            ['red', 'blue', 'dog']
        """
        strings = load_vocabulary(source)
        fingerprint = text_fingerprint(model)
        path = cache_dir() / "concepts" / f"{fingerprint}-{_vocab_hash(strings, templates)}.safetensors"
        embeddings = None
        if use_cache and path.is_file():
            from safetensors.torch import load_file

            try:
                embeddings = load_file(str(path))["embeddings"]
                if embeddings.shape[0] != len(strings):
                    raise ValueError("row count does not match the vocabulary")
                logger.info("concept embeddings from cache %s", path)
            except Exception as err:  # corrupt or foreign file: re-encode and overwrite
                logger.warning("ignoring unreadable concept cache %s (%s); re-encoding", path, err)
                embeddings = None
        if embeddings is None:
            embeddings = encode_concepts(model, strings, templates, batch_size, progress)
            if use_cache:
                _save_atomic({"embeddings": embeddings}, path)
        _warn_on_collisions(strings, embeddings)
        return cls(strings, embeddings, fingerprint=fingerprint, centered=centered)

    def save(self, path: str | os.PathLike) -> None:
        """Save concepts and embeddings to one safetensors file (atomically).

        Example:
            >>> concepts = ConceptDictionary.from_embeddings(["a", "b", "c"], torch.randn(3, 16))
            >>> concepts.save("abc.safetensors")
            >>> ConceptDictionary.load("abc.safetensors").concepts
            ['a', 'b', 'c']
        """
        from safetensors.torch import save_file

        meta = {"format": DICTIONARY_FORMAT, "concepts": json.dumps(self.concepts),
                "fingerprint": self.fingerprint, "centered": json.dumps(self.centered)}
        with atomic_path(path) as tmp:
            save_file({"embeddings": self.embeddings.contiguous()}, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ConceptDictionary:
        """Load a dictionary written by ``save``."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != DICTIONARY_FORMAT:
                    raise ValueError(f"format {meta.get('format')!r}, expected {DICTIONARY_FORMAT!r}")
                embeddings = f.get_tensor("embeddings")
            concepts = json.loads(meta["concepts"])
            centered = json.loads(meta["centered"])
        except Exception as err:
            raise ValueError(f"cannot read a concept dictionary from {path} ({err}); write one with "
                             "ConceptDictionary.save") from None
        return cls(concepts, embeddings, fingerprint=meta.get("fingerprint", ""), centered=centered)

    @classmethod
    def from_embeddings(
        cls, concepts: Iterable[str], embeddings: Float[Tensor, "M d_proj"], *, centered: bool = True
    ) -> ConceptDictionary:
        """A dictionary from precomputed embeddings (row ``i`` embeds ``concepts[i]``).

        Example:
            >>> d = ConceptDictionary.from_embeddings(["a", "b"], torch.randn(2, 512))
            >>> len(d), d.dim
            (2, 512)
        """
        concepts = list(concepts)
        if len(clean_concepts(concepts, "concepts")) != len(concepts):
            raise ValueError("concepts must be unique, non-blank strings to match embedding rows one to one")
        return cls([c.strip() for c in concepts], embeddings, centered=centered)
