"""sith-lens: open up CLIP-family vision-language models with the interpretability tools you already use.

The heavy host libraries (transformer_lens, transformers) are imported lazily, on first use of a
name that needs them, so that ``import sith_lens`` and the ``sith-lens`` command start fast.

Example:
    >>> import sith_lens as sl
    >>> model = sl.load_clip("random:tiny")
    >>> model.vision.cfg.n_layers
    2
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "load_clip": "sith_lens.adapters.loading",
    "HookedCLIP": "sith_lens.adapters.loading",
    "ModelNotAvailableError": "sith_lens.adapters.loading",
    "TextTokens": "sith_lens.adapters.loading",
    "HookedCLIPVision": "sith_lens.adapters.transformer_lens",
    "HookedCLIPText": "sith_lens.adapters.transformer_lens",
    "TowerConfig": "sith_lens.adapters.transformer_lens",
    "ToyWorld": "sith_lens.toyworld",
    "load_vocabulary": "sith_lens.vocabularies",
    "ConceptDictionary": "sith_lens.concepts",
    "explain_heads": "sith_lens.sith",
    "image_mean": "sith_lens.sith",
    "SITHResult": "sith_lens.sith",
    "comp": "sith_lens.pursuit",
    "pursue": "sith_lens.pursuit",
    "SparseCodes": "sith_lens.pursuit",
    "factored_svd": "sith_lens.svd",
    "edit_heads": "sith_lens.edit",
    "suppress": "sith_lens.edit",
    "amplify": "sith_lens.edit",
    "concept_mass": "sith_lens.edit",
    "concept_multipliers": "sith_lens.edit",
    "task_multipliers": "sith_lens.edit",
    "boost_classes": "sith_lens.edit",
    "ablate_heads": "sith_lens.edit",
    "compare": "sith_lens.compare",
    "Comparison": "sith_lens.compare",
    "group_robustness": "sith_lens.zeroshot",
    "zero_shot_weights": "sith_lens.zeroshot",
    "read_groups_csv": "sith_lens.zeroshot",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sith_lens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
