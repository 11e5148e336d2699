"""Words as LUCID sees them: normalising sub-word tokens to terms, and how much transport mass a
caption token gets (none for punctuation, little for function words)."""

from __future__ import annotations

import re

#: Words with no visual counterpart: articles, prepositions, conjunctions, pronouns, auxiliaries,
#: and caption boilerplate ("image of", "picture of").
FUNCTION_WORDS: frozenset[str] = frozenset(
    """a an the of in on at to with and or but for from by into onto over under near next beside
    this that these those there here it its is are was were be been being has have had do does
    some any each every one two three both other another as than then so very also just
    image picture photo scene shows showing view of""".split()
)

#: Markers tokenizers put on word pieces: SentencePiece's "▁", byte-level BPE's "Ġ", CLIP BPE's "</w>".
_PIECE_MARKERS = re.compile(r"(▁|Ġ|</w>|##)")
_NON_WORD = re.compile(r"[^\w\-]+")


def normalize_term(token: str) -> str:
    """A token as a lower-case term without word-piece markers or punctuation ('' if nothing is left).

    Example:
        >>> normalize_term("▁Red"), normalize_term("circle</w>"), normalize_term(",")
        ('red', 'circle', '')
    """
    return _NON_WORD.sub("", _PIECE_MARKERS.sub("", token)).lower()


def token_weight(token: str, function_weight: float) -> float:
    """Transport mass of one caption token before normalisation: 0 for punctuation,
    ``function_weight`` for function words, 1 for content words. (Special tokens and padding never
    get here: collection drops them.)

    Example:
        >>> token_weight("red", 0.1), token_weight("the", 0.1), token_weight(",", 0.1)
        (1.0, 0.1, 0.0)
    """
    term = normalize_term(token)
    if not term:
        return 0.0
    return function_weight if term in FUNCTION_WORDS else 1.0
