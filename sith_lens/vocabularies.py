"""Concept vocabularies: lists of strings that explanations are written in.

Sources: a registered name ("toy", "english"), a text file with one concept per line, or a list of strings.
Blank entries and duplicates are dropped with a warning, keeping the first occurrence's order.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterable

logger = logging.getLogger(__name__)


def _toy() -> list[str]:
    from .toyworld.vocab import toy_concepts

    return toy_concepts()


def _english() -> list[str]:
    from importlib.resources import files

    # built by scripts/build_english_vocab.py from wordfreq; see docs/sith.md (concept vocabularies) for provenance
    return (files("sith_lens") / "assets" / "vocabularies" / "english.txt").read_text(encoding="utf-8").splitlines()


#: Built-in vocabularies by name.
VOCABULARIES: dict[str, Callable[[], list[str]]] = {"toy": _toy, "english": _english}


def clean_concepts(concepts: Iterable[str], source: str = "concepts") -> list[str]:
    """Strip whitespace, drop blanks and duplicates (with a warning), keep order.

    Example:
        >>> clean_concepts(["red", " red", "", "blue"])
        ['red', 'blue']
    """
    seen: dict[str, None] = {}
    blank = duplicate = 0
    for i, c in enumerate(concepts):
        if not isinstance(c, str):
            raise TypeError(f"{source}: entry {i} is {type(c).__name__}, not a string")
        c = c.strip()
        if not c:
            blank += 1
        elif c in seen:
            duplicate += 1
        else:
            seen[c] = None
    if blank or duplicate:
        logger.warning("%s: dropped %d blank and %d duplicate entries", source, blank, duplicate)
    if not seen:
        raise ValueError(f"{source}: the vocabulary is empty; give at least one concept string")
    return list(seen)


def load_vocabulary(source: str | os.PathLike | Iterable[str]) -> list[str]:
    """The concept strings of ``source``: a built-in name, a file (one concept per line), or strings.

    Example:
        >>> load_vocabulary("toy")[:3]
        ['circle', 'square', 'triangle']
        >>> load_vocabulary(["red", "a dog"])
        ['red', 'a dog']
    """
    if isinstance(source, str) and source in VOCABULARIES:
        return clean_concepts(VOCABULARIES[source](), source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ValueError(
                f"unknown vocabulary {str(source)!r}: not a built-in name ({sorted(VOCABULARIES)}) "
                "and not a file; pass a name, a text file with one concept per line, or a list of strings"
            )
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not UTF-8 text ({err}); save it as UTF-8, one concept per line") from None
        return clean_concepts(lines, str(path))
    return clean_concepts(list(source), "concept list")
