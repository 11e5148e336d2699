"""Captions generated from scenes, with the ground truth of which word names what.

A caption mentions every object of its scene (in a random order), each with a random subset of its
attributes, in one of a few word orders; sometimes it names the background. Every word carries a
label: (object index in the scene, attribute) for words that name an attribute value, else None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .attributes import ATTRIBUTES, MAX_OBJECTS, VALUES, article, position_phrase
from .render import Scene, ToyObject

#: Label of a word that names the background colour.
BACKGROUND = -1
#: Words that may open a caption.
PREFIXES: tuple[tuple[str, ...], ...] = ((), (), ("an", "image", "of"), ("a", "picture", "of"), ("a", "scene", "with"))
#: Words that may join two object phrases.
JOINERS: tuple[tuple[str, ...], ...] = (("and",), ("and",), (",",), ("with",))
#: Nouns used when a caption leaves the shape out.
GENERIC_NOUNS: tuple[str, ...] = ("object", "shape")


@dataclass(frozen=True)
class Caption:
    """A caption and its ground truth.

    ``labels[i]`` is (object index, attribute) when ``words[i]`` names that object's attribute,
    (BACKGROUND, "background") when it names the background colour, else None.
    ``mentions`` is int [MAX_OBJECTS, n_attributes]: per scene object, the value index the caption
    states for each attribute, -1 where it says nothing, all -2 for object slots the scene lacks.
    ``background`` is the background value named, or -1.
    """

    words: tuple[str, ...]
    labels: tuple[tuple[int, str] | None, ...]
    mentions: np.ndarray
    background: int

    @property
    def text(self) -> str:
        """The caption as one string."""
        return " ".join(self.words)

    def token_labels(self, offset: int = 1) -> list[tuple[int, tuple[int, str]]]:
        """(token position, label) of every labelled word, for a word-level tokenizer that puts
        ``offset`` special tokens (the start token) before the first word."""
        return [(i + offset, lab) for i, lab in enumerate(self.labels) if lab is not None]


def _object_words(
    index: int, obj: ToyObject, keep: set[str], rng: np.random.Generator
) -> tuple[list[str], list[tuple[int, str] | None]]:
    """The phrase for one object: article, adjectives, noun and position, in a random order."""
    adjectives = [a for a in ("size", "color", "texture") if a in keep]
    if rng.random() < 0.3:
        adjectives = [adjectives[i] for i in rng.permutation(len(adjectives))]
    words: list[str] = []
    labels: list[tuple[int, str] | None] = []
    for a in adjectives:
        words.append(obj.word(a))
        labels.append((index, a))
    if "shape" in keep:
        words.append(obj.word("shape"))
        labels.append((index, "shape"))
    else:
        words.append(GENERIC_NOUNS[int(rng.integers(len(GENERIC_NOUNS)))])
        labels.append(None)
    words.insert(0, article(words[0]))
    labels.insert(0, None)
    if "position" in keep:
        phrase = list(position_phrase(obj.word("position")))
        plabels = [None, None] + [(index, "position")] * (len(phrase) - 2)
        if rng.random() < 0.25:
            words, labels = phrase + words, plabels + labels
        else:
            words, labels = words + phrase, labels + plabels
    return words, labels


def _kept_attributes(rng: np.random.Generator, single: str | None, keep_rate: float) -> set[str]:
    if single is not None:
        return {single} if single != "background" else set()
    keep = {a for a in ATTRIBUTES if rng.random() < keep_rate}
    return keep or {ATTRIBUTES[int(rng.integers(len(ATTRIBUTES)))]}


def make_caption(
    scene: Scene,
    rng: np.random.Generator,
    single_attribute_rate: float = 0.2,
    keep_rate: float = 0.75,
    background_rate: float = 0.4,
    force: tuple[int, str] | None = None,
) -> Caption:
    """A random caption that is true of ``scene``.

    With probability ``single_attribute_rate`` each object is named by one attribute only (the
    form the zero-shot prompts take); otherwise each attribute is kept with probability
    ``keep_rate``, and the background is named with probability ``background_rate``.
    ``single_attribute_rate=0, keep_rate=1, background_rate=1`` gives full descriptions.
    ``force=(object index, attribute)`` makes sure that attribute is named (``(BACKGROUND,
    "background")`` for the background). Random draws do not depend on the scene's values, so two
    copies of one generator caption two scenes that differ in one value with the same structure.

    Example:
        >>> from sith_lens.toyworld.data import sample_scene
        >>> scene = sample_scene(np.random.default_rng(0), n_objects=2)
        >>> cap = make_caption(scene, np.random.default_rng(0))
        >>> cap.text
        'a scene with a red dotted circle , at the bottom right a square'
    """
    words: list[str] = list(PREFIXES[int(rng.integers(len(PREFIXES)))])
    labels: list[tuple[int, str] | None] = [None] * len(words)
    mentions = np.full((MAX_OBJECTS, len(ATTRIBUTES)), -2, dtype=np.int64)
    mentions[: len(scene.objects)] = -1
    single = None
    if rng.random() < single_attribute_rate:
        single = (*ATTRIBUTES, "background")[int(rng.integers(len(ATTRIBUTES) + 1))]
    for n, index in enumerate(rng.permutation(len(scene.objects))):
        index = int(index)
        obj = scene.objects[index]
        keep = _kept_attributes(rng, single, keep_rate)
        if force is not None and force[0] == index:
            keep.add(force[1])
        if n:
            joiner = JOINERS[int(rng.integers(len(JOINERS)))]
            words += joiner
            labels += [None] * len(joiner)
        w, lab = _object_words(index, obj, keep, rng)
        words += w
        labels += lab
        for a in keep:
            mentions[index, ATTRIBUTES.index(a)] = obj.value(a)
    background = -1
    named = single == "background" or (single is None and rng.random() < background_rate)
    if named or (force is not None and force[1] == "background"):
        background = scene.background
        words += ["on", "a", VALUES["background"][background], "background"]
        labels += [None, None, (BACKGROUND, "background"), None]
    return Caption(tuple(words), tuple(labels), mentions, background)


#: Attributes whose value is one word, so that a hard negative can swap it in place.
SWAPPABLE: tuple[str, ...] = ("shape", "color", "size", "texture", "background")


def check_weights(weights: dict[str, float] | None, names: tuple[str, ...], what: str = "weights") -> dict[str, float]:
    """Per-attribute weights checked against ``names`` (non-negative, not all 0); None gives every
    name weight 1. ``what`` names the setting in the error message.

    Example:
        >>> check_weights({"shape": 3.0}, SWAPPABLE, "swap weights")
        {'shape': 3.0}
    """
    if weights is None:
        return {a: 1.0 for a in names}
    if set(weights) - set(names) or any(w < 0 for w in weights.values()) or not any(weights.values()):
        raise ValueError(f"{what} must map attributes of {names} to non-negative numbers, not all 0; got {weights}")
    return weights


def swap_weights(weights: dict[str, float] | None) -> dict[str, float]:
    """Check ``swapped_caption`` weights (None: every attribute of SWAPPABLE alike)."""
    return check_weights(weights, SWAPPABLE, "swap weights")


def swapped_caption(
    caption: Caption, rng: np.random.Generator, weights: dict[str, float] | None = None
) -> Caption | None:
    """A hard-negative caption: ``caption`` with one attribute word swapped for another value of the
    same attribute ("a red star" -> "a red circle"), so it is false of the scene the caption
    describes and worded alike otherwise (the articles follow the new word).

    ``weights`` sets how likely each attribute in SWAPPABLE is to be the swapped one, among those
    the caption names (uniform when None; positions are multi-word phrases and are not swapped).
    Returns None when the caption names none of the weighted attributes.

    Example:
        >>> from sith_lens.toyworld.data import sample_scene
        >>> cap = make_caption(sample_scene(np.random.default_rng(0), n_objects=2), np.random.default_rng(0))
        >>> swapped_caption(cap, np.random.default_rng(0), {"shape": 3, "texture": 2}).text
        'a scene with a red dotted circle , at the bottom right a diamond'
    """
    weights = swap_weights(weights)
    slots = [i for i, lab in enumerate(caption.labels) if lab is not None and weights.get(lab[1], 0) > 0]
    if not slots:
        return None
    p = np.array([weights[caption.labels[i][1]] for i in slots], dtype=np.float64)
    slot = slots[int(rng.choice(len(slots), p=p / p.sum()))]
    index, attribute = caption.labels[slot]
    values = VALUES[attribute]
    old = values.index(caption.words[slot])
    new = int(rng.choice([v for v in range(len(values)) if v != old]))
    words = list(caption.words)
    words[slot] = values[new]
    if slot and words[slot - 1] in ("a", "an") and caption.labels[slot - 1] is None:
        words[slot - 1] = article(words[slot])
    mentions = caption.mentions.copy()
    background = caption.background
    if attribute == "background":
        background = new
    else:
        mentions[index, ATTRIBUTES.index(attribute)] = new
    return Caption(tuple(words), caption.labels, mentions, background)


def attribute_prompts(attribute: str) -> list[str]:
    """One zero-shot prompt per value of ``attribute``, in value order; each names that attribute only.

    Example:
        >>> attribute_prompts("color")[:2]
        ['a red object', 'a green object']
    """
    if attribute not in VALUES:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {tuple(VALUES)}")
    values = VALUES[attribute]
    if attribute == "shape":
        return [f"{article(v)} {v}" for v in values]
    if attribute == "position":
        return ["an object " + " ".join(position_phrase(v)) for v in values]
    if attribute == "background":
        return [f"an object on a {v} background" for v in values]
    return [f"{article(v)} {v} object" for v in values]


def caption_truth(mentions: np.ndarray, backgrounds: np.ndarray, scene_values: np.ndarray, scene_backgrounds: np.ndarray) -> np.ndarray:
    """Which captions are true of which scenes: bool [n_scenes, n_captions].

    A caption is true of a scene when the scene has as many objects as the caption mentions, the
    background matches (or is not named), and the objects can be paired one to one so that every
    stated attribute matches.

    Args:
        mentions: int [n_captions, MAX_OBJECTS, n_attributes] (-1 unstated, -2 no object)
        backgrounds: int [n_captions] (-1 unstated)
        scene_values: int [n_scenes, MAX_OBJECTS, n_attributes] (-2 for absent objects)
        scene_backgrounds: int [n_scenes]
    """
    from itertools import permutations

    cap = mentions[None, :, :, None, :]  # [1, C, slot, 1, A]
    obj = scene_values[:, None, None, :, :]  # [S, 1, 1, slot, A]
    cap_absent = mentions[None, :, :, None, 0] == -2
    obj_absent = scene_values[:, None, None, :, 0] == -2
    attr_ok = ((cap == -1) | (cap == obj)).all(-1)
    compatible = np.where(cap_absent | obj_absent, cap_absent & obj_absent, attr_ok)  # [S, C, slot, slot]
    matched = np.zeros(compatible.shape[:2], dtype=bool)
    slots = range(MAX_OBJECTS)
    for perm in permutations(slots):
        matched |= np.all([compatible[:, :, i, perm[i]] for i in slots], axis=0)
    bg_ok = (backgrounds[None, :] == -1) | (backgrounds[None, :] == scene_backgrounds[:, None])
    return matched & bg_ok
