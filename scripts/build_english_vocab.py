"""Rebuild the bundled "english" concept vocabulary (sith_lens/assets/vocabularies/english.txt).

Provenance: the 20,000 most frequent English words in wordfreq 3.1.1 (``top_n_list("en", ...)``,
PyPI package ``wordfreq``, data CC BY-SA 4.0), keeping lowercase alphabetic words of 3+ letters
that are not function words (FUNCTION_WORDS below), plus short visual phrases: every
MODIFIERS x NOUNS pair ("red car", "wooden table", "striped shirt"). No other filtering.

    pip install wordfreq==3.1.1
    python scripts/build_english_vocab.py            # writes the file atomically, prints counts

Deterministic: the same wordfreq version gives the same file.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path

N_WORDS = 20_000
WORDFREQ_VERSION = "3.1.1"

FUNCTION_WORDS = set(
    """
    the and for that you this was are have not but from they his she her him their them its our your
    with what who whom whose which when where why how all any both each few more most other some such
    only own same than too very can will just don should now has had were been being did does doing
    would could shall might must may into onto upon about above below over under again further then
    once here there these those because until while off out also yet nor per via ever even still
    i'm it's don't can't won't isn't aren't wasn't weren't didn't doesn't hasn't haven't hadn't
    let get got gets one two three many much every either neither whether though although unless
    yes okay lol etc shall anyway anyhow whatever whoever whichever however therefore thus hence
    myself yourself himself herself itself ourselves themselves mine yours hers theirs ours
    among within without through during before after between against toward towards across along
    around behind beside besides beyond inside outside since like unlike near
    """.split()
)

MODIFIERS = """
red orange yellow green blue purple pink brown black white gray golden silver
wooden metal glass plastic stone leather paper fabric
striped dotted checkered floral shiny rusty old new small large
""".split()

NOUNS = """
car truck bus bicycle boat airplane train motorcycle house building bridge tower door window wall
roof fence road street table chair sofa bed lamp clock cup bowl plate bottle vase box bag basket
book shirt dress hat shoe coat jacket scarf glove umbrella ball toy kite flower tree leaf grass
bush rock mountain hill river lake sea beach sky cloud field forest garden dog cat horse bird fish
cow sheep bear elephant butterfly apple banana orange cake bread pizza sandwich phone computer
screen keyboard camera guitar piano sign flag statue fountain bench pillow blanket curtain carpet
mirror candle knife spoon
""".split()


def build(n_words: int = N_WORDS) -> list[str]:
    import wordfreq

    words: list[str] = []
    seen: set[str] = set()
    for w in wordfreq.top_n_list("en", 10 * n_words):
        if len(words) == n_words:
            break
        if re.fullmatch(r"[a-z]{3,}", w) and w not in FUNCTION_WORDS and w not in seen:
            words.append(w)
            seen.add(w)
    if len(words) < n_words:
        raise SystemExit(f"only {len(words)} words passed the filter; expected {n_words}")
    phrases = [f"{m} {n}" for m in MODIFIERS for n in NOUNS if m != n]
    return words + [p for p in phrases if p not in seen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "sith_lens" / "assets" / "vocabularies" / "english.txt"
    parser.add_argument("--out", type=Path, default=default)
    args = parser.parse_args()
    from importlib.metadata import version

    if version("wordfreq") != WORDFREQ_VERSION:
        print(f"warning: wordfreq {version('wordfreq')} installed; the bundled file was built with {WORDFREQ_VERSION}")
    concepts = build()
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(concepts) + "\n")
    os.replace(tmp, args.out)
    n_phrases = sum(" " in c for c in concepts)
    print(f"wrote {args.out}: {len(concepts)} concepts ({len(concepts) - n_phrases} words, {n_phrases} phrases)")


if __name__ == "__main__":
    main()
