"""The toy world's fixed word lists: every attribute an object can have, and how it looks.

Each attribute value is named by words that the captions, the tokenizer and the concept vocabulary
share, so a caption token, a concept string and a scene's ground truth all speak one language.
"""

from __future__ import annotations

#: Object attributes, in the order used by every array in the toy world ([..., n_attributes]).
ATTRIBUTES: tuple[str, ...] = ("shape", "color", "size", "position", "texture")

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink")
SIZES: tuple[str, ...] = ("small", "large")
#: Positions are cells of a 3x3 grid; multi-word names are caption phrases ("top left").
POSITIONS: tuple[str, ...] = ("top left", "top right", "center", "bottom left", "bottom right")
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted")
BACKGROUNDS: tuple[str, ...] = ("black", "gray", "white", "brown")

VALUES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": COLORS,
    "size": SIZES,
    "position": POSITIONS,
    "texture": TEXTURES,
    "background": BACKGROUNDS,
}

#: RGB (0-255) of each colour name. Chosen to stay apart in RGB and from the backgrounds.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 175, 60),
    "blue": (45, 85, 225),
    "yellow": (235, 215, 40),
    "purple": (135, 55, 190),
    "orange": (245, 140, 30),
    "cyan": (40, 205, 215),
    "pink": (245, 135, 195),
}
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "black": (18, 18, 18),
    "gray": (125, 125, 125),
    "white": (238, 238, 238),
    "brown": (105, 70, 40),
}
#: The second colour of a striped or dotted object is its own colour times this factor.
TEXTURE_SHADE = 0.45

#: (row, column) of each position's cell in the 3x3 grid.
POSITION_CELLS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top right": (0, 2),
    "center": (1, 1),
    "bottom left": (2, 0),
    "bottom right": (2, 2),
}
#: Object extent in pixels at a 64-pixel image (scaled with the image size), and how far its centre
#: may move inside its cell. Objects sit at their cell's centre: with a jitter of a few pixels and
#: smaller objects (11 and 18 px), a from-scratch ViT took several times longer to separate shapes.
SIZE_PIXELS: dict[str, float] = {"small": 14.0, "large": 21.0}
POSITION_JITTER: dict[str, float] = {"small": 0.0, "large": 0.0}
#: Per-channel uniform jitter of object and background colours (0-255 scale).
COLOR_JITTER = 14.0
BACKGROUND_JITTER = 8.0

#: Most objects one scene holds.
MAX_OBJECTS = 3


def position_phrase(position: str) -> tuple[str, ...]:
    """The words a caption uses for a position: ("at", "the", "top", "left") or ("in", "the", "center")."""
    return ("in", "the", position) if position == "center" else ("at", "the", *position.split())


def article(next_word: str) -> str:
    """'an' before a vowel, else 'a' ("an orange circle", "a red circle")."""
    return "an" if next_word[:1] in "aeiou" else "a"
