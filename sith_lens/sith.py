"""SITH: explain every attention head of a CLIP vision tower from its weights alone.

Pipeline (sith_spec §1-4): fold ``ln_1`` into the value weights and centre (``weights``), take the
sign-fixed SVD of each head's ``W_VO`` from its factors (``svd``), read each singular vector into
the joint space (``readout``), and explain it with a sparse non-negative code over a concept
dictionary (``pursuit``). ``explain_heads`` runs it and returns a ``SITHResult``.

The model is duck-typed (a ``HookedCLIP``: ``.vision`` with stacked ``W_V``/``W_O``, ``blocks[l].ln1``,
``ln_final`` and ``W_proj``); this module imports no host library.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Literal, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from .atomic import write_text_atomic
from .checks import check_finite
from .concepts import ConceptDictionary
from .pursuit import METHODS, pursue
from .readout import JointReadout
from .svd import factored_svd
from .weights import VOFactors, vo_factors

logger = logging.getLogger(__name__)

Centering = Literal["auto", "image", "none"]
Side = Literal["right", "left"]
RESULT_FORMAT = "sith-lens/sith-result/1"


# --------------------------------------------------------------------------------------------------
# model access
# --------------------------------------------------------------------------------------------------
def _vision(model: Any) -> Any:
    vision = getattr(model, "vision", None)
    if vision is None or not hasattr(vision, "W_V") or not hasattr(vision, "blocks"):
        if type(model).__name__ == "TransformerBridge":
            raise TypeError(
                "SITH needs both towers and a TransformerBridge wraps one; convert a vision-tower bridge with "
                "model = sl.load_clip(bridge) (its weights, the text tower of the checkpoint it was booted from)"
            )
        raise TypeError(
            f"expected a HookedCLIP (from sith_lens.load_clip), got {type(model).__name__}; "
            "load the model with sl.load_clip(...) first"
        )
    return vision


def resolve_layers(layers: int | Iterable[int] | None, n_layers: int) -> list[int]:
    """Absolute, sorted, unique layer indices; negatives count from the end (``-1`` is the last).

    Example:
        >>> resolve_layers([-2, -1], 12)
        [10, 11]
    """
    if layers is None:
        return list(range(n_layers))
    if isinstance(layers, int):
        layers = [layers]
    out = []
    for layer in layers:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise TypeError(f"layers must be integers, got {layer!r}")
        if not -n_layers <= layer < n_layers:
            raise ValueError(f"layer {layer} is out of range for a tower with {n_layers} layers "
                             f"(use 0..{n_layers - 1} or -{n_layers}..-1)")
        out.append(layer % n_layers)
    if not out:
        raise ValueError("layers is empty; pass None for every layer")
    return sorted(set(out))


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """Layers from a command-line string: ``"all"``, ``"-4:"``, ``"0,3,-1"``, ``"2:5"``.

    Example:
        >>> parse_layers("-4:", 12)
        [8, 9, 10, 11]
    """
    spec = spec.strip()
    if spec in ("", "all", ":"):
        return list(range(n_layers))
    try:
        if ":" in spec:
            start, stop = (int(p) if p.strip() else None for p in spec.split(":", 1))
            layers = list(range(n_layers))[slice(start, stop)]
        else:
            layers = [int(p) for p in spec.split(",")]
    except ValueError:
        raise ValueError(f"bad layers {spec!r}; use 'all', a slice like '-4:' or a list like '0,3,-1'") from None
    if not layers:
        raise ValueError(f"layers {spec!r} select no layer of a tower with {n_layers} layers")
    return resolve_layers(layers, n_layers)


def joint_readout(model: Any, centering: Centering = "auto", image_mean: Tensor | None = None) -> JointReadout:
    """The vision tower's read-out into the joint space, with the requested image-side centring.

    ``centering``: ``"auto"`` uses ``image_mean`` if given, else the mean shipped with the model
    (the toy CLIP has one), else none; ``"image"`` requires a mean; ``"none"`` is strictly
    data-free.

    For a tower without a CLS token (SigLIP), ``vision.W_proj`` is the attention-pooling head's
    summed value-output map, the linear part of how a patch direction reaches the pooled
    embedding (biases and the head's MLP left out); ``vision.joint_readout_is_exact`` is False
    there. See "Supported models" in the README.

    Example:
        >>> ro = joint_readout(model, centering="none")
    """
    vision = _vision(model)
    if centering not in ("auto", "image", "none"):
        raise ValueError(f"centering must be 'auto', 'image' or 'none', got {centering!r}")
    mean = None
    if centering != "none":
        mean = image_mean if image_mean is not None else getattr(model, "image_mean", None)
        if mean is None and centering == "image":
            raise ValueError(
                "centering='image' needs an image-embedding mean: pass image_mean=sl.image_mean(model, images) "
                "with a few thousand of your images, or use centering='none'"
            )
    if mean is not None:
        mean = mean.detach().float().cpu()
        check_finite("image_mean", mean, fix="recompute it with sl.image_mean(model, images) on finite pixels")
    if not getattr(vision, "joint_readout_is_exact", True):
        warnings.warn(
            "this vision tower pools with an attention head (SigLIP): SITH reads directions into the joint "
            "space through that head's value-output map, which leaves out its MLP and where it attends; "
            "see 'Supported models' in the README",
            UserWarning,
            stacklevel=2,
        )
    ln = vision.ln_final
    return JointReadout(
        ln.w.detach().float().cpu(), ln.b.detach().float().cpu(), float(ln.eps),
        vision.W_proj.detach().float().cpu(), mean,
    )


def image_mean(model: Any, images: Any, batch_size: int = 64, progress: bool = True) -> Float[Tensor, " d_proj"]:
    """Mean of the L2-normalised image embeddings of ``images`` (not renormalised), as the paper
    computes it for the image-side centring.

    ``images``: a pixel tensor ``[N, C, H, W]`` already preprocessed, or a list of PIL images or
    file paths (preprocessed with ``model.preprocess``).

    Example:
        >>> mu = image_mean(model, [Image.open(p) for p in paths])       # [d_proj]
        >>> result = explain_heads(model, concepts, image_mean=mu)
    """
    from tqdm.auto import tqdm

    n = len(images)
    if n == 0:
        raise ValueError("image_mean needs at least one image")
    total, count = None, 0
    with torch.no_grad():
        for i in tqdm(range(0, n, batch_size), desc="image mean", disable=not progress):
            chunk = images[i : i + batch_size]
            pixels = chunk if isinstance(chunk, Tensor) else model.preprocess(list(chunk))
            e = model.encode_image(pixels, normalize=True).float().sum(0)
            total = e if total is None else total + e
            count += pixels.shape[0]
    return (total / count).cpu()


# --------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------
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
        >>> print(result.head(-1, 0))                       # last layer, head 0
        >>> result.find("red")[:3]                          # singular vectors that write "red"
        >>> result.to_json("sith.json"); SITHResult.from_json("sith.json")
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
            >>> result.find("red")[0]      # ConceptHit(layer=5, head=3, index=0, singular_value=.., coef=..)
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
            >>> result.heads_for("red", top=3)     # [(layer, head, score), ...]
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

    def to_dataframe(self) -> Any:
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


# --------------------------------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------------------------------
def head_vo_factors(model: Any, layers: Sequence[int], dtype: torch.dtype = torch.float64) -> VOFactors:
    """The folded and centred ``W_V [n, H, d, e]`` and ``W_O [n, H, e, d]`` of every head in ``layers``
    (absolute indices), on CPU in ``dtype``.

    Example:
        >>> vo = head_vo_factors(model, [11]); W_VO = vo.W_V[0, 3] @ vo.W_O[0, 3]
    """
    vision = _vision(model)
    with torch.no_grad():
        W_V = vision.W_V[layers].detach().to("cpu", dtype)
        W_O = vision.W_O[layers].detach().to("cpu", dtype)
        ln_w = torch.stack([vision.blocks[l].ln1.w for l in layers]).detach().to("cpu", dtype)
        return vo_factors(W_V, W_O, ln_w)


def head_svd(model: Any, layers: Sequence[int], dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """``(U [n, H, d, r], S [n, H, r], Vh [n, H, r, d])``: the sign-fixed SVD of every head's folded
    and centred ``W_VO`` in ``layers`` (absolute indices), computed in float64, returned in ``dtype``.

    Example:
        >>> U, S, Vh = head_svd(model, [11])
    """
    return tuple(t.to(dtype) for t in factored_svd(*head_vo_factors(model, layers)))


class VectorCodes(NamedTuple):
    """Explanations of a stack of residual-stream vectors ``[n, H, r, d]`` (see ``explain_vectors``)."""

    indices: Int[Tensor, "n H r k"]
    """Concept indices into the dictionary."""
    coefs: Float[Tensor, "n H r k"]
    """Their coefficients."""
    fidelity: Float[Tensor, "n H r"]
    """The paper's fidelity (residual-stream cosine after mapping the code back)."""
    cosine: Float[Tensor, "n H r"]
    """Joint-space cosine of the code's reconstruction."""


def explain_vectors(
    vectors: Float[Tensor, "n H r d_model"],
    readout: JointReadout,
    concepts: ConceptDictionary,
    *,
    k: int = 5,
    lam: float = 0.3,
    method: str = "comp",
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "explaining heads",
) -> VectorCodes:
    """Read residual-stream directions into the joint space and explain each with ``k`` concepts;
    one pursuit per leading index (a layer), with a progress bar.

    Example:
        >>> U, S, Vh = head_svd(model, [5])
        >>> codes = explain_vectors(Vh, joint_readout(model), concepts)
    """
    from tqdm.auto import tqdm

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    if concepts.dim != readout.W_proj.shape[1]:
        raise ValueError(
            f"the concept dictionary has width {concepts.dim} but the model's joint space has "
            f"{readout.W_proj.shape[1]}; encode the concepts with this model's text tower"
        )
    n, H, r, d = vectors.shape
    atoms = concepts.atoms.to(device)
    all_idx, all_coef, all_fid, all_cos = [], [], [], []
    for p in tqdm(range(n), desc=f"{desc} ({method}, k={k})", unit="layer", disable=not progress):
        v = vectors[p].reshape(H * r, d)
        z = readout(v)
        codes = pursue(z.to(device), atoms, method, k, lam)
        codes = type(codes)(codes.indices.cpu(), codes.coefs.cpu())
        recon = F.normalize(codes.reconstruct(concepts.atoms), dim=-1)
        all_cos.append((recon * z).sum(-1).reshape(H, r))
        all_fid.append((readout.to_residual(recon) * F.normalize(v, dim=-1)).sum(-1).reshape(H, r))
        all_idx.append(codes.indices.reshape(H, r, k))
        all_coef.append(codes.coefs.reshape(H, r, k))
    return VectorCodes(torch.stack(all_idx), torch.stack(all_coef), torch.stack(all_fid), torch.stack(all_cos))


def result_from_codes(
    model: Any, concepts: ConceptDictionary, codes: VectorCodes, singular_values: Tensor, layers: list[int],
    *, method: str, k: int, lam: float, side: str, readout: JointReadout,
) -> SITHResult:
    """Package ``explain_vectors``' codes as a ``SITHResult`` (only the used concepts are kept)."""
    used, compact = torch.unique(codes.indices, return_inverse=True)
    return SITHResult(
        model_name=str(getattr(getattr(model, "cfg", None), "model_name", "custom")),
        method=method, k=k, lam=float(lam) if method == "comp" else 0.0, side=side,
        centering="image" if readout.image_mean is not None else "none",
        vocabulary_size=len(concepts), n_layers=_vision(model).cfg.n_layers, layers=list(layers),
        singular_values=singular_values, concepts=[concepts.concepts[j] for j in used.tolist()],
        indices=compact, coefs=codes.coefs, fidelity=codes.fidelity, cosine=codes.cosine,
    )


def explain_heads(
    model: Any,
    concepts: ConceptDictionary,
    layers: int | Iterable[int] | None = None,
    *,
    k: int = 5,
    lam: float = 0.3,
    method: str = "comp",
    side: Side = "right",
    centering: Centering = "auto",
    image_mean: Tensor | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> SITHResult:
    """Explain every singular vector of every head in ``layers`` with ``k`` concepts.

    Args:
        model: a ``HookedCLIP``.
        concepts: a ``ConceptDictionary`` encoded with this model's text tower.
        layers: layer indices (negative from the end); None for all.
        k, lam, method: the pursuit (``"comp"`` with ``lam=0.3`` is the paper's setting; also
            ``"nnomp"``, ``"omp"``, ``"mp"``, ``"topk"``).
        side: ``"right"`` explains what each head writes (the default, the paper's setting);
            ``"left"`` what it reads, through the same read-out (a heuristic).
        centering, image_mean: image-side centring of the read-out, see ``joint_readout``.
        device: where the pursuit runs (default: the model's device; a GPU scores in bfloat16
            with the same exact re-check as on CPU). The SVDs run on CPU in float64.

    Example:
        >>> concepts = sl.ConceptDictionary.from_vocab(model, "toy")
        >>> result = sl.explain_heads(model, concepts, layers=[-2, -1])
        >>> print(result.head(-1, 0))
    """
    vision = _vision(model)
    if not isinstance(concepts, ConceptDictionary):
        raise TypeError(
            f"concepts must be a ConceptDictionary, got {type(concepts).__name__}; "
            "build one with sl.ConceptDictionary.from_vocab(model, 'toy' | 'english' | path | list)"
        )
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' (what heads write) or 'left' (what they read), got {side!r}")
    readout = joint_readout(model, centering, image_mean)
    chosen = resolve_layers(layers, vision.cfg.n_layers)
    U, S, Vh = head_svd(model, chosen)
    vectors = Vh if side == "right" else U.transpose(-2, -1)  # [n, H, r, d]
    codes = explain_vectors(vectors, readout, concepts, k=k, lam=lam, method=method,
                            device=vision.W_proj.device if device is None else device, progress=progress)
    return result_from_codes(model, concepts, codes, S, chosen, method=method, k=k, lam=lam, side=side,
                             readout=readout)
