"""LUCID in SAELens's registries: the one module that touches SAELens internals.

``register()`` (idempotent) puts

- ``"lucid"`` (``LucidSAE``) and ``"lucid_view"`` (``LucidView``) in ``SAE_CLASS_REGISTRY`` and
  ``"lucid"`` (``TrainingLucidSAE``) in ``SAE_TRAINING_CLASS_REGISTRY``, so that
  ``SAE.load_from_disk`` / ``TrainingSAE`` loading find them;
- the packaged release ``sith-lens-toy-lucid`` in ``get_pretrained_saes_directory()``, with a
  loader that reads package data instead of the Hugging Face Hub, so that
  ``SAE.from_pretrained("sith-lens-toy-lucid", sae_id)`` works offline. Its sae ids are
  ``"final"`` (the two-modality ``LucidSAE``), ``"final/vision"`` and ``"final/text"`` (one view
  each, an ordinary SAE), with the measured variance explained and L0 of each.

SAELens has no public API for a third-party release: the directory is a cached dict (the same
object on every call), so ``register()`` adds to it and wraps its ``cache_clear`` so that clearing
the cache re-adds the release. ``import sith_lens`` arranges for ``register()`` to run when
``sae_lens`` is imported; a script may call ``sith_lens.register()`` itself.

Example:
    >>> import sith_lens
    >>> from sae_lens import SAE
    >>> SAE.from_pretrained("sith-lens-toy-lucid", "final/vision").cfg.metadata.hook_name
    'hook_joint_tokens'
"""

from __future__ import annotations

import json
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from sae_lens.constants import SAE_CFG_FILENAME, SPARSITY_FILENAME
from sae_lens.loading import pretrained_saes_directory as directory_module
from sae_lens.loading.pretrained_sae_loaders import (
    NAMED_PRETRAINED_SAE_CONFIG_GETTERS,
    NAMED_PRETRAINED_SAE_LOADERS,
    sae_lens_disk_loader,
)
from sae_lens.loading.pretrained_saes_directory import PretrainedSAELookup
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY

from ..sparse import MODALITIES
from .config import ARCHITECTURE, VIEW_ARCHITECTURE, LucidSAEConfig, LucidViewConfig, TrainingLucidSAEConfig
from .inference import LucidSAE, LucidView, view_config
from .training import TrainingLucidSAE

RELEASE = "sith-lens-toy-lucid"
LOADER = "sith_lens_packaged"
#: The toy CLIP the release belongs to (``load_clip("toy")``).
RELEASE_MODEL = "toy"


def _put(registry: dict[str, Any], name: str, entry: tuple[type, type]) -> None:
    """Put ``entry`` under ``name``; the same classes from a re-imported module replace the old
    ones, anything else registered under that name is a clash."""
    current = registry.get(name)
    if current is not None and current != entry and current[0].__module__ != entry[0].__module__:
        raise ValueError(f"SAELens architecture {name!r} is already registered by "
                         f"{current[0].__module__}.{current[0].__name__}")
    registry[name] = entry


def release_dir() -> Path:
    """Where the packaged release lives: one folder per two-modality SAE (``final``)."""
    return Path(str(files("sith_lens") / "assets" / "lucid_toy"))


def _split_id(folder_name: str) -> tuple[str, str | None]:
    """``"final/vision"`` -> ("final", "vision"); ``"final"`` -> ("final", None)."""
    head, _, tail = folder_name.rpartition("/")
    return (head, tail) if tail in MODALITIES and head else (folder_name, None)


def _folder(repo_id: str, name: str) -> Path:
    path = Path(repo_id) / name
    if not (path / SAE_CFG_FILENAME).is_file():
        raise FileNotFoundError(f"the packaged LUCID SAE {name!r} is missing from {repo_id}; reinstall sith-lens")
    return path


def read_view(folder: str | os.PathLike, device: str = "cpu", cfg_overrides: dict[str, Any] | None = None, *,
              modality: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The config dict and state dict of one modality's view of the LUCID SAE saved in ``folder``
    (SAELens's disk-loader protocol, for ``SAE.load_from_disk(folder, converter=...)``)."""
    cfg_dict, state_dict = sae_lens_disk_loader(folder, device, None)
    parent = LucidSAE(LucidSAEConfig.from_dict({**cfg_dict, "device": "meta"}))
    parent.process_state_dict_for_loading(state_dict)  # checks it, converts an old-format file
    view = {**view_config(parent.cfg, modality).to_dict(), "device": cfg_dict.get("device", device)}
    view.update(cfg_overrides or {})
    prefix = f"{modality}."
    return view, {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _sparsity(folder: Path, modality: str | None, device: str) -> torch.Tensor | None:
    from safetensors import safe_open

    path = folder / SPARSITY_FILENAME
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt", device=device) as f:  # type: ignore[no-untyped-call]
        return f.get_tensor("sparsity" if modality is None else f"sparsity_{modality}")


def packaged_loader(
    repo_id: str, folder_name: str, device: str = "cpu", force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor | None]:
    """SAELens's loader protocol, reading package data instead of downloading."""
    name, modality = _split_id(folder_name)
    folder = _folder(repo_id, name)
    if modality is None:
        cfg, state_dict = sae_lens_disk_loader(folder, device, cfg_overrides)
    else:
        cfg, state_dict = read_view(folder, device, cfg_overrides, modality=modality)
    return cfg, state_dict, _sparsity(folder, modality, device)


def packaged_config(
    repo_id: str, folder_name: str, device: str | None = None, force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """SAELens's config-getter protocol for the packaged release."""
    name, modality = _split_id(folder_name)
    cfg = json.loads((_folder(repo_id, name) / SAE_CFG_FILENAME).read_text(encoding="utf-8"))
    if modality is not None:
        cfg = view_config(LucidSAEConfig.from_dict(cfg), modality).to_dict()
    if device is not None:
        cfg["device"] = device
    return {**cfg, **(cfg_overrides or {})}


def release_lookup() -> PretrainedSAELookup | None:
    """The directory entry of the packaged release, from its saved configs (None if not installed)."""
    root = release_dir()
    names = sorted(p.name for p in root.iterdir() if (p / SAE_CFG_FILENAME).is_file()) if root.is_dir() else []
    if not names:
        return None
    saes_map, variance, l0 = {}, {}, {}
    for name in names:
        meta = json.loads((root / name / SAE_CFG_FILENAME).read_text(encoding="utf-8")).get("metadata", {})
        figures = {m: (meta.get(f"variance_explained_{m}"), meta.get(f"l0_{m}")) for m in MODALITIES}
        for sae_id, modalities in ((name, MODALITIES), *((f"{name}/{m}", (m,)) for m in MODALITIES)):
            saes_map[sae_id] = sae_id
            measured = [figures[m] for m in modalities if None not in figures[m]]
            if len(measured) == len(modalities):  # the parent: the mean of its two views
                variance[sae_id] = round(sum(v for v, _ in measured) / len(measured), 4)
                l0[sae_id] = round(sum(n for _, n in measured) / len(measured), 3)
    return PretrainedSAELookup(
        release=RELEASE, repo_id=str(root), model=RELEASE_MODEL, conversion_func=LOADER, saes_map=saes_map,
        expected_var_explained=variance, expected_l0=l0, neuronpedia_id={}, norm_scaling_factor={},
        config_overrides=None,
    )


def _add_release() -> None:
    lookup = release_lookup()
    if lookup is not None:
        directory_module.get_pretrained_saes_directory()[RELEASE] = lookup


def _keep_release_after_cache_clear() -> None:
    cached = directory_module.get_pretrained_saes_directory
    clear = cached.cache_clear
    if getattr(clear, "keeps_sith_lens_release", False):
        return

    def cache_clear() -> None:
        clear()
        _add_release()

    cache_clear.keeps_sith_lens_release = True  # type: ignore[attr-defined]
    cached.cache_clear = cache_clear  # type: ignore[method-assign]


def register() -> None:
    """Register LUCID's architectures and the packaged release with SAELens (idempotent).

    Example:
        >>> register(); register()      # the second call changes nothing
    """
    _put(SAE_CLASS_REGISTRY, ARCHITECTURE, (LucidSAE, LucidSAEConfig))
    _put(SAE_CLASS_REGISTRY, VIEW_ARCHITECTURE, (LucidView, LucidViewConfig))
    _put(SAE_TRAINING_CLASS_REGISTRY, ARCHITECTURE, (TrainingLucidSAE, TrainingLucidSAEConfig))
    NAMED_PRETRAINED_SAE_LOADERS[LOADER] = packaged_loader
    NAMED_PRETRAINED_SAE_CONFIG_GETTERS[LOADER] = packaged_config
    _add_release()
    _keep_release_after_cache_clear()
