"""The toy world: seeded synthetic scenes with exact ground truth, and the toy CLIP trained on it.

Example:
    >>> from sith_lens.toyworld import ToyWorld
    >>> batch = ToyWorld(seed=0).batch(0, batch_size=8)
    >>> batch.texts[0], batch.patch_labels.shape      # caption, [8, 8, 8]
    ('a picture of a large cyan square and a dotted circle in the center , ...', (8, 8, 8))
"""

from .attributes import ATTRIBUTES, BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES, TEXTURES, VALUES
from .captions import BACKGROUND, Caption, attribute_prompts, caption_truth, make_caption
from .data import (
    AttributeSet,
    ToyBatch,
    ToyWorld,
    batch_from_scenes,
    counterfactual,
    sample_scene,
    scene_values,
    to_pixels,
)
from .render import Scene, ToyObject, patch_coverage, patch_labels, render_scene

__all__ = [
    "ATTRIBUTES", "BACKGROUNDS", "COLORS", "POSITIONS", "SHAPES", "SIZES", "TEXTURES", "VALUES",
    "BACKGROUND", "Caption", "attribute_prompts", "caption_truth", "make_caption",
    "AttributeSet", "ToyBatch", "ToyWorld", "batch_from_scenes", "counterfactual", "sample_scene", "scene_values", "to_pixels",
    "Scene", "ToyObject", "patch_coverage", "patch_labels", "render_scene",
]
