"""The pointing game on toy-world ground truth, for any heat map, with the baselines that tell
grounding from saliency.

A caption word that names an attribute of one object ("red" in "a red circle and a blue square")
*points* with a heat map over its image's patches; it hits when the map's peak lies on that
object. A map that does not vary over the image (an empty code) misses. Scoring any map the same way
lets one table hold:

- the claim (LUCID's shared-code heat map);
- chance: a random object of the scene (1 / objects) and a random patch (the object's share of the
  image's patches);
- word-agnostic maps (``background_distance``, ``code_norm``), the same for every word of an image:
  they measure *saliency*, and a grounding claim has to beat the best of them;
- ``given_object``: the hit rate among words whose peak lies on *some* object, which separates
  choosing the right object (grounding) from finding objects at all (saliency); chance there is
  1 / objects;
- per object count, and on multi-object scenes where no other object shares the named value.

Example:
    >>> import sith_lens as sl
    >>> from sith_lens.lucid.collect import collect_toy_activations
    >>> acts = collect_toy_activations(sl.load_clip("toy"), 64, seed=32, progress=False)
    >>> words = pointing_words(acts)
    >>> heat = torch.rand(len(acts), acts.patches.shape[1])     # a map per caption that ignores the word
    >>> result = score_heatmap(word_heat(heat, words), words)
    >>> 0.0 <= float(result.hit.float().mean()) <= 1.0
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..evidence import Estimate, Evidence, compare, mean_estimate
from .data import PairedActivations


@dataclass
class PointingWords:
    """Every caption word that names an attribute of one object, with its ground truth. W words."""

    #: The word's pair and token slot (index into the pair batch's token slots).
    pair: Int[Tensor, " W"]
    slot: Int[Tensor, " W"]
    #: The word's image, and the object (0-2) it names there.
    image: Int[Tensor, " W"]
    object: Int[Tensor, " W"]
    #: Which attribute it names (index into ``toyworld.ATTRIBUTES``).
    attribute: Int[Tensor, " W"]
    #: The object under each patch of the word's image (-1 background).
    patch_labels: Int[Tensor, "W N"]
    #: Objects in the word's scene.
    n_objects: Int[Tensor, " W"]
    #: The value the word names (index into the attribute's values).
    value: Int[Tensor, " W"]
    #: How many objects of the scene have that value (1 when only the named object does).
    n_same_value: Int[Tensor, " W"]

    def __len__(self) -> int:
        return len(self.pair)

    @property
    def unique_value(self) -> Bool[Tensor, " W"]:
        """True when no other object of the scene has the named value."""
        return self.n_same_value == 1

    @property
    def object_share(self) -> Float[Tensor, " W"]:
        """Share of the image's patches that lie on the named object (a random patch's hit rate)."""
        return (self.patch_labels == self.object[:, None]).float().mean(1)


def pointing_words(acts: PairedActivations, width: int | None = None) -> PointingWords:
    """The words to score in ``acts`` (toy-world activations from ``collect_toy_activations``),
    among the first ``width`` token slots of each caption (default: all).

    Example:
        >>> import sith_lens as sl
        >>> from sith_lens.lucid.collect import collect_toy_activations
        >>> words = pointing_words(collect_toy_activations(sl.load_clip("toy"), 64, seed=32, progress=False))
        >>> len(words) > 0
        True
    """
    needed = ("pair.token_objects", "pair.token_attributes", "image.patch_labels", "image.values")
    if any(k not in acts.extras for k in needed):
        raise ValueError("the pointing game needs toy-world ground truth; collect with collect_toy_activations")
    width = acts.tokens.shape[1] if width is None else width
    objects = acts.extras["pair.token_objects"][:, :width]
    attributes = acts.extras["pair.token_attributes"][:, :width]
    mask = acts.token_mask[:, :width]
    pair, slot = ((objects >= 0) & (attributes >= 0) & mask).nonzero(as_tuple=True)
    image = acts.image_index[pair]
    obj, attribute = objects[pair, slot], attributes[pair, slot]
    values = acts.extras["image.values"][image]  # [W, 3, n_attributes]; -1 for absent objects
    n_objects = (values[:, :, 0] >= 0).sum(1)
    named = values[torch.arange(len(pair)), obj, attribute]
    same = (values[torch.arange(len(pair)), :, attribute] == named[:, None]).sum(1)
    labels = acts.extras["image.patch_labels"][image].reshape(len(pair), -1).long()
    return PointingWords(pair, slot, image, obj, attribute, labels, n_objects, named, same)


def word_heat(heat: Float[Tensor, "P L N"] | Float[Tensor, "P N"], words: PointingWords) -> Float[Tensor, "W N"]:
    """Each word's heat map: from per-slot maps [pairs, slots, N], or from per-pair word-agnostic
    maps [pairs, N] (the same map for every word of the pair)."""
    if heat.ndim == 3:
        return heat[words.pair, words.slot]
    if heat.ndim == 2:
        return heat[words.pair]
    raise ValueError(f"heat must be [pairs, slots, patches] or [pairs, patches], got shape {list(heat.shape)}")


@dataclass
class PointingResult:
    """Where each word's peak landed."""

    #: The peak lies on the named object (and the map varies over the image).
    hit: Bool[Tensor, " W"]
    #: The peak lies on some object of the scene (and the map varies).
    on_object: Bool[Tensor, " W"]


def score_heatmap(heat: Float[Tensor, "W N"], words: PointingWords) -> PointingResult:
    """Score one heat map per word against the ground truth.

    Example:
        >>> import sith_lens as sl
        >>> from sith_lens.lucid.collect import collect_toy_activations
        >>> words = pointing_words(collect_toy_activations(sl.load_clip("toy"), 64, seed=32, progress=False))
        >>> planted = (words.patch_labels == words.object[:, None]).float()   # always right
        >>> bool(score_heatmap(planted, words).hit.all())
        True
    """
    if heat.shape != words.patch_labels.shape:
        raise ValueError(f"heat has shape {list(heat.shape)}; the words need [{len(words)}, "
                         f"{words.patch_labels.shape[1]}] (one map over the patches per word)")
    heat = heat.float()
    varies = heat.max(1).values > heat.min(1).values
    landed = words.patch_labels.gather(1, heat.argmax(1, keepdim=True))[:, 0]
    return PointingResult((landed == words.object) & varies, (landed >= 0) & varies)


def background_distance_map(
    patches: Float[Tensor, "I N d"], patch_labels: Int[Tensor, "I N"]
) -> Float[Tensor, "I N"]:
    """A word-agnostic saliency map: each patch's distance from the mean background patch."""
    background = patches[patch_labels.reshape(patches.shape[:2]) < 0].mean(0)
    return (patches - background).norm(dim=-1)


def chance_scores(words: PointingWords) -> dict[str, np.ndarray]:
    """Expected hit per word of a random object of the scene, and of a random patch."""
    return {"chance_random_object": (1.0 / words.n_objects.double()).numpy(),
            "random_patch": words.object_share.double().numpy()}


#: The word subsets a pointing table reports.
SUBSETS = ("all", "1_objects", "2_objects", "3_objects", "multi_object_unique_value")


def _subset_masks(words: PointingWords) -> dict[str, Tensor]:
    return {"all": torch.ones(len(words), dtype=torch.bool), "1_objects": words.n_objects == 1,
            "2_objects": words.n_objects == 2, "3_objects": words.n_objects == 3,
            "multi_object_unique_value": (words.n_objects > 1) & words.unique_value}


@dataclass
class PointingTable:
    """A pointing-game table: every map's hit rate on every subset of words, and the headline's evidence."""

    #: map name -> subset name -> hit rate with its interval (None when the subset is empty).
    rates: dict[str, dict[str, Estimate | None]]
    #: map name -> object count -> hit rate among words whose peak lies on an object.
    given_object: dict[str, dict[int, Estimate | None]]
    #: The headline over all words, with chance and the margin over the best word-agnostic map.
    evidence: Evidence

    def to_json(self) -> dict:
        """JSON-ready: ``rates``, ``given_object`` and ``evidence``."""
        def js(e: Estimate | None) -> dict | None:
            return None if e is None else e.to_json()

        return {"rates": {m: {s: js(e) for s, e in row.items()} for m, row in self.rates.items()},
                "given_object": {m: {f"{k}obj": js(e) for k, e in row.items()} for m, row in self.given_object.items()},
                "evidence": self.evidence.to_json()}


def pointing_table(
    words: PointingWords,
    heats: dict[str, Float[Tensor, "W N"]],
    headline: str,
    word_agnostic: Sequence[str],
    groups: np.ndarray | None = None,
    seeds: np.ndarray | None = None,
) -> PointingTable:
    """Score every map in ``heats`` (one map per word) on the same words, with chance rows.

    Args:
        words: the ground truth.
        heats: map name -> [W, N] heat; ``headline`` is the claim, ``word_agnostic`` the maps that
            ignore the word (the margin is taken against the best of them).
        groups: cluster id per word for the bootstrap (default: its image).
        seeds: the evaluation seed of each word, for per-seed figures.

    Example:
        >>> import sith_lens as sl
        >>> words, heats = dense_pointing_maps(sl.load_clip("toy"), n_pairs=64)
        >>> table = pointing_table(words, heats, "dense_cosine", ["background_distance"])
        >>> table.evidence.margin.value > 0          # the model's own patches beat the word-agnostic map
        True
    """
    if headline not in heats:
        raise ValueError(f"headline {headline!r} is not among the maps {sorted(heats)}")
    groups = words.image.numpy() if groups is None else groups
    results = {name: score_heatmap(h, words) for name, h in heats.items()}
    scores = {name: r.hit.double().numpy() for name, r in results.items()}
    chance = chance_scores(words)
    rates: dict[str, dict[str, Estimate | None]] = {}
    for name, values in {**scores, **chance}.items():
        rates[name] = {}
        for subset, mask in _subset_masks(words).items():
            m = mask.numpy()
            rates[name][subset] = mean_estimate(values[m], groups[m]) if m.any() else None
    given: dict[str, dict[int, Estimate | None]] = {}
    for name, r in results.items():
        given[name] = {}
        for k in (2, 3):
            m = (r.on_object & (words.n_objects == k)).numpy()
            given[name][k] = mean_estimate(r.hit.double().numpy()[m], groups[m]) if m.any() else None
    given["chance_random_object"] = {}
    for k in (2, 3):
        m = (words.n_objects == k).numpy()
        given["chance_random_object"][k] = mean_estimate(chance["chance_random_object"][m], groups[m]) if m.any() else None
    evidence = compare({**scores, "random_patch": chance["random_patch"]}, headline, margin_against=word_agnostic,
                       chance=chance["chance_random_object"], groups=groups, seeds=seeds)
    return PointingTable(rates, given, evidence)


def format_pointing_table(table: PointingTable) -> str:
    """The table as text: one row per map, one column per subset of words, then the hit rate among
    words whose peak is on an object ("on-obj", 2- and 3-object scenes)."""
    short = {"all": "all", "1_objects": "1 object", "2_objects": "2 objects", "3_objects": "3 objects",
             "multi_object_unique_value": "unique value"}
    header = f"{'heat map':<26}" + "".join(f"{short[s]:>14}" for s in SUBSETS) + f"{'on-obj 2':>11}{'on-obj 3':>11}"
    lines = [header]
    for name, row in table.rates.items():
        cells = "".join(f"{'-' if row[s] is None else f'{row[s].value:.3f}':>14}" for s in SUBSETS)
        g = table.given_object.get(name, {})
        extra = "".join(f"{'-' if g.get(k) is None else f'{g[k].value:.3f}':>11}" for k in (2, 3))
        lines.append(f"{name:<26}{cells}{extra}")
    return "\n".join(lines)


def concat_words(parts: Sequence[PointingWords]) -> PointingWords:
    """The words of several evaluation sets as one (pairs and images keep their own numbering:
    pass cluster ids to ``pointing_table`` that tell the sets apart)."""
    if not parts:
        raise ValueError("concat_words needs at least one PointingWords")
    widths = {p.patch_labels.shape[1] for p in parts}
    if len(widths) > 1:
        raise ValueError(f"the word sets come from images with different patch counts {sorted(widths)}")
    return PointingWords(*(torch.cat([getattr(p, f) for p in parts]) for f in PointingWords.__dataclass_fields__))


@torch.no_grad()
def pointing_maps(saes: dict[str, Any], acts: PairedActivations, code_norm_of: str | None = None
                  ) -> tuple[PointingWords, dict[str, Float[Tensor, "W N"]]]:
    """The words of ``acts`` and, per word, the heat maps a pointing table compares:

    - for each SAE in ``saes`` (name -> LUCID-like SAE), the dot product of the word's and each
      patch's shared codes;
    - ``<code_norm_of>_code_norm``: that SAE's shared-code norm per patch (word-agnostic);
    - ``background_distance``: each patch's distance from the mean background patch (word-agnostic);
    - ``dense_cosine``: the model's own cosine between each patch and the word in the activations'
      space (MaskCLIP-style dense alignment, no SAE).

    Example:
        >>> import sith_lens as sl
        >>> from sae_lens import SAE
        >>> sae = SAE.from_pretrained("sith-lens-toy-lucid", "final")
        >>> holdout = sl.collect_toy_activations(sl.load_clip("toy"), 32, seed=22, progress=False)
        >>> words, heats = pointing_maps({"lucid": sae}, holdout, code_norm_of="lucid")
        >>> sorted(heats)
        ['background_distance', 'dense_cosine', 'lucid', 'lucid_code_norm']
        >>> table = pointing_table(words, heats, "lucid", ["background_distance", "lucid_code_norm"])
    """
    from .evaluate import encode_pairs, n_shared, word_heatmaps

    batch = acts.pair_batch(torch.arange(len(acts)))
    words = pointing_words(acts, width=batch.tokens.shape[1])
    heats: dict[str, Tensor] = {}
    for name, sae in saes.items():
        _, patch_codes, token_codes = encode_pairs(sae, acts, max_pairs=len(acts))
        s = n_shared(sae)
        heats[name] = word_heat(word_heatmaps(patch_codes[..., :s], token_codes[..., :s]), words)
        if name == code_norm_of:
            heats[f"{name}_code_norm"] = word_heat(patch_codes[..., :s].norm(dim=-1), words)
    labels = acts.extras["image.patch_labels"].reshape(acts.patches.shape[0], -1)
    heats["background_distance"] = word_heat(background_distance_map(acts.patches.float(), labels)[acts.image_index], words)
    dense = torch.einsum("pnd,pld->pln", F.normalize(batch.patches.float(), dim=-1), F.normalize(batch.tokens.float(), dim=-1))
    heats["dense_cosine"] = word_heat(dense, words)
    return words, heats


def select_words(words: PointingWords, keep: Bool[Tensor, " W"]) -> PointingWords:
    """The words where ``keep`` is True."""
    return PointingWords(*(getattr(words, f)[keep] for f in PointingWords.__dataclass_fields__))


@torch.no_grad()
def dense_pointing_maps(model: Any, n_pairs: int = 512, seed: int = 32, min_objects: int = 2
                        ) -> tuple[PointingWords, dict[str, Float[Tensor, "W N"]]]:
    """The model's own dense grounding, without any SAE, on ``n_pairs`` toy-world scenes of seed
    ``seed``, keeping the words of scenes with at least ``min_objects`` objects: the words and
    their ``dense_cosine`` maps (each caption word's cosine with every patch, both through their
    tower's final LayerNorm and projection, MaskCLIP-style) and the word-agnostic
    ``background_distance`` maps (see ``pointing_maps``).

    Example:
        >>> import sith_lens as sl
        >>> words, heats = dense_pointing_maps(sl.load_clip("toy"), n_pairs=64)
        >>> sorted(heats)
        ['background_distance', 'dense_cosine']
        >>> float(score_heatmap(heats["dense_cosine"], words).hit.float().mean()) > 0.42     # chance ~0.42
        True
    """
    from .collect import collect_toy_activations

    words, heats = pointing_maps({}, collect_toy_activations(model, n_pairs, seed=seed, progress=False))
    keep = words.n_objects >= min_objects
    return select_words(words, keep), {name: heat[keep] for name, heat in heats.items()}
