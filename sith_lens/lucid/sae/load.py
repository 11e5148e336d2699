"""``load_lucid``: ``SAE.load_from_disk`` for a LUCID folder, with clear errors, and one modality on request."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from ..sparse import check_modality
from .config import ARCHITECTURE, VIEW_ARCHITECTURE, LucidSAEConfig, LucidViewConfig
from .inference import LucidSAE, LucidView


def _read_config(path: Path) -> dict[str, Any]:
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
    if architecture not in (ARCHITECTURE, VIEW_ARCHITECTURE):
        raise ValueError(f"{path} holds a {architecture!r} SAE, not a LUCID one; load it with SAE.load_from_disk")
    cls = LucidSAEConfig if architecture == ARCHITECTURE else LucidViewConfig
    try:
        cls.from_dict(cfg)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{cfg_file} is not a valid LUCID config ({err}); save the SAE again with save_model, "
                         "or point at OUT/final of `sith-lens lucid train`") from None
    return cfg


def load_lucid(path: str | os.PathLike, device: str = "cpu", modality: str | None = None) -> LucidSAE | LucidView:
    """Load a LUCID SAE saved by ``save_model`` (or ``OUT/final`` of ``sith-lens lucid train``).

    Args:
        path: the folder with ``cfg.json`` and ``sae_weights.safetensors``.
        modality: None for the two-modality ``LucidSAE``; "vision" or "text" for that view alone
            (an ordinary SAELens SAE, ``LucidView``).

    Example:
        >>> from importlib.resources import files
        >>> folder = files("sith_lens") / "assets" / "lucid_toy" / "final"   # or a `lucid train` run's final/
        >>> sae = load_lucid(folder)                                   # sae.vision, sae.text
        >>> vision = load_lucid(folder, modality="vision")             # == sae.vision
        >>> type(sae).__name__, type(vision).__name__
        ('LucidSAE', 'LucidView')
    """
    from safetensors import SafetensorError
    from sae_lens import SAE

    from sith_lens.atomic import recover_directory

    from .registry import read_view

    path = Path(path)
    recover_directory(path)
    architecture = _read_config(path)["architecture"]
    if modality is not None:
        modality = check_modality(modality)
        if architecture == VIEW_ARCHITECTURE:
            raise ValueError(f"{path} holds one view already; load it without modality=")
    try:
        if modality is None:
            return SAE.load_from_disk(path, device=device)
        return SAE.load_from_disk(path, device=device, converter=functools.partial(read_view, modality=modality))
    except SafetensorError as err:
        raise ValueError(f"{path / 'sae_weights.safetensors'} is corrupt ({err}); save the SAE again") from err
