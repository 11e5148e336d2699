"""LUCID as SAELens SAEs: the inference pair ``LucidSAE`` and its views ``LucidView``, training
(``TrainingLucidSAE``, ``LucidTrainer``, ``train_lucid``), the release's recipe as defaults (``DEFAULTS``),
loading (``load_lucid``) and SAELens registration (``register``).

Importing this package registers LUCID with SAELens; ``import sith_lens`` arranges that for you
when ``sae_lens`` is imported. ``register()`` again is harmless.

Example:
    >>> import sith_lens
    >>> from sae_lens import SAE
    >>> sae = SAE.from_pretrained("sith-lens-toy-lucid", "final")        # LucidSAE
    >>> vision = SAE.from_pretrained("sith-lens-toy-lucid", "final/vision")   # LucidView
"""

from ..defaults import DEFAULTS, LucidRecipe
from .config import (
    ARCHITECTURE, VIEW_ARCHITECTURE, LucidSAEConfig, LucidShape, LucidViewConfig, TrainingLucidSAEConfig,
)
from .inference import LucidModalityError, LucidSAE, LucidView
from .load import load_lucid
from .registry import RELEASE, register
from .trainer import LucidTrainer, TrainingDivergedError, measure, train_lucid
from .training import TrainingLucidSAE

__all__ = [
    "ARCHITECTURE", "VIEW_ARCHITECTURE", "DEFAULTS", "RELEASE", "LucidShape", "LucidSAEConfig", "LucidViewConfig",
    "TrainingLucidSAEConfig", "LucidRecipe", "LucidSAE", "LucidView", "LucidModalityError", "TrainingLucidSAE",
    "LucidTrainer", "TrainingDivergedError", "train_lucid", "measure", "load_lucid", "register",
]

register()
