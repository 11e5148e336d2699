"""``SITHResult``: the explanation of every singular vector of every head in some layers, with
lookups (``head``, ``find``, ``heads_for``) and a checked JSON form.

Example:
    >>> import sith_lens as sl
    >>> model = sl.load_clip("toy")
    >>> result = sl.explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), layers=[-1], progress=False)
    >>> again = SITHResult.from_dict(result.to_dict())
    >>> again.layers, again.n_heads, torch.equal(again.coefs, result.coefs)
    ([5], 8, True)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .atomic import write_text_atomic
from .model import resolve_layers

if TYPE_CHECKING:
    import pandas

RESULT_FORMAT = "sith-lens/sith-result/1"


class VectorExplanation(NamedTuple):
    """One singular vector of one head, explained."""

    index: int
    """Rank of the singular vector (0 = largest singular value)."""
    singular_value: float
    """Its singular value."""
    concepts: list[tuple[str, float]]
    """``(concept, coefficient)`` pairs, largest coefficient first, zeros dropped (the selection
    order is in ``SITHResult.indices``)."""
    fidelity: float
    """The paper's fidelity: cosine in the residual stream after mapping the code back (§4.2)."""
    cosine: float
    """Cosine between the code's reconstruction and the target, in the joint space."""


class HeadExplanation(NamedTuple):
    """All singular vectors of one head, explained."""

    layer: int
    head: int
    singular_values: list[float]
    vectors: list[VectorExplanation]

    def __str__(self) -> str:
        lines = [f"L{self.layer} H{self.head}"]
        for v in self.vectors:
            text = ", ".join(f"{c} {w:.2f}" for c, w in v.concepts) or "(empty)"
            lines.append(f"  sv{v.index:<3d} sigma={v.singular_value:7.3f}  fid={v.fidelity:.2f}  {text}")
        return "\n".join(lines)


class ConceptHit(NamedTuple):
    """A singular vector whose explanation uses a given concept."""

    layer: int
    head: int
    index: int
    singular_value: float
    coef: float


#: The keys of a serialised SITHResult besides "format".
RESULT_FIELDS = ("model_name", "method", "k", "lam", "side", "centering", "vocabulary_size", "n_layers", "layers",
                 "concepts", "singular_values", "indices", "coefs", "fidelity", "cosine")


def _check_result(r: SITHResult) -> None:
    """Raise a ValueError naming the first field of ``r`` that is of the wrong type, shape or range."""
    def bad(what: str) -> ValueError:
        return ValueError(f"invalid SITH result: {what}; write it again with explain_heads / `sith-lens explain`")

    for name in ("model_name", "method", "side", "centering"):
        if not isinstance(getattr(r, name), str):
            raise bad(f"{name} must be a string, got {type(getattr(r, name)).__name__}")
    for name in ("k", "vocabulary_size", "n_layers"):
        value = getattr(r, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(r.lam, (int, float)) or isinstance(r.lam, bool) or not math.isfinite(r.lam):
        raise bad(f"lam must be a finite number, got {r.lam!r}")
    if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < r.n_layers for x in r.layers) or \
            len(set(r.layers)) != len(r.layers) or not r.layers:
        raise bad(f"layers must be distinct layer numbers in 0..{r.n_layers - 1}, got {r.layers!r}")
    if not all(isinstance(c, str) for c in r.concepts):
        raise bad("concepts must be strings")
    tensors = {name: getattr(r, name) for name in ("singular_values", "indices", "coefs", "fidelity", "cosine")}
    if not all(isinstance(t, Tensor) for t in tensors.values()):
        raise bad("singular_values, indices, coefs, fidelity and cosine must be tensors")
    sv = tensors["singular_values"]
    if sv.dim() != 3 or sv.shape[0] != len(r.layers):
        raise bad(f"singular_values must be [{len(r.layers)} layers, heads, vectors], got {list(sv.shape)}")
    want = {"indices": (*sv.shape, r.k), "coefs": (*sv.shape, r.k), "fidelity": tuple(sv.shape),
            "cosine": tuple(sv.shape)}
    for name, shape in want.items():
        if tuple(tensors[name].shape) != shape:
            raise bad(f"{name} must have shape {list(shape)}, got {list(tensors[name].shape)}")
    idx = tensors["indices"]
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(r.concepts)):
        raise bad(f"indices must point into the {len(r.concepts)} concepts, found {int(idx.min())}..{int(idx.max())}")
    for name in ("singular_values", "coefs", "fidelity", "cosine"):
        if not bool(torch.isfinite(tensors[name]).all()):
            raise bad(f"{name} holds NaN or infinite values")


@dataclass
class SITHResult:
    """Explanations of every singular vector of every head in ``layers``.

    Tensors are indexed ``[layer_position, head, vector, ...]`` where ``layer_position`` indexes
    ``layers``. ``concepts`` holds only the concepts some explanation uses; ``indices`` point into it.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> result = sl.explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), layers=[-1], progress=False)
        >>> print(result.head(-1, 0))                       # last layer, head 0
        L5 H0
          sv0   sigma=  1.353  fid=0.21  bottom right 0.46, gray background 0.39, purple cross 0.28, ...
        ...
        >>> result.to_json("sith.json"); SITHResult.from_json("sith.json").layers
        [5]
    """

    model_name: str
    method: str
    k: int
    lam: float
    side: str
    centering: str
    vocabulary_size: int
    n_layers: int
    """Layers in the whole tower (for negative indices)."""
    layers: list[int]
    singular_values: Float[Tensor, "n_sel n_heads rank"]
    concepts: list[str]
    indices: Int[Tensor, "n_sel n_heads rank k"]
    coefs: Float[Tensor, "n_sel n_heads rank k"]
    fidelity: Float[Tensor, "n_sel n_heads rank"]
    cosine: Float[Tensor, "n_sel n_heads rank"]

    def __post_init__(self) -> None:
        _check_result(self)

    @property
    def n_heads(self) -> int:
        return self.singular_values.shape[1]

    def _pos(self, layer: int) -> int:
        absolute = resolve_layers([layer], self.n_layers)[0]
        if absolute not in self.layers:
            raise ValueError(f"layer {layer} was not explained; this result covers layers {self.layers}")
        return self.layers.index(absolute)

    def head(self, layer: int, head: int) -> HeadExplanation:
        """The explanation of one head (negative layer indices count from the end)."""
        p = self._pos(layer)
        if not 0 <= head < self.n_heads:
            raise ValueError(f"head {head} is out of range (0..{self.n_heads - 1})")
        sv = self.singular_values[p, head].tolist()
        vectors = []
        for i, sigma in enumerate(sv):
            pairs = sorted(
                ((self.concepts[j], float(c))
                 for j, c in zip(self.indices[p, head, i].tolist(), self.coefs[p, head, i].tolist()) if c != 0),
                key=lambda pair: -abs(pair[1]),
            )
            vectors.append(VectorExplanation(i, sigma, pairs, float(self.fidelity[p, head, i]),
                                             float(self.cosine[p, head, i])))
        return HeadExplanation(self.layers[p], head, sv, vectors)

    def find(self, concept: str, top_vectors: int | None = None) -> list[ConceptHit]:
        """Singular vectors whose explanation gives ``concept`` a positive weight, largest first.

        ``top_vectors`` limits the search to each head's leading singular vectors.

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("toy")
            >>> result = sl.explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), layers=[-1], progress=False)
            >>> result.find("green star")[0]
            ConceptHit(layer=5, head=..., index=..., singular_value=..., coef=...)
        """
        if concept not in self.concepts:
            return []
        j = self.concepts.index(concept)
        r = self.indices.shape[2] if top_vectors is None else top_vectors
        mask = (self.indices[:, :, :r] == j) & (self.coefs[:, :, :r] > 0)
        hits = []
        for p, h, i, kk in mask.nonzero().tolist():
            hits.append(ConceptHit(self.layers[p], h, i, float(self.singular_values[p, h, i]),
                                   float(self.coefs[p, h, i, kk])))
        return sorted(hits, key=lambda x: (-x.coef, x.layer, x.head, x.index))

    def heads_for(self, concept: str, top: int = 10) -> list[tuple[int, int, float]]:
        """Heads ranked by how much of their spectrum writes ``concept``:
        ``sum_i coef_i * sigma_i / sum_i sigma_i`` over the head's singular vectors.

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("toy")
            >>> result = sl.explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), layers=[-1], progress=False)
            >>> [(layer, head) for layer, head, score in result.heads_for("green star", top=2)]
            [(5, ...), (5, ...)]
        """
        score: dict[tuple[int, int], float] = {}
        totals = self.singular_values.sum(-1)
        for hit in self.find(concept):
            p = self.layers.index(hit.layer)
            score[(hit.layer, hit.head)] = score.get((hit.layer, hit.head), 0.0) + (
                hit.coef * hit.singular_value / float(totals[p, hit.head])
            )
        ranked = sorted(score.items(), key=lambda kv: -kv[1])[:top]
        return [(layer, head, s) for (layer, head), s in ranked]

    # -- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "model_name": self.model_name, "method": self.method, "k": self.k, "lam": self.lam,
            "side": self.side, "centering": self.centering, "vocabulary_size": self.vocabulary_size,
            "n_layers": self.n_layers, "layers": self.layers, "concepts": self.concepts,
            "singular_values": self.singular_values.tolist(), "indices": self.indices.tolist(),
            "coefs": self.coefs.tolist(), "fidelity": self.fidelity.tolist(), "cosine": self.cosine.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SITHResult:
        """The result ``to_dict`` wrote, after checking its schema, shapes and values.

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("toy")
            >>> result = sl.explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), layers=[-1], progress=False)
            >>> SITHResult.from_dict(result.to_dict()).layers == result.layers
            True
        """
        fix = "it is damaged or was edited by hand; write it again with `sith-lens explain`"
        if not isinstance(d, dict) or d.get("format") != RESULT_FORMAT:
            found = d.get("format") if isinstance(d, dict) else f"a JSON {type(d).__name__}"
            raise ValueError(f"not a SITH result (format {found!r}, expected {RESULT_FORMAT!r})")
        missing = [key for key in RESULT_FIELDS if key not in d]
        if missing:
            raise ValueError(f"the SITH result lacks {missing}; {fix}")
        tensors = {}
        for key, dtype in (("singular_values", torch.float32), ("indices", torch.long), ("coefs", torch.float32),
                           ("fidelity", torch.float32), ("cosine", torch.float32)):
            try:
                tensors[key] = torch.tensor(d[key], dtype=dtype)
            except (TypeError, ValueError, RuntimeError, OverflowError):
                raise ValueError(f"the SITH result's {key!r} is not a rectangular array of numbers; {fix}") from None
        for key in ("layers", "concepts"):
            if not isinstance(d[key], list):
                raise ValueError(f"the SITH result's {key!r} must be a list; {fix}")
        return cls(
            model_name=d["model_name"], method=d["method"], k=d["k"], lam=d["lam"], side=d["side"],
            centering=d["centering"], vocabulary_size=d["vocabulary_size"], n_layers=d["n_layers"],
            layers=list(d["layers"]), concepts=list(d["concepts"]), **tensors,
        )

    def to_json(self, path: str | os.PathLike) -> None:
        """Write the result as JSON, atomically (temp file + rename)."""
        write_text_atomic(path, json.dumps(self.to_dict()))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> SITHResult:
        """Read a result written by ``to_json``."""
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read a SITH result from {path}: {err}") from None
        return cls.from_dict(d)

    def to_dataframe(self) -> pandas.DataFrame:
        """A pandas DataFrame with one row per (layer, head, vector, pick).

        Columns: layer, head, vector, singular_value, pick, concept, coef, fidelity, cosine.
        """
        import pandas as pd

        L, H, R, K = self.indices.shape
        grid = torch.stack(torch.meshgrid(*(torch.arange(n) for n in (L, H, R, K)), indexing="ij"), -1).reshape(-1, 4)
        p, h, i, kk = grid.T
        return pd.DataFrame({
            "layer": torch.tensor(self.layers)[p].numpy(), "head": h.numpy(), "vector": i.numpy(),
            "singular_value": self.singular_values[p, h, i].numpy(), "pick": kk.numpy(),
            "concept": [self.concepts[j] for j in self.indices.reshape(-1).tolist()],
            "coef": self.coefs.reshape(-1).numpy(), "fidelity": self.fidelity[p, h, i].numpy(),
            "cosine": self.cosine[p, h, i].numpy(),
        })
