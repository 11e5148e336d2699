"""The packaged LUCID release: ``SAE.from_pretrained("sith-lens-toy-lucid", "final")`` works
offline, from the package data in ``sith_lens/assets/lucid_toy``.

SAELens has no public API for third-party releases. This module adds an entry to the directory
that ``get_pretrained_saes_directory()`` returns (a cached dict, the same object on every call)
and a loader to ``NAMED_PRETRAINED_SAE_LOADERS`` that reads the SAE from disk instead of the
Hugging Face Hub. Both are SAELens internals; the project pins ``sae_lens<7`` and a test loads the
release through ``SAE.from_pretrained``.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from sae_lens.loading.pretrained_sae_loaders import (
    NAMED_PRETRAINED_SAE_CONFIG_GETTERS,
    NAMED_PRETRAINED_SAE_LOADERS,
    sae_lens_disk_loader,
)
from sae_lens.loading.pretrained_saes_directory import PretrainedSAELookup, get_pretrained_saes_directory

RELEASE = "sith-lens-toy-lucid"
LOADER = "sith_lens_packaged"


def release_dir() -> Path:
    """Where the packaged release lives: one folder per SAE id (``final``)."""
    return Path(str(files("sith_lens") / "assets" / "lucid_toy"))


def _folder(repo_id: str, folder_name: str) -> Path:
    path = Path(repo_id) / folder_name
    if not (path / "cfg.json").is_file():
        raise FileNotFoundError(f"the packaged LUCID SAE {folder_name!r} is missing from {repo_id}; reinstall sith-lens")
    return path


def packaged_loader(
    repo_id: str, folder_name: str, device: str = "cpu", force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], None]:
    """SAELens's loader protocol, reading package data instead of downloading."""
    cfg, state_dict = sae_lens_disk_loader(_folder(repo_id, folder_name), device, cfg_overrides)
    return cfg, state_dict, None


def packaged_config(
    repo_id: str, folder_name: str, device: str | None = None, force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """SAELens's config-getter protocol for the packaged release."""
    cfg = json.loads((_folder(repo_id, folder_name) / "cfg.json").read_text(encoding="utf-8"))
    if device is not None:
        cfg["device"] = device
    return {**cfg, **(cfg_overrides or {})}


def register_release() -> None:
    """Make ``SAE.from_pretrained("sith-lens-toy-lucid", sae_id)`` find the packaged SAEs (idempotent)."""
    root = release_dir()
    ids = sorted(p.name for p in root.iterdir() if (p / "cfg.json").is_file()) if root.is_dir() else []
    if not ids:
        return
    NAMED_PRETRAINED_SAE_LOADERS[LOADER] = packaged_loader
    NAMED_PRETRAINED_SAE_CONFIG_GETTERS[LOADER] = packaged_config
    stats = {i: json.loads((root / i / "cfg.json").read_text(encoding="utf-8")).get("metadata", {}) for i in ids}
    get_pretrained_saes_directory()[RELEASE] = PretrainedSAELookup(
        release=RELEASE, repo_id=str(root), model="toy", conversion_func=LOADER,
        saes_map={i: i for i in ids},
        expected_var_explained={i: float(stats[i].get("variance_explained", 1.0)) for i in ids},
        expected_l0={i: float(stats[i].get("l0", 0.0) or 0.0) for i in ids},
        neuronpedia_id={}, norm_scaling_factor={}, config_overrides=None,
    )
