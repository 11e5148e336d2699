"""What the core needs from a model, as typed ``Protocol``s, and the checked ways to reach it.

``sith_lens.load_clip`` returns a ``HookedCLIP``, which satisfies ``CLIPLike``; the core (SITH,
edits, comparison, zero-shot) is typed against these protocols, not against ``HookedCLIP``, so
any object with the same attributes works and a type checker can see the contract. This module
imports no host library.

Example:
    >>> import sith_lens as sl
    >>> from sith_lens.model import CLIPLike, vision_tower
    >>> model = sl.load_clip("random:tiny")
    >>> isinstance(model, CLIPLike), vision_tower(model).cfg.n_layers
    (True, 2)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

if TYPE_CHECKING:  # torch is only needed by a type checker here
    from torch import Tensor


class LayerNormLike(Protocol):
    """A TransformerLens-style LayerNorm: gain ``w [d_model]``, bias ``b [d_model]`` and ``eps``."""

    w: Tensor
    b: Tensor
    eps: float


class AttentionLike(Protocol):
    """One attention layer's weights in TransformerLens shapes (``W_V [n_heads, d_model, d_head]``,
    ``W_O [n_heads, d_head, d_model]``, ...)."""

    W_Q: Tensor
    W_K: Tensor
    W_V: Tensor
    W_O: Tensor
    b_Q: Tensor
    b_K: Tensor
    b_V: Tensor
    b_O: Tensor


class BlockLike(Protocol):
    """A residual block: the pre-attention LayerNorm and the attention layer."""

    ln1: LayerNormLike
    attn: AttentionLike


class TowerConfigLike(Protocol):
    """The shape facts the core reads from ``tower.cfg``."""

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int


class TowerLike(Protocol):
    """What both towers offer: their config and their weights."""

    cfg: TowerConfigLike

    def state_dict(self) -> Mapping[str, Tensor]: ...


@runtime_checkable
class VisionTowerLike(TowerLike, Protocol):
    """A hooked vision tower (``HookedCLIPVision``): blocks, stacked ``W_V [n_layers, n_heads,
    d_model, d_head]`` / ``W_O [n_layers, n_heads, d_head, d_model]``, the final LayerNorm and the
    projection ``W_proj [d_model, d_proj]`` into the joint space."""

    blocks: Sequence[BlockLike]
    ln_final: LayerNormLike

    @property
    def W_V(self) -> Tensor: ...

    @property
    def W_O(self) -> Tensor: ...

    @property
    def W_proj(self) -> Tensor: ...


class ModelInfoLike(Protocol):
    """Model-level facts (``HookedCLIP.cfg``, a ``CLIPInfo``)."""

    model_name: str
    d_proj: int


@runtime_checkable
class CLIPLike(Protocol):
    """A two-tower CLIP-family model, as the core uses it (``HookedCLIP`` is one).

    ``image_mean`` is the ``[d_proj]`` mean image embedding saved with the model, or None.
    """

    vision: VisionTowerLike
    text: TowerLike
    cfg: ModelInfoLike
    image_mean: Tensor | None
    logit_scale: Tensor

    def encode_image(self, pixels: Tensor, normalize: bool = False) -> Tensor: ...

    def encode_text(self, texts: str | Sequence[str] | Tensor, normalize: bool = False) -> Tensor: ...

    def preprocess(self, images: object) -> Tensor: ...


#: A ``CLIPLike`` type variable: edits return a model of the type they were given.
ModelT = TypeVar("ModelT", bound=CLIPLike)


def vision_tower(model: CLIPLike) -> VisionTowerLike:
    """``model.vision``, checked to be a hooked vision tower; a clear ``TypeError`` otherwise.

    Example:
        >>> import sith_lens as sl
        >>> vision_tower(sl.load_clip("random:tiny")).cfg.n_heads
        4
        >>> vision_tower("clip")
        Traceback (most recent call last):
        TypeError: expected a HookedCLIP (from sith_lens.load_clip), got str; load the model with sl.load_clip(...) first
    """
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
        >>> resolve_layers(None, 3)
        [0, 1, 2]
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
        >>> parse_layers("0,3,-1", 12)
        [0, 3, 11]
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
