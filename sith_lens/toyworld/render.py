"""Draw toy scenes: exact binary masks for each shape, textures, and per-patch labels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .attributes import (
    BACKGROUND_RGB,
    COLOR_RGB,
    MAX_OBJECTS,
    POSITION_CELLS,
    SIZE_PIXELS,
    TEXTURE_SHADE,
    VALUES,
)


@dataclass(frozen=True)
class ToyObject:
    """One object of a scene: an index into each attribute's word list, plus how it was jittered."""

    shape: int
    color: int
    size: int
    position: int
    texture: int
    #: Centre offset in pixels (x, y) inside the position's cell.
    offset: tuple[float, float] = (0.0, 0.0)
    #: RGB offset added to the colour (0-255 scale).
    tint: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def value(self, attribute: str) -> int:
        """The index of this object's value for ``attribute`` ("shape", "color", ...)."""
        return int(getattr(self, attribute))

    def word(self, attribute: str) -> str:
        """The name of this object's value for ``attribute`` ("circle", "top left", ...)."""
        return VALUES[attribute][self.value(attribute)]


@dataclass(frozen=True)
class Scene:
    """A background colour and 1-3 objects in distinct position cells."""

    objects: tuple[ToyObject, ...]
    background: int
    background_tint: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def describe(self) -> str:
        """A full plain description, for debugging ("large red striped circle at top left; ...")."""
        parts = [
            " ".join(o.word(a) for a in ("size", "color", "texture", "shape")) + " at " + o.word("position")
            for o in self.objects
        ]
        return "; ".join(parts) + f" on {VALUES['background'][self.background]}"


def _inside_polygon(u: np.ndarray, v: np.ndarray, vertices: list[tuple[float, float]]) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over points."""
    inside = np.zeros(u.shape, dtype=bool)
    n = len(vertices)
    for i in range(n):
        (u1, v1), (u2, v2) = vertices[i], vertices[(i + 1) % n]
        crosses = (v1 > v) != (v2 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            u_at = u1 + (v - v1) * (u2 - u1) / (v2 - v1)
        inside ^= crosses & (u < u_at)
    return inside


_STAR = [
    (r * math.sin(k * math.pi / 5), -r * math.cos(k * math.pi / 5))
    for k, r in zip(range(10), [1.0, 0.45] * 5)
]
_TRIANGLE = [(0.0, -1.0), (1.0, 0.85), (-1.0, 0.85)]


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which points (u, v in units of the object's half-extent, v pointing down) lie in ``shape``."""
    au, av = np.abs(u), np.abs(v)
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (au <= 0.85) & (av <= 0.85)
    if shape == "diamond":
        return au + av <= 1.0
    if shape == "cross":
        return ((au <= 0.34) & (av <= 1.0)) | ((av <= 0.34) & (au <= 1.0))
    if shape == "triangle":
        return _inside_polygon(u, v, _TRIANGLE)
    if shape == "star":
        return _inside_polygon(u, v, _STAR)
    raise ValueError(f"unknown shape {shape!r}; expected one of {VALUES['shape']}")


def texture_pattern(texture: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which pixels (integer coordinates relative to the object) take the texture's second colour."""
    if texture == "solid":
        return np.zeros(x.shape, dtype=bool)
    if texture == "striped":
        return (y // 2) % 2 == 1
    if texture == "dotted":
        return (x % 3 == 1) & (y % 3 == 1)
    raise ValueError(f"unknown texture {texture!r}; expected one of {VALUES['texture']}")


def object_box(obj: ToyObject, image_size: int) -> tuple[float, float, float]:
    """(centre x, centre y, half-extent) of an object in pixels."""
    scale = image_size / 64.0
    row, col = POSITION_CELLS[obj.word("position")]
    cell = image_size / 3.0
    cx = (col + 0.5) * cell + obj.offset[0] * scale
    cy = (row + 0.5) * cell + obj.offset[1] * scale
    return cx, cy, SIZE_PIXELS[obj.word("size")] * scale / 2.0


def render_scene(
    scene: Scene, image_size: int = 64, palette: dict[str, tuple[int, int, int]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a scene; ``palette`` overrides the RGB of some colour names (e.g. ``{"purple": (255, 0, 255)}``).

    Returns:
        image: uint8 [image_size, image_size, 3]
        masks: bool [n_objects, image_size, image_size], exactly the pixels each object covers.

    Example:
        >>> from sith_lens.toyworld.data import sample_scene
        >>> image, masks = render_scene(sample_scene(np.random.default_rng(0), n_objects=2))
        >>> image.shape, masks.shape
        ((64, 64, 3), (2, 64, 64))
    """
    ys, xs = np.mgrid[0:image_size, 0:image_size]
    bg = np.array(BACKGROUND_RGB[VALUES["background"][scene.background]], dtype=np.float32)
    image = np.empty((image_size, image_size, 3), dtype=np.float32)
    image[:] = np.clip(bg + np.asarray(scene.background_tint, dtype=np.float32), 0, 255)
    masks = np.zeros((len(scene.objects), image_size, image_size), dtype=bool)
    for i, obj in enumerate(scene.objects):
        cx, cy, half = object_box(obj, image_size)
        mask = shape_mask(obj.word("shape"), (xs + 0.5 - cx) / half, (ys + 0.5 - cy) / half)
        left, top = int(math.floor(cx - half)), int(math.floor(cy - half))
        second = texture_pattern(obj.word("texture"), xs - left, ys - top)
        base = (palette or {}).get(obj.word("color"), COLOR_RGB[obj.word("color")])
        rgb = np.clip(np.array(base, np.float32) + np.asarray(obj.tint, np.float32), 0, 255)
        image[mask & ~second] = rgb
        image[mask & second] = rgb * TEXTURE_SHADE
        masks[i] = mask
    return np.round(image).astype(np.uint8), masks


def patch_coverage(masks: np.ndarray, patch_size: int) -> np.ndarray:
    """Fraction of each patch that each object covers: float [n_objects, grid, grid]."""
    n, h, w = masks.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} is not a multiple of patch_size={patch_size}")
    g = h // patch_size
    return masks.reshape(n, g, patch_size, g, patch_size).mean(axis=(2, 4))


def patch_labels(masks: np.ndarray, patch_size: int, min_coverage: float = 0.25) -> np.ndarray:
    """The object each patch shows: int [grid, grid], the object index covering most of the patch,
    or -1 where no object covers at least ``min_coverage`` of it.

    Example:
        >>> from sith_lens.toyworld.data import sample_scene
        >>> image, masks = render_scene(sample_scene(np.random.default_rng(0), n_objects=2))
        >>> patch_labels(masks, patch_size=8).shape     # [8, 8] for a 64-pixel image
        (8, 8)
    """
    cover = patch_coverage(masks, patch_size)
    if cover.shape[0] == 0:
        return np.full(cover.shape[1:], -1, dtype=np.int64)
    best = cover.argmax(axis=0)
    return np.where(cover.max(axis=0) >= min_coverage, best, -1).astype(np.int64)


def pad_masks(masks: np.ndarray) -> np.ndarray:
    """Pad [n, H, W] masks with empty ones to [MAX_OBJECTS, H, W]."""
    out = np.zeros((MAX_OBJECTS, *masks.shape[1:]), dtype=bool)
    out[: len(masks)] = masks
    return out


def contact_sheet(images: np.ndarray, columns: int = 8, scale: int = 3, gap: int = 2) -> np.ndarray:
    """Tile uint8 [N, H, W, 3] images into one uint8 image, each scaled up ``scale`` times (nearest)."""
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"contact_sheet needs uint8 images [N, H, W, 3] with N >= 1, got shape {images.shape}")
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    cols = min(columns, n)
    big = images.repeat(scale, axis=1).repeat(scale, axis=2)
    hs, ws = h * scale + gap, w * scale + gap
    sheet = np.full((rows * hs - gap, cols * ws - gap, 3), 255, dtype=np.uint8)
    for i, im in enumerate(big):
        r, c = divmod(i, columns)
        sheet[r * hs : r * hs + h * scale, c * ws : c * ws + w * scale] = im
    return sheet
