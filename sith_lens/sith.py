"""SITH: explain every attention head of a CLIP vision tower from its weights alone.

Pipeline (sith_spec §1-4): fold ``ln_1`` into the value weights and centre (``weights``), take the
sign-fixed SVD of each head's ``W_VO`` from its factors (``svd``), read each singular vector into
the joint space (``readout``), and explain it with a sparse non-negative code over a concept
dictionary (``pursuit``). ``explain_heads`` runs it and returns a ``SITHResult`` (``result``).

The model is anything ``CLIPLike`` (``sith_lens.model``; a ``HookedCLIP`` is one); this module
imports no host library. The defaults (``k``, ``lam``, ``method``...) are ``defaults.EXPLAIN``.

Example:
    >>> import sith_lens as sl
    >>> model = sl.load_clip("toy")
    >>> concepts = sl.ConceptDictionary.from_vocab(model, "toy")
    >>> result = sl.explain_heads(model, concepts, layers=[-1], progress=False)
    >>> result.layers, result.n_heads, result.k
    ([5], 8, 5)
"""

from __future__ import annotations

import logging
import warnings
from typing import Iterable, Literal, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from .checks import check_finite
from .concepts import ConceptDictionary
from .defaults import EXPLAIN
from .model import CLIPLike, parse_layers, resolve_layers, vision_tower
from .pursuit import METHODS, pursue
from .readout import JointReadout
from .result import RESULT_FORMAT, ConceptHit, HeadExplanation, SITHResult, VectorExplanation
from .svd import factored_svd
from .weights import VOFactors, vo_factors

__all__ = [
    "explain_heads", "explain_vectors", "head_svd", "head_vo_factors", "image_mean", "joint_readout",
    "result_from_codes", "VectorCodes", "Centering", "Side",
    # defined in sith_lens.model and sith_lens.result, importable from here as before
    "parse_layers", "resolve_layers", "vision_tower", "SITHResult", "HeadExplanation", "VectorExplanation",
    "ConceptHit", "RESULT_FORMAT",
]

logger = logging.getLogger(__name__)

Centering = Literal["auto", "image", "none"]
Side = Literal["right", "left"]


# --------------------------------------------------------------------------------------------------
# the read-out
# --------------------------------------------------------------------------------------------------
def joint_readout(model: CLIPLike, centering: Centering = "auto", image_mean: Tensor | None = None) -> JointReadout:
    """The vision tower's read-out into the joint space, with the requested image-side centring.

    ``centering``: ``"auto"`` uses ``image_mean`` if given, else the mean shipped with the model
    (the toy CLIP has one), else none; ``"image"`` requires a mean; ``"none"`` is strictly
    data-free.

    For a tower without a CLS token (SigLIP), ``vision.W_proj`` is the attention-pooling head's
    summed value-output map, the linear part of how a patch direction reaches the pooled
    embedding (biases and the head's MLP left out); ``vision.joint_readout_is_exact`` is False
    there. See docs/models.md.

    Example:
        >>> import sith_lens as sl
        >>> ro = joint_readout(sl.load_clip("toy"), centering="none")
        >>> ro.W_proj.shape, ro.image_mean is None
        (torch.Size([128, 128]), True)
    """
    vision = vision_tower(model)
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
            "see docs/models.md",
            UserWarning,
            stacklevel=2,
        )
    ln = vision.ln_final
    return JointReadout(
        ln.w.detach().float().cpu(), ln.b.detach().float().cpu(), float(ln.eps),
        vision.W_proj.detach().float().cpu(), mean,
    )


def image_mean(model: CLIPLike, images: Tensor | Sequence[object], batch_size: int = 64, progress: bool = True) -> Float[Tensor, " d_proj"]:
    """Mean of the L2-normalised image embeddings of ``images`` (not renormalised), as the paper
    computes it for the image-side centring.

    ``images``: a pixel tensor ``[N, C, H, W]`` already preprocessed, or a list of PIL images or
    file paths (preprocessed with ``model.preprocess``).

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> images = sl.ToyWorld(seed=0).batch(0, 32).images                # or PIL images, or file paths
        >>> mu = image_mean(model, model.preprocess(list(images)), progress=False)
        >>> mu.shape
        torch.Size([128])
        >>> result = explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), [-1], image_mean=mu, progress=False)
        >>> result.centering
        'image'
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
# the pipeline
# --------------------------------------------------------------------------------------------------
def head_vo_factors(model: CLIPLike, layers: Sequence[int], dtype: torch.dtype = torch.float64) -> VOFactors:
    """The folded and centred ``W_V [n, H, d, e]`` and ``W_O [n, H, e, d]`` of every head in ``layers``
    (absolute indices), on CPU in ``dtype``.

    Example:
        >>> import sith_lens as sl
        >>> vo = head_vo_factors(sl.load_clip("random:tiny"), [1])
        >>> (vo.W_V[0, 3] @ vo.W_O[0, 3]).shape                # layer 1, head 3: W_VO [d_model, d_model]
        torch.Size([64, 64])
    """
    vision = vision_tower(model)
    with torch.no_grad():
        W_V = vision.W_V[layers].detach().to("cpu", dtype)
        W_O = vision.W_O[layers].detach().to("cpu", dtype)
        ln_w = torch.stack([vision.blocks[l].ln1.w for l in layers]).detach().to("cpu", dtype)
        return vo_factors(W_V, W_O, ln_w)


def head_svd(model: CLIPLike, layers: Sequence[int], dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """``(U [n, H, d, r], S [n, H, r], Vh [n, H, r, d])``: the sign-fixed SVD of every head's folded
    and centred ``W_VO`` in ``layers`` (absolute indices), computed in float64, returned in ``dtype``.

    Example:
        >>> import sith_lens as sl
        >>> U, S, Vh = head_svd(sl.load_clip("random:tiny"), [1])
        >>> U.shape, S.shape, Vh.shape
        (torch.Size([1, 4, 64, 16]), torch.Size([1, 4, 16]), torch.Size([1, 4, 16, 64]))
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
    k: int = EXPLAIN.k,
    lam: float = EXPLAIN.lam,
    method: str = EXPLAIN.method,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "explaining heads",
) -> VectorCodes:
    """Read residual-stream directions into the joint space and explain each with ``k`` concepts;
    one pursuit per leading index (a layer), with a progress bar.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> U, S, Vh = head_svd(model, [5])
        >>> codes = explain_vectors(Vh, joint_readout(model), sl.ConceptDictionary.from_vocab(model, "toy"), progress=False)
        >>> codes.indices.shape                                # [layers, heads, vectors, k]
        torch.Size([1, 8, 16, 5])
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
    model: CLIPLike, concepts: ConceptDictionary, codes: VectorCodes, singular_values: Tensor, layers: list[int],
    *, method: str, k: int, lam: float, side: str, readout: JointReadout,
) -> SITHResult:
    """Package ``explain_vectors``' codes as a ``SITHResult`` (only the used concepts are kept)."""
    used, compact = torch.unique(codes.indices, return_inverse=True)
    return SITHResult(
        model_name=str(getattr(getattr(model, "cfg", None), "model_name", "custom")),
        method=method, k=k, lam=float(lam) if method == "comp" else 0.0, side=side,
        centering="image" if readout.image_mean is not None else "none",
        vocabulary_size=len(concepts), n_layers=vision_tower(model).cfg.n_layers, layers=list(layers),
        singular_values=singular_values, concepts=[concepts.concepts[j] for j in used.tolist()],
        indices=compact, coefs=codes.coefs, fidelity=codes.fidelity, cosine=codes.cosine,
    )


def explain_heads(
    model: CLIPLike,
    concepts: ConceptDictionary,
    layers: int | Iterable[int] | None = None,
    *,
    k: int = EXPLAIN.k,
    lam: float = EXPLAIN.lam,
    method: str = EXPLAIN.method,
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
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> concepts = sl.ConceptDictionary.from_vocab(model, "toy")
        >>> result = sl.explain_heads(model, concepts, layers=[-2, -1], progress=False)
        >>> print(result.head(-1, 0))
        L5 H0
          sv0   sigma=  1.353  fid=0.21  bottom right 0.46, gray background 0.39, purple cross 0.28, ...
        ...
    """
    vision = vision_tower(model)
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
