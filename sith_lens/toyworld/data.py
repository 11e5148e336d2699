"""Seeded access to the toy world: scenes, batches of (image, caption, ground truth), and labelled
single-object sets per attribute for zero-shot evaluation."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch
from jaxtyping import Bool, Float, Int, UInt8
from torch import Tensor

from .attributes import (
    ATTRIBUTES,
    BACKGROUND_JITTER,
    BACKGROUNDS,
    COLORS,
    COLOR_JITTER,
    MAX_OBJECTS,
    POSITION_JITTER,
    VALUES,
)
from .captions import BACKGROUND, Caption, attribute_prompts, check_weights, make_caption
from .render import Scene, ToyObject, pad_masks, patch_labels, render_scene


#: Pixel normalisation of the toy CLIP (also written to its preprocessor_config.json).
PIXEL_MEAN = (0.5, 0.5, 0.5)
PIXEL_STD = (0.5, 0.5, 0.5)


def sample_scene(
    rng: np.random.Generator, n_objects: int | None = None, fixed: dict[str, int] | None = None
) -> Scene:
    """A random scene with ``n_objects`` objects (1-3 uniformly when None), in distinct cells.

    ``fixed`` pins attribute values of the first object, e.g. ``{"color": 0}`` for a red one.

    Example:
        >>> scene = sample_scene(np.random.default_rng(0), n_objects=2)
        >>> len(scene.objects)
        2
    """
    n = int(rng.integers(1, MAX_OBJECTS + 1)) if n_objects is None else n_objects
    if not 1 <= n <= MAX_OBJECTS:
        raise ValueError(f"n_objects must be between 1 and {MAX_OBJECTS}, got {n}")
    fixed = dict(fixed or {})
    unknown = set(fixed) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"cannot fix {sorted(unknown)}; attributes are {ATTRIBUTES}")
    positions = list(rng.permutation(len(VALUES["position"]))[:n])
    if "position" in fixed:
        pos = fixed["position"]
        positions = [pos] + [p for p in positions if p != pos][: n - 1]
    objects = []
    for i in range(n):
        values = {a: int(rng.integers(len(VALUES[a]))) for a in ("shape", "color", "size", "texture")}
        values["position"] = int(positions[i])
        if i == 0:
            values.update(fixed)
        jitter = POSITION_JITTER[VALUES["size"][values["size"]]]
        offset = tuple(float(x) for x in rng.uniform(-jitter, jitter, size=2))
        tint = tuple(float(x) for x in rng.uniform(-COLOR_JITTER, COLOR_JITTER, size=3))
        objects.append(ToyObject(**values, offset=offset, tint=tint))
    background = int(rng.integers(len(BACKGROUNDS)))
    bg_tint = tuple(float(x) for x in rng.uniform(-BACKGROUND_JITTER, BACKGROUND_JITTER, size=3))
    return Scene(tuple(objects), background, bg_tint)


def with_value(scene: Scene, index: int, attribute: str, value: int) -> Scene:
    """The scene with object ``index``'s ``attribute`` set to ``value`` (``(BACKGROUND,
    "background")`` sets the background). Position jitter is clipped to the new size's range."""
    if attribute == "background":
        return Scene(scene.objects, value, scene.background_tint)
    changed = replace(scene.objects[index], **{attribute: value})
    jitter = POSITION_JITTER[changed.word("size")]
    changed = replace(changed, offset=tuple(float(np.clip(o, -jitter, jitter)) for o in changed.offset))
    objects = list(scene.objects)
    objects[index] = changed
    return Scene(tuple(objects), scene.background, scene.background_tint)


def alternatives(scene: Scene, index: int, attribute: str) -> list[int]:
    """The values ``attribute`` of object ``index`` (or the background) could take instead, in
    value order; positions exclude the cells other objects hold."""
    if attribute == "background":
        return [v for v in range(len(BACKGROUNDS)) if v != scene.background]
    current = scene.objects[index].value(attribute)
    taken = {o.position for o in scene.objects}
    return [v for v in range(len(VALUES[attribute])) if v != current and (attribute != "position" or v not in taken)]


def counterfactual(scene: Scene, rng: np.random.Generator) -> tuple[Scene, tuple[int, str]]:
    """The scene with one value changed: one attribute of one object, or the background.

    Returns the new scene and what changed, as ``(object index, attribute)`` or
    ``(BACKGROUND, "background")``. Used for hard negatives: a caption that names the changed value
    is true of one scene and false of the other.

    Example:
        >>> scene = sample_scene(np.random.default_rng(0), n_objects=2)
        >>> other, (index, attribute) = counterfactual(scene, np.random.default_rng(0))
        >>> index, attribute                                  # object 1's texture changed
        (1, 'texture')
    """
    choices = [(i, a) for i in range(len(scene.objects)) for a in ATTRIBUTES] + [(BACKGROUND, "background")]
    index, attribute = choices[int(rng.integers(len(choices)))]
    value = int(rng.choice(alternatives(scene, index, attribute)))
    return with_value(scene, index, attribute, value), (index, attribute)


def group_probabilities(weights: dict[str, float] | None) -> tuple[list[str], np.ndarray]:
    """Check ``ToyWorld.group_batch`` weights; return the attributes and their probabilities
    (uniform over the attributes and "background" when ``weights`` is None)."""
    weights = check_weights(weights, (*ATTRIBUTES, "background"))
    p = np.array(list(weights.values()), dtype=np.float64)
    return list(weights), p / p.sum()


def scene_values(scene: Scene) -> Int[np.ndarray, "max_objects n_attributes"]:
    """Attribute value indices per object slot, -2 for slots the scene does not fill."""
    out = np.full((MAX_OBJECTS, len(ATTRIBUTES)), -2, dtype=np.int64)
    for i, obj in enumerate(scene.objects):
        out[i] = [obj.value(a) for a in ATTRIBUTES]
    return out


def to_pixels(images: UInt8[np.ndarray, "batch height width 3"]) -> Float[Tensor, "batch 3 height width"]:
    """uint8 HWC images -> the toy CLIP's normalised pixel tensor (same maths as its image processor)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class ToyBatch:
    """Images, captions and their ground truth. B = batch size, H = W = image size, g = patch grid."""

    scenes: list[Scene]
    captions: list[Caption]
    images: UInt8[np.ndarray, "B H W 3"]
    #: Normalised pixels, ready for the toy CLIP.
    pixels: Float[Tensor, "B 3 H W"]
    #: Per object slot, the pixels it covers (empty for slots the scene does not fill).
    masks: Bool[np.ndarray, "B max_objects H W"]
    #: Per patch, the object it shows, or -1 for background.
    patch_labels: Int[np.ndarray, "B g g"]
    #: Attribute value indices per object slot (-2 where there is no object).
    values: Int[np.ndarray, "B max_objects n_attributes"]
    backgrounds: Int[np.ndarray, "B"]

    @property
    def texts(self) -> list[str]:
        """The captions as strings."""
        return [c.text for c in self.captions]

    def __len__(self) -> int:
        return len(self.scenes)

    def token_label_arrays(self, length: int, offset: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Caption ground truth as arrays aligned with token positions.

        Args:
            length: number of token positions (e.g. the padded token length).
            offset: special tokens before the first word (1 for the toy tokenizer's ``<bos>``).

        Returns:
            objects: int [B, length], the object a token names, BACKGROUND (-1) for the background
                colour word, -2 where the token names nothing (or is padding).
            attributes: int [B, length], index into ``(*ATTRIBUTES, "background")``, -1 for nothing.

        Example:
            >>> import sith_lens as sl
            >>> batch = ToyWorld(seed=0).batch(0, batch_size=8)
            >>> toks = sl.load_clip("toy").tokenize(batch.texts)
            >>> objects, attributes = batch.token_label_arrays(toks.input_ids.shape[1])
            >>> objects.shape, attributes.shape                   # [batch, tokens]
            ((8, 32), (8, 32))
        """
        names = (*ATTRIBUTES, "background")
        objects = np.full((len(self), length), -2, dtype=np.int64)
        attributes = np.full((len(self), length), -1, dtype=np.int64)
        for b, caption in enumerate(self.captions):
            for pos, (index, attribute) in caption.token_labels(offset):
                if pos < length:
                    objects[b, pos] = index
                    attributes[b, pos] = names.index(attribute)
        return objects, attributes


def batch_from_scenes(
    scenes: list[Scene], captions: list[Caption], image_size: int = 64, patch_size: int = 8,
    palette: tuple[tuple[str, tuple[int, int, int]], ...] = (),
) -> ToyBatch:
    """Render scenes and collect their ground truth into a ToyBatch (``palette``: see ``render_scene``)."""
    rendered = [render_scene(s, image_size, dict(palette)) for s in scenes]
    images = np.stack([im for im, _ in rendered])
    return ToyBatch(
        scenes=scenes,
        captions=captions,
        images=images,
        pixels=to_pixels(images),
        masks=np.stack([pad_masks(m) for _, m in rendered]),
        patch_labels=np.stack([patch_labels(m, patch_size) for _, m in rendered]),
        values=np.stack([scene_values(s) for s in scenes]),
        backgrounds=np.array([s.background for s in scenes], dtype=np.int64),
    )


@dataclass
class AttributeSet:
    """Single-object scenes labelled by one attribute, with one zero-shot prompt per value."""

    attribute: str
    batch: ToyBatch
    #: int [N]: the value index of ``attribute`` in each scene.
    labels: Int[np.ndarray, "N"]
    #: One prompt per value, in value order ("a red object", ...).
    prompts: list[str]


@dataclass(frozen=True)
class ToyWorld:
    """The seeded toy world. The same seed and index always give the same data.

    Example:
        >>> world = ToyWorld(seed=0)
        >>> batch = world.batch(0, batch_size=32)          # scenes with 1-3 objects
        >>> batch.pixels.shape, batch.texts[0]
        (torch.Size([32, 3, 64, 64]), 'at the bottom right a cyan square and a small purple solid circle , ...')
        >>> len(world.attribute_set("color", per_value=50).labels)     # 8 colours x 50
        400
    """

    seed: int = 0
    image_size: int = 64
    patch_size: int = 8
    #: Colours drawn differently from the defaults, as ``(("purple", (255, 0, 255)),)``: a shifted
    #: world for fine-tuning studies. Empty for the standard world.
    palette: tuple[tuple[str, tuple[int, int, int]], ...] = ()

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} must be a multiple of patch_size={self.patch_size}"
            )
        for name, rgb in self.palette:
            if name not in COLORS or len(rgb) != 3 or not all(0 <= int(v) <= 255 for v in rgb):
                raise ValueError(f"palette entries must be (colour name from {COLORS}, (r, g, b) in 0..255), "
                                 f"got {(name, rgb)!r}")
        if self.image_size < 24:
            raise ValueError(f"image_size={self.image_size} is too small to draw objects; use >= 24")

    def rng(self, *stream: int) -> np.random.Generator:
        """A generator for one named stream of this world (e.g. batch index)."""
        return np.random.default_rng([self.seed, *stream])

    def batch(
        self,
        index: int,
        batch_size: int,
        objects: tuple[int, int] = (1, MAX_OBJECTS),
        full_captions: bool = False,
    ) -> ToyBatch:
        """Batch number ``index``: random scenes with ``objects[0]..objects[1]`` objects, each with one
        random caption (every attribute and the background named when ``full_captions``)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        lo, hi = objects
        if not 1 <= lo <= hi <= MAX_OBJECTS:
            raise ValueError(f"objects must be a range within 1..{MAX_OBJECTS}, got {objects}")
        style = dict(single_attribute_rate=0.0, keep_rate=1.0, background_rate=1.0) if full_captions else {}
        rng = self.rng(0 if not full_captions else 2, index)
        scenes = [sample_scene(rng, int(rng.integers(lo, hi + 1))) for _ in range(batch_size)]
        captions = [make_caption(s, rng, **style) for s in scenes]
        return batch_from_scenes(scenes, captions, self.image_size, self.patch_size, self.palette)

    def contrastive_batch(
        self, index: int, n_pairs: int, n_prompts: int = 0, prompt_weights: dict[str, float] | None = None
    ) -> ToyBatch:
        """Batch number ``index`` of hard-negative pairs: ``2 * n_pairs`` items where item
        ``n_pairs + i`` is item ``i`` with one value changed (see ``counterfactual``). Both captions
        name the changed value and are otherwise worded alike, so telling the pair apart needs that
        one attribute (shape, position, texture... not just colour).

        ``n_prompts`` more items follow: one-object scenes captioned by one attribute ("a star",
        "a striped object": the short form captions already take), the attribute drawn with
        ``prompt_weights`` (uniform by default). A short caption makes its one word count in the
        text embedding, and weighting the attributes a model finds hard gives them more signal.

        Example:
            >>> batch = ToyWorld(seed=0).contrastive_batch(0, n_pairs=64, n_prompts=128, prompt_weights={"shape": 3})
            >>> batch.pixels.shape                               # 2 x 64 paired scenes + 128 one-word prompts
            torch.Size([256, 3, 64, 64])
        """
        if n_pairs < 1 or n_prompts < 0:
            raise ValueError(f"n_pairs must be >= 1 and n_prompts >= 0, got n_pairs={n_pairs}, n_prompts={n_prompts}")
        choices, p = group_probabilities(prompt_weights)
        prompt_rng = self.rng(5, index)
        prompt_scenes, prompt_captions = [], []
        for _ in range(n_prompts):
            scene = sample_scene(prompt_rng, 1)
            attribute = choices[int(prompt_rng.choice(len(choices), p=p))]
            value = scene.background if attribute == "background" else scene.objects[0].value(attribute)
            prompt_scenes.append(scene)
            prompt_captions.append(_prompt_caption(scene, attribute, attribute_prompts(attribute)[value]))
        rng = self.rng(3, index)
        scenes = [sample_scene(rng) for _ in range(n_pairs)]
        changed, captions, twin_captions = [], [], []
        for s in scenes:
            other, force = counterfactual(s, rng)
            twin_rng = copy.deepcopy(rng)
            captions.append(make_caption(s, rng, force=force))
            twin_captions.append(make_caption(other, twin_rng, force=force))
            changed.append(other)
        return batch_from_scenes(
            scenes + changed + prompt_scenes, captions + twin_captions + prompt_captions,
            self.image_size, self.patch_size, self.palette,
        )

    def group_batch(
        self, index: int, batch_size: int, weights: dict[str, float] | None = None
    ) -> ToyBatch:
        """Batch number ``index`` of minimal-pair groups: a random scene followed by every variant
        of it that differs in one value (one attribute of one object, or the background), until
        ``batch_size`` items. Each group's captions name the varied attribute and are otherwise
        worded alike, so a contrastive loss has to tell that attribute's values apart.

        ``weights`` sets how often each attribute (or "background") is the varied one; uniform by
        default.

        Example:
            >>> batch = ToyWorld(seed=0).group_batch(0, batch_size=64, weights={"shape": 2.0})
            >>> batch.pixels.shape
            torch.Size([64, 3, 64, 64])
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        choices, p = group_probabilities(weights)
        rng = self.rng(4, index)
        scenes: list[Scene] = []
        captions: list[Caption] = []
        while len(scenes) < batch_size:
            base = sample_scene(rng)
            attribute = choices[int(rng.choice(len(choices), p=p))]
            target = BACKGROUND if attribute == "background" else int(rng.integers(len(base.objects)))
            group = [base] + [with_value(base, target, attribute, v) for v in alternatives(base, target, attribute)]
            caption_rng = copy.deepcopy(rng)
            rng.random()  # move the main stream on, whatever the group's size
            for scene in group[: batch_size - len(scenes)]:
                scenes.append(scene)
                captions.append(make_caption(scene, copy.deepcopy(caption_rng), force=(target, attribute)))
        return batch_from_scenes(scenes, captions, self.image_size, self.patch_size, self.palette)

    def attribute_set(self, attribute: str, per_value: int) -> AttributeSet:
        """``per_value`` single-object scenes for each value of ``attribute``, other attributes random.

        ``attribute`` is an object attribute or "background". Captions name only that attribute.
        """
        if attribute not in VALUES:
            raise ValueError(f"unknown attribute {attribute!r}; expected one of {tuple(VALUES)}")
        if per_value < 1:
            raise ValueError(f"per_value must be >= 1, got {per_value}")
        rng = self.rng(1, list(VALUES).index(attribute))
        scenes, labels = [], []
        for value in range(len(VALUES[attribute])):
            for _ in range(per_value):
                if attribute == "background":
                    s = sample_scene(rng, 1)
                    s = Scene(s.objects, value, s.background_tint)
                else:
                    s = sample_scene(rng, 1, fixed={attribute: value})
                scenes.append(s)
                labels.append(value)
        prompts = attribute_prompts(attribute)
        captions = [_prompt_caption(s, attribute, prompts[v]) for s, v in zip(scenes, labels)]
        batch = batch_from_scenes(scenes, captions, self.image_size, self.patch_size, self.palette)
        return AttributeSet(attribute, batch, np.array(labels, dtype=np.int64), prompts)


def _prompt_caption(scene: Scene, attribute: str, prompt: str) -> Caption:
    """The Caption of a zero-shot prompt for a single-object scene, with its word labels."""
    words = tuple(prompt.split())
    value_words = (
        VALUES["background"][scene.background].split()
        if attribute == "background"
        else scene.objects[0].word(attribute).split()
    )
    target = BACKGROUND if attribute == "background" else 0
    labels = tuple((target, attribute) if w in value_words else None for w in words)
    mentions = np.full((MAX_OBJECTS, len(ATTRIBUTES)), -2, dtype=np.int64)
    mentions[0] = -1
    background = -1
    if attribute == "background":
        background = scene.background
    else:
        mentions[0, ATTRIBUTES.index(attribute)] = scene.objects[0].value(attribute)
    return Caption(words, labels, mentions, background)

