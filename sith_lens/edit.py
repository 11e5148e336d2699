"""Weight-space edits of attention heads from their SITH explanations (sith_spec §5).

Every edited head is rebuilt from *all* of its singular triplets with a multiplier per singular
vector: ``W_VO' = U diag(sigma * m) V^T``. ``m = 0`` suppresses what the vector writes, ``m > 1``
amplifies it, ``m = -1`` flips it. Nothing is trained.

How the weights are handled:

* The edited model is a copy with ``ln_1`` folded into Q/K/V, the read and write weights centred
  (the setting in which SITH took its SVD) and each head's value bias moved into the output bias,
  so a head's output is exactly ``pattern @ x @ W_VO``. The copy computes the same function as the
  original (``weights.fold_and_center``), with ``ln_1`` reduced to a plain (non-affine) LayerNorm.
* An edited ``W_VO'`` is factored back into the head's own ``W_V [d_model, d_head]`` and
  ``W_O [d_head, d_model]`` with the singular values split evenly: ``W_V' = U sqrt|s|``,
  ``W_O' = sign(s) sqrt|s| V^T``. Heads whose multipliers are all 1 keep their weights untouched.
  The result is therefore an ordinary CLIP with the same shapes, exportable as a standard
  checkpoint (``HookedCLIP.save_pretrained``).

Concept queries (``suppress``, ``amplify``) pick singular vectors by the share of their explanation's
coefficient mass that falls on the query concepts; ``task_multipliers`` implements the
classification edit of sith_spec §5.4; ``ablate_heads`` is whole-head ablation (TextSpan-style) for
comparison. The model is anything ``CLIPLike`` (a ``HookedCLIP``); this module imports no host library.
The defaults (``threshold``, ``factor``, the edited layers) are ``defaults.EDIT``.
"""

from __future__ import annotations

import copy
import difflib
import logging
import re
from typing import Any, Iterable, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from .concepts import ConceptDictionary
from .pursuit import comp
from .defaults import EDIT
from .model import CLIPLike, ModelT, resolve_layers, vision_tower
from .result import SITHResult
from .sith import head_svd
from .checks import check_finite
from .limits import MAX_MULTIPLIER
from .weights import fold_and_center_

logger = logging.getLogger(__name__)

Multipliers = Tensor | Mapping[tuple[int, ...], float]


# --------------------------------------------------------------------------------------------------
# multipliers
# --------------------------------------------------------------------------------------------------
def identity_multipliers(result: SITHResult) -> Float[Tensor, "n_sel n_heads rank"]:
    """All-ones multipliers shaped like ``result.singular_values`` (an edit that changes nothing).

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> result = sl.explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), layers=[-1], progress=False)
        >>> m = identity_multipliers(result); m[0, 3, :2] = 0      # suppress 2 vectors of head 3
        >>> int((m == 0).sum()), tuple(m.shape)
        (2, (1, 8, 16))
    """
    return torch.ones_like(result.singular_values, dtype=torch.float32)


def as_multipliers(result: SITHResult, multipliers: Multipliers) -> Float[Tensor, "n_sel n_heads rank"]:
    """Multipliers as a tensor aligned with ``result.singular_values`` ``[n_sel, n_heads, rank]``.

    Accepts that tensor itself, or a dict keyed by ``(layer, head)`` (a scalar or ``rank`` values
    for that head) or by ``(layer, head, index)`` (one singular vector); layers may be negative.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> result = sl.explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), layers=[-1], progress=False)
        >>> m = as_multipliers(result, {(-1, 3): 0.0, (-1, 5, 0): 2.0})   # all of head 3, head 5's top vector
        >>> int((m == 0).sum()), int((m == 2).sum())
        (16, 1)
    """
    shape = tuple(result.singular_values.shape)
    if isinstance(multipliers, Tensor):
        if tuple(multipliers.shape) != shape:
            raise ValueError(
                f"multipliers must have shape {shape} like result.singular_values "
                f"[layers explained, heads, singular vectors], got {tuple(multipliers.shape)}; "
                "or pass a dict {(layer, head): value or [rank] values, (layer, head, index): value}"
            )
        m = multipliers.detach().float().cpu().clone()
    elif isinstance(multipliers, Mapping):
        m = identity_multipliers(result)
        _, H, r = shape
        for key, value in multipliers.items():
            if not isinstance(key, tuple) or len(key) not in (2, 3) or not all(isinstance(i, int) for i in key):
                raise ValueError(f"multiplier keys must be (layer, head) or (layer, head, index) integers, got {key!r}")
            p = result._pos(key[0])
            if not 0 <= key[1] < H:
                raise ValueError(f"head {key[1]} is out of range (0..{H - 1}) in multiplier key {key!r}")
            if len(key) == 3:
                if not 0 <= key[2] < r:
                    raise ValueError(f"singular vector {key[2]} is out of range (0..{r - 1}) in key {key!r}")
                m[p, key[1], key[2]] = float(value)
            else:
                v = torch.as_tensor(value, dtype=torch.float32)
                if v.dim() > 1 or (v.dim() == 1 and v.numel() != r):
                    raise ValueError(f"multipliers for head {key} must be a scalar or {r} values, got shape {tuple(v.shape)}")
                m[p, key[1]] = v
    else:
        raise TypeError(f"multipliers must be a tensor shaped like result.singular_values or a dict, got {type(multipliers).__name__}")
    check_finite("multipliers", m, fix="pass finite multipliers (0 suppresses, 2 doubles, -1 flips)")
    big = float(m.abs().max()) if m.numel() else 0.0
    if big > MAX_MULTIPLIER:
        raise ValueError(f"a multiplier of {big:g} is outside [-{MAX_MULTIPLIER:g}, {MAX_MULTIPLIER:g}]: it would scale a "
                         "head's output past what float32 activations hold; use a factor within that range")
    return m


# --------------------------------------------------------------------------------------------------
# the edit
# --------------------------------------------------------------------------------------------------
def _result_svd(model: CLIPLike, result: SITHResult) -> tuple[Tensor, Tensor, Tensor]:
    """The float64 SVD of the result's heads in ``model``, after checking the result describes it."""
    vision = vision_tower(model)
    if not isinstance(result, SITHResult):
        raise TypeError(f"result must be a SITHResult from explain_heads, got {type(result).__name__}")
    if result.n_layers != vision.cfg.n_layers or result.n_heads != vision.cfg.n_heads:
        raise ValueError(
            f"the SITH result describes {result.n_layers} layers x {result.n_heads} heads but the model has "
            f"{vision.cfg.n_layers} x {vision.cfg.n_heads}; explain this model with explain_heads first"
        )
    U, S, Vh = head_svd(model, result.layers, dtype=torch.float64)
    if not torch.allclose(S.float(), result.singular_values.float(), rtol=1e-3, atol=1e-5):
        raise ValueError(
            f"the SITH result ({result.model_name!r}) was not computed on this model: its singular values "
            "differ from the model's; run explain_heads on this model (an already edited model needs a new "
            "explanation before it is edited again)"
        )
    return U, S, Vh


def rebuild_head(
    U: Float[Tensor, "d_model rank"], S: Float[Tensor, " rank"], Vh: Float[Tensor, "rank d_model"],
    m: Float[Tensor, " rank"],
) -> tuple[Float[Tensor, "d_model rank"], Float[Tensor, "rank d_model"]]:
    """``(W_V', W_O')`` with ``W_V' @ W_O' = U diag(S * m) Vh``, singular values split evenly.

    Example:
        >>> U, S, Vh = torch.linalg.svd(torch.randn(8, 3) @ torch.randn(3, 8))
        >>> U, S, Vh = U[:, :3], S[:3], Vh[:3]
        >>> W_V, W_O = rebuild_head(U, S, Vh, torch.ones_like(S))     # reproduces W_VO
        >>> torch.allclose(W_V @ W_O, U @ torch.diag(S) @ Vh, atol=1e-5)
        True
    """
    s = S * m.to(S)
    root = s.abs().sqrt()
    return U * root, (torch.sign(s) * root)[:, None] * Vh


def prepare_for_edit(model: ModelT, label: str = "edited") -> ModelT:
    """A copy of ``model`` whose vision tower is folded and centred, with value biases folded into
    the output bias: the same function, in the form that ``edit_heads`` edits. ``label`` is
    appended to the copy's model name.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("random:tiny")
        >>> base = prepare_for_edit(model)     # what edit_heads returns for an all-ones edit
        >>> pixels = torch.randn(2, 3, 32, 32)
        >>> torch.allclose(base.encode_image(pixels), model.encode_image(pixels), atol=1e-5), base.cfg.model_name
        (True, 'random:tiny (edited)')
    """
    vision_tower(model)
    edited = copy.deepcopy(model)
    fold_and_center_(edited.vision, fold_value_bias=True)
    edited.cfg = copy.copy(model.cfg)
    edited.cfg.model_name = f"{model.cfg.model_name} ({label})"
    return edited


def edit_heads(model: ModelT, result: SITHResult, multipliers: Multipliers) -> ModelT:
    """A new model whose heads' ``W_VO`` are rebuilt from all their singular vectors times
    ``multipliers`` (0 suppresses, >1 amplifies, -1 flips); ``model`` is left untouched.

    Args:
        model: the ``HookedCLIP`` that ``result`` explains.
        result: ``explain_heads(model, ...)``; its layers are the ones that can be edited.
        multipliers: ``[n_sel, n_heads, rank]`` like ``result.singular_values``, or a dict (see
            ``as_multipliers``).

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> result = sl.explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), layers=[-1], progress=False)
        >>> edited = sl.edit_heads(model, result, {(-1, 3, 0): 0.0})   # suppress L-1 H3's top vector
        >>> pixels = model.preprocess(list(sl.ToyWorld(seed=0).batch(0, 4).images))
        >>> edited.encode_image(pixels).shape, torch.equal(edited.encode_image(pixels), model.encode_image(pixels))
        (torch.Size([4, 128]), False)
    """
    U, S, Vh = _result_svd(model, result)
    m = as_multipliers(result, multipliers).double()
    edited = prepare_for_edit(model)
    tower = edited.vision
    changed = (m != 1).any(-1)
    with torch.no_grad():
        for p, layer in enumerate(result.layers):
            attn = tower.blocks[layer].attn
            for h in changed[p].nonzero().flatten().tolist():
                W_V, W_O = rebuild_head(U[p, h], S[p, h], Vh[p, h], m[p, h])
                attn.W_V[h] = W_V.to(attn.W_V)
                attn.W_O[h] = W_O.to(attn.W_O)
    logger.info("edit_heads: %d heads rebuilt, %d singular vectors changed", int(changed.sum()), int((m != 1).sum()))
    return edited


# --------------------------------------------------------------------------------------------------
# concept queries
# --------------------------------------------------------------------------------------------------
def _matching_concepts(result: SITHResult, query: Sequence[str], match: str) -> list[int]:
    if isinstance(query, str):
        query = [q for q in query.split(",")]
    query = [q.strip() for q in query if q.strip()]
    if not query:
        raise ValueError("no query concept given; pass e.g. ['red', 'blue']")
    if match not in ("exact", "word"):
        raise ValueError(f"match must be 'exact' or 'word', got {match!r}")
    hits = set()
    for q in query:
        if match == "exact":
            found = [j for j, c in enumerate(result.concepts) if c == q]
        else:
            pattern = re.compile(rf"(^|\s){re.escape(q)}($|\s)")
            found = [j for j, c in enumerate(result.concepts) if pattern.search(c)]
        if not found:
            close = difflib.get_close_matches(q, result.concepts, n=3)
            raise ValueError(
                f"concept {q!r} appears in no explanation of this result ({len(result.concepts)} concepts are used"
                + (f"; did you mean {', '.join(map(repr, close))}?" if close else "")
                + "); check the spelling, or explain with a vocabulary that holds it"
            )
        hits.update(found)
    return sorted(hits)


def concept_mass(
    result: SITHResult, concepts: Sequence[str] | str, match: str = "word"
) -> Float[Tensor, "n_sel n_heads rank"]:
    """The share of each singular vector's explanation (its |coefficient| mass) on ``concepts``.

    ``match="word"`` also counts phrases that contain a query as a whole word ("red" matches "red
    circle"); ``"exact"`` counts the concepts themselves only. Vectors with an empty code get 0.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> result = sl.explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), layers=[-1], progress=False)
        >>> mass = concept_mass(result, ["red", "blue"])      # [n_sel, n_heads, rank] in [0, 1]
        >>> tuple(mass.shape), bool(((mass >= 0) & (mass <= 1)).all()), bool((mass > 0).any())
        ((1, 8, 16), True, True)
    """
    wanted = torch.zeros(len(result.concepts), dtype=torch.bool)
    wanted[_matching_concepts(result, concepts, match)] = True
    weight = result.coefs.abs()
    on = (weight * wanted[result.indices]).sum(-1)
    total = weight.sum(-1)
    return torch.where(total > 0, on / total.clamp_min(1e-12), torch.zeros_like(total))


def _layer_mask(result: SITHResult, layers: int | Iterable[int] | None) -> Tensor:
    mask = torch.zeros(len(result.layers), dtype=torch.bool)
    for layer in resolve_layers(layers, result.n_layers) if layers is not None else result.layers:
        mask[result._pos(layer)] = True
    return mask


def concept_multipliers(
    result: SITHResult,
    concepts: Sequence[str] | str,
    value: float,
    *,
    threshold: float = EDIT.threshold,
    layers: int | Iterable[int] | None = None,
    match: str = "word",
) -> Float[Tensor, "n_sel n_heads rank"]:
    """Multipliers that set ``value`` on every singular vector whose ``concept_mass`` is at least
    ``threshold`` (in ``layers``, default all explained layers), 1 elsewhere.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> result = sl.explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), layers=[-1], progress=False)
        >>> m = concept_multipliers(result, ["red"], 0.0, threshold=0.5)
        >>> int((m == 0).sum()) > 0        # singular vectors that will be suppressed
        True
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold is a share of the coefficient mass in (0, 1], got {threshold}")
    selected = (concept_mass(result, concepts, match) >= threshold) & _layer_mask(result, layers)[:, None, None]
    m = identity_multipliers(result)
    m[selected] = float(value)
    return m


def suppress(
    model: ModelT, result: SITHResult, concepts: Sequence[str] | str, threshold: float = EDIT.threshold,
    layers: int | Iterable[int] | None = None, match: str = "word",
) -> ModelT:
    """Zero the singular vectors that write ``concepts`` (``concept_mass >= threshold``).

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> result = sl.explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), layers=[-2, -1], progress=False)
        >>> edited = sl.suppress(model, result, ["red", "blue"], threshold=0.5, layers=[-2, -1])
        >>> edited.cfg.model_name
        'toy (edited)'
    """
    return edit_heads(model, result, concept_multipliers(result, concepts, 0.0, threshold=threshold,
                                                         layers=layers, match=match))


def amplify(
    model: ModelT, result: SITHResult, concepts: Sequence[str] | str, factor: float = EDIT.factor,
    threshold: float = EDIT.threshold, layers: int | Iterable[int] | None = None, match: str = "word",
) -> ModelT:
    """Multiply the singular vectors that write ``concepts`` by ``factor`` (``-1`` flips them).

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> result = sl.explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), layers=[-1], progress=False)
        >>> edited = sl.amplify(model, result, "striped", factor=3.0)
        >>> type(edited).__name__
        'HookedCLIP'
    """
    return edit_heads(model, result, concept_multipliers(result, concepts, factor, threshold=threshold,
                                                         layers=layers, match=match))


def query_multipliers(
    result: SITHResult,
    suppress: Sequence[str] = (),
    amplify: Sequence[str] = (),
    *,
    factor: float = EDIT.factor,
    threshold: float = EDIT.threshold,
    layers: int | Iterable[int] | None = None,
    base: Tensor | None = None,
) -> Float[Tensor, "n_sel n_heads rank"]:
    """One edit from a suppress list and an amplify list: ``concept_multipliers`` of each, merged
    over ``base`` (default all ones); where a vector matches both lists, amplify wins. The command
    line and the explorer build their edits with it.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> result = sl.explain_heads(model, sl.ConceptDictionary.from_vocab(model, "toy"), layers=[-1], progress=False)
        >>> m = query_multipliers(result, suppress=["red"], amplify=["striped"], factor=2.0)
        >>> m.shape == result.singular_values.shape, sorted(set(m.unique().tolist()) - {1.0})
        (True, [0.0, 2.0])
    """
    m = identity_multipliers(result) if base is None else base.clone()
    for query, value in ((list(suppress), 0.0), (list(amplify), factor)):
        if query:
            q = concept_multipliers(result, query, value, threshold=threshold, layers=layers)
            m = torch.where(q != 1, q, m)
    return m


# --------------------------------------------------------------------------------------------------
# the classification edit (sith_spec §5.4)
# --------------------------------------------------------------------------------------------------
def task_relevance(
    result: SITHResult,
    dictionary: ConceptDictionary,
    class_embeddings: Float[Tensor, "n_classes d_proj"],
    class_names: Sequence[str] = (),
    k: int = 10,
    lam: float = 0.3,
) -> Float[Tensor, "n_sel n_heads rank"]:
    """R(v) = sum_k c_k max_{t in task pool} cos(gamma_k, t) per singular vector (sith_spec §5.4).

    The task pool is every concept COMP (``k``, ``lam``) uses to explain the class embeddings over
    the *uncentred* dictionary, after removing concepts spelled exactly like a class name. Cosines use
    uncentred embeddings; ``dictionary`` must be the one ``result`` was explained with.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> concepts = sl.ConceptDictionary.from_vocab(model, "toy")
        >>> result = sl.explain_heads(model, concepts, layers=[-1], progress=False)
        >>> classes = sl.ConceptDictionary.from_vocab(model, ["circle", "square"])
        >>> R = task_relevance(result, concepts, classes.embeddings, classes.concepts)
        >>> R.shape == result.singular_values.shape
        True
    """
    missing = [c for c in result.concepts if c not in set(dictionary.concepts)]
    if missing:
        raise ValueError(f"the dictionary lacks {len(missing)} concepts of the result (e.g. {missing[:3]}); "
                         "pass the ConceptDictionary the result was explained with")
    if class_embeddings.dim() != 2 or class_embeddings.shape[1] != dictionary.dim:
        raise ValueError(f"class_embeddings must be [n_classes, {dictionary.dim}], got {tuple(class_embeddings.shape)}")
    keep = [i for i, c in enumerate(dictionary.concepts) if c not in set(class_names)]
    pool_atoms = dictionary.embeddings[keep]
    codes = comp(torch.nn.functional.normalize(class_embeddings.float(), dim=-1), pool_atoms, k=min(k, len(keep)), lam=lam)
    used = torch.unique(codes.indices[codes.coefs > 0])
    pool = pool_atoms[used]  # [P, D]
    emb = dictionary.embeddings[[dictionary.index(c) for c in result.concepts]]  # [n_used, D]
    best = (emb @ pool.T).max(-1).values if len(pool) else torch.zeros(len(emb))
    return (result.coefs * best[result.indices]).sum(-1)


def task_multipliers(
    result: SITHResult,
    dictionary: ConceptDictionary,
    class_embeddings: Float[Tensor, "n_classes d_proj"],
    class_names: Sequence[str] = (),
    *,
    floor: float = 0.8,
    offset: float = 0.3,
    cap: float | None = None,
    layers: int | Iterable[int] | None = None,
) -> Float[Tensor, "n_sel n_heads rank"]:
    """``m = max(floor, R(v) + offset)`` (optionally ``<= cap``): boost task-relevant singular vectors,
    damp the others, remove none (sith_spec §5.4). Layers outside ``layers`` keep ``m = 1``.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> concepts = sl.ConceptDictionary.from_vocab(model, "toy")
        >>> result = sl.explain_heads(model, concepts, layers=[-1], progress=False)
        >>> classes = sl.ConceptDictionary.from_vocab(model, ["circle", "square"])
        >>> m = task_multipliers(result, concepts, classes.embeddings, classes.concepts)
        >>> float(m.min()) >= 0.8                                  # damps, never removes
        True
    """
    m = (task_relevance(result, dictionary, class_embeddings, class_names) + offset).clamp_min(floor)
    if cap is not None:
        m = m.clamp_max(cap)
    return torch.where(_layer_mask(result, layers)[:, None, None], m, identity_multipliers(result))


def class_multipliers(
    model: CLIPLike,
    result: SITHResult,
    dictionary: ConceptDictionary,
    class_names: Sequence[str],
    *,
    template: str = "{}",
    floor: float = 0.8,
    offset: float = 0.3,
    cap: float | None = None,
    layers: int | Iterable[int] | None = None,
) -> Float[Tensor, "n_sel n_heads rank"]:
    """``task_multipliers`` from class names: they are encoded through ``template`` (the spec's
    default is the bare name) with the model's text tower.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> concepts = sl.ConceptDictionary.from_vocab(model, "toy")
        >>> result = sl.explain_heads(model, concepts, layers=[-1], progress=False)
        >>> m = class_multipliers(model, result, concepts, ["solid", "striped", "dotted"])
        >>> bool((m > 1).any()), float(m.min()) >= 0.8
        (True, True)
    """
    names = [c.strip() for c in class_names if isinstance(c, str) and c.strip()]
    if len(names) < 2:
        raise ValueError(f"the classification edit needs at least two class names, got {list(class_names)!r}")
    if "{}" not in template:
        raise ValueError(f"template must contain '{{}}' for the class name, got {template!r}")
    with torch.no_grad():
        emb = model.encode_text([template.format(c) for c in names], normalize=True).float().cpu()
    return task_multipliers(result, dictionary, emb, names, floor=floor, offset=offset, cap=cap, layers=layers)


def boost_classes(
    model: ModelT, result: SITHResult, dictionary: ConceptDictionary, class_names: Sequence[str], **kwargs: Any
) -> ModelT:
    """The classification edit in one call: ``edit_heads`` with ``class_multipliers`` (same keywords).

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> concepts = sl.ConceptDictionary.from_vocab(model, "toy")
        >>> result = sl.explain_heads(model, concepts, layers=[-1], progress=False)
        >>> edited = sl.boost_classes(model, result, concepts, ["solid", "striped", "dotted"])
        >>> edited.cfg.model_name
        'toy (edited)'
    """
    return edit_heads(model, result, class_multipliers(model, result, dictionary, class_names, **kwargs))


# --------------------------------------------------------------------------------------------------
# whole-head ablation (the TextSpan-style baseline)
# --------------------------------------------------------------------------------------------------
def ablate_heads(
    model: ModelT, heads: Iterable[tuple[int, int]], images: Float[Tensor, "batch channel height width"] | None = None,
) -> ModelT:
    """A copy of ``model`` with whole heads removed in weight space.

    With ``images``, mean-ablation as TextSpan does it: each head's output is replaced by its mean
    over those images and all tokens (added to the output bias). Without, zero-ablation of the
    input-dependent part (``W_VO = 0``).

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("random:tiny")
        >>> pixels = torch.randn(4, 3, 32, 32)
        >>> ablated = ablate_heads(model, [(1, 2), (1, 3)], images=pixels)     # mean-ablate L1 H2 and H3
        >>> ablated.vision.blocks[1].attn.W_O[2].abs().max().item()
        0.0
    """
    vision = vision_tower(model)
    heads = sorted({(resolve_layers([l], vision.cfg.n_layers)[0], h) for l, h in heads})
    for _, h in heads:
        if not 0 <= h < vision.cfg.n_heads:
            raise ValueError(f"head {h} is out of range (0..{vision.cfg.n_heads - 1})")
    edited = prepare_for_edit(model, "heads ablated")
    tower = edited.vision
    mean_z: dict[int, Tensor] = {}
    if images is not None and heads:
        names = {f"blocks.{l}.attn.hook_z" for l, _ in heads}
        with torch.no_grad():
            _, cache = tower.run_with_cache(images, names_filter=lambda n: n in names)
        mean_z = {int(n.split(".")[1]): cache[n].mean(dim=(0, 1)) for n in names}  # [n_heads, d_head]
    with torch.no_grad():
        for layer, h in heads:
            attn = tower.blocks[layer].attn
            if layer in mean_z:
                attn.b_O += mean_z[layer][h] @ attn.W_O[h]
            attn.W_O[h] = 0.0
    return edited
