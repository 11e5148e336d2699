"""Words of the toy world: the tokenizer's vocabulary and the "toy" concept vocabulary.

The concept vocabulary holds every attribute word, short phrases that combine them, and distractor
concepts the world does not contain (colours, shapes and textures it never draws, and everyday
words), so that an explanation has to choose. Distractor words are in the tokenizer's vocabulary too:
they never appear in a training caption, so the toy CLIP has learned nothing about them, which is
what a distractor should be (an unknown word would instead collapse onto the ``<unk>`` token).
"""

from __future__ import annotations

from .attributes import BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES, TEXTURES
from .captions import GENERIC_NOUNS, JOINERS, PREFIXES

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<unk>", "<bos>", "<eos>")

DISTRACTOR_COLORS: tuple[str, ...] = ("magenta", "teal", "gold", "silver", "maroon", "olive")
DISTRACTOR_SHAPES: tuple[str, ...] = ("hexagon", "oval", "arrow", "heart", "crescent", "pentagon")
DISTRACTOR_TEXTURES: tuple[str, ...] = ("wavy", "checkered", "fuzzy", "shiny")
DISTRACTOR_PLACES: tuple[str, ...] = ("middle left", "upper edge", "far corner")
DISTRACTOR_THINGS: tuple[str, ...] = (
    "dog", "cat", "car", "tree", "house", "bird", "person", "water", "music", "food", "mountain", "book",
)
DISTRACTORS: tuple[str, ...] = (
    DISTRACTOR_COLORS + DISTRACTOR_SHAPES + DISTRACTOR_TEXTURES + DISTRACTOR_PLACES + DISTRACTOR_THINGS
)


def caption_words() -> list[str]:
    """Every word a toy caption or zero-shot prompt can contain, in a fixed order."""
    words: list[str] = []
    groups = [SHAPES, COLORS, SIZES, TEXTURES, BACKGROUNDS, GENERIC_NOUNS]
    groups += [tuple(w for p in POSITIONS for w in p.split())]
    groups += [tuple(w for p in PREFIXES + JOINERS for w in p)]
    groups += [("a", "an", "the", "at", "in", "on", "background")]
    for group in groups:
        for w in group:
            if w not in words:
                words.append(w)
    return words


def tokenizer_words() -> list[str]:
    """The tokenizer's vocabulary: special tokens, caption words, then distractor words."""
    words = list(SPECIAL_TOKENS) + caption_words()
    for concept in DISTRACTORS:
        for w in concept.split():
            if w not in words:
                words.append(w)
    return words


def toy_concepts() -> list[str]:
    """The "toy" concept vocabulary: attribute words, phrases and distractors (no duplicates).

    Example:
        >>> concepts = toy_concepts()
        >>> "red" in concepts, "striped circle" in concepts, "dog" in concepts
        (True, True, True)
    """
    concepts: list[str] = [*SHAPES, *COLORS, *SIZES, *TEXTURES, *POSITIONS]
    concepts += [f"{b} background" for b in BACKGROUNDS]
    concepts += [f"{c} {s}" for c in COLORS for s in SHAPES]
    concepts += [f"{t} {s}" for t in TEXTURES for s in SHAPES]
    concepts += [f"{z} {s}" for z in SIZES for s in SHAPES]
    concepts += list(DISTRACTORS)
    assert len(set(concepts)) == len(concepts)
    return concepts


#: Attribute families a concept can name, plus "other" for words the world does not draw.
FAMILIES: tuple[str, ...] = ("shape", "color", "size", "position", "texture", "background", "other")


def concept_families(concept: str) -> frozenset[str]:
    """The attribute families a toy concept names ("red circle" names colour and shape).

    Distractor colours, shapes, textures and places count for their family; everyday words
    ("dog") are "other".

    Example:
        >>> sorted(concept_families("red circle")), sorted(concept_families("gray background"))
        (['color', 'shape'], ['background'])
    """
    if concept in POSITIONS or concept in DISTRACTOR_PLACES:
        return frozenset({"position"})
    if concept.endswith(" background"):
        return frozenset({"background"})
    families = set()
    for word in concept.split():
        if word in COLORS or word in DISTRACTOR_COLORS:
            families.add("color")
        elif word in SHAPES or word in DISTRACTOR_SHAPES:
            families.add("shape")
        elif word in SIZES:
            families.add("size")
        elif word in TEXTURES or word in DISTRACTOR_TEXTURES:
            families.add("texture")
    return frozenset(families or {"other"})
