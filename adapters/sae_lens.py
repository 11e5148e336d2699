"""LUCID in SAELens: the public names, registration and loading.

Architecture ``"lucid"`` (inference: ``LucidSAE``; training: ``TrainingLucidSAE``) is registered
in SAELens's registries when ``lucid_sae`` and ``lucid_training`` are imported. ``import
sith_lens`` arranges for that to happen as soon as ``sae_lens`` is imported (at once if it already
is), without importing SAELens itself, which takes seconds. Registering twice is harmless.

Example:
    >>> import sith_lens
    >>> from sae_lens import SAE
    >>> sae = SAE.load_from_disk("runs/lucid/final")     # a LucidSAE
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .lucid_sae import ARCHITECTURE, LucidSAE, LucidSAEConfig, LucidView, LucidViewConfig, register_inference
from .lucid_release import RELEASE, register_release
from .lucid_training import LucidTrainer, TrainingLucidSAE, TrainingLucidSAEConfig, register_training, train_lucid

__all__ = [
    "LucidSAE", "LucidSAEConfig", "LucidView", "LucidViewConfig", "TrainingLucidSAE", "TrainingLucidSAEConfig",
    "LucidTrainer", "train_lucid", "register", "load_lucid",
]


def register() -> None:
    """Register LUCID with SAELens (idempotent; importing ``sith_lens`` already arranges it).

    Example:
        >>> register(); register()      # the second call changes nothing
    """
    register_inference()
    register_training()
    register_release()


def load_lucid(path: str | os.PathLike, device: str = "cpu") -> LucidSAE:
    """``SAE.load_from_disk`` for a LUCID folder, with clear errors for a missing, corrupt or
    non-LUCID folder.

    Example:
        >>> sae = load_lucid("runs/lucid/final")
    """
    import json

    from safetensors import SafetensorError
    from sae_lens import SAE

    from sith_lens.atomic import recover_directory

    path = Path(path)
    recover_directory(path)
    cfg_file, weights = path / "cfg.json", path / "sae_weights.safetensors"
    if not cfg_file.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{path} is not a saved SAE (needs cfg.json and sae_weights.safetensors)")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{cfg_file} is not valid JSON ({err}); the SAE folder is corrupt") from err
    architecture = cfg.get("architecture") if isinstance(cfg, dict) else None
    if architecture is None:
        raise ValueError(f"{cfg_file} names no architecture, so it is not a saved SAELens SAE; point at the "
                         "folder that save_model (or `sith-lens lucid train`, OUT/final) wrote")
    if architecture != ARCHITECTURE:
        raise ValueError(f"{path} holds a {architecture!r} SAE, not a LUCID one; load it with SAE.load_from_disk")
    try:
        sae = SAE.load_from_disk(path, device=device)
    except SafetensorError as err:
        raise ValueError(f"{weights} is corrupt ({err}); save the SAE again") from err
    return sae


register()
