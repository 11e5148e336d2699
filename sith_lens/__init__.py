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
import importlib.util
import sys
import warnings

# no ``typing`` import: the installed sith_lens-tl3.pth imports this package at every interpreter
# start

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "load_clip": "sith_lens.adapters.loading",
    "HookedCLIP": "sith_lens.adapters.hooked_clip",
    "ModelNotAvailableError": "sith_lens.adapters.loading",
    "TextTokens": "sith_lens.adapters.text_tokens",
    "HookedCLIPVision": "sith_lens.adapters.transformer_lens",
    "HookedCLIPText": "sith_lens.adapters.transformer_lens",
    "TowerConfig": "sith_lens.adapters.transformer_lens",
    "ToyWorld": "sith_lens.toyworld",
    "load_vocabulary": "sith_lens.vocabularies",
    "ConceptDictionary": "sith_lens.concepts",
    "explain_heads": "sith_lens.sith",
    "image_mean": "sith_lens.sith",
    "SITHResult": "sith_lens.result",
    "CLIPLike": "sith_lens.model",
    "query_multipliers": "sith_lens.edit",
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
    "collect_toy_activations": "sith_lens.lucid.collect",
    "collect_pairs": "sith_lens.lucid.collect",
    "collect_folder_activations": "sith_lens.lucid.collect",
    "label_latents": "sith_lens.lucid.interpret",
    "PairedActivations": "sith_lens.lucid.data",
    "ActivationStore": "sith_lens.lucid.store",
    "collect_store": "sith_lens.lucid.store",
    "ToySource": "sith_lens.lucid.store",
    "FolderSource": "sith_lens.lucid.store",
    "LucidSAE": "sith_lens.lucid.sae",
    "LucidView": "sith_lens.lucid.sae",
    "LucidSAEConfig": "sith_lens.lucid.sae",
    "TrainingLucidSAEConfig": "sith_lens.lucid.sae",
    "train_lucid": "sith_lens.lucid.sae",
    "load_lucid": "sith_lens.lucid.sae",
}

__all__ = ["__version__", "register", *_LAZY]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        # A module named like its main function (``sith_lens.compare``): importing it binds the
        # package attribute to the module, so the name is the (callable) module in either order.
        value = module if module.__name__ == f"{__name__}.{name}" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sith_lens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


# -- registrations with the host libraries ----------------------------------------------------------
# SAELens and TransformerLens take seconds to import, so ``import sith_lens`` imports neither. It
# arranges two things for the moment each is imported (at once if it already is):
# - sae_lens: importing sith_lens.lucid.sae registers LUCID (its last line calls register()); if
#   sith_lens.lucid.sae is itself being imported (it imported sae_lens), it registers on its own;
# - transformer_lens's bridge loader: importing sith_lens.adapters.bridge runs its
#   install_boot_lookup(), which lets TransformerBridge.boot_transformers find the CLIP and SigLIP
#   adapters.

_BRIDGE_SOURCE = "transformer_lens.model_bridge.sources.transformers"


def register() -> None:
    """Register LUCID's SAELens architectures and the packaged release (idempotent). ``import
    sith_lens`` already arranges this for the moment ``sae_lens`` is imported; call it yourself
    after ``get_pretrained_saes_directory.cache_clear()`` in code that replaced that function.

    Example:
        >>> import sith_lens
        >>> sith_lens.register()
    """
    importlib.import_module("sith_lens.lucid.sae").register()


def _register_lucid() -> None:
    if "sith_lens.lucid.sae" in sys.modules:
        return
    try:
        importlib.import_module("sith_lens.lucid.sae")
    except Exception as err:  # never break the user's own import of sae_lens
        warnings.warn(f"sith_lens could not register LUCID with SAELens: {err}", RuntimeWarning, stacklevel=2)


def _register_bridge() -> None:
    if "sith_lens.adapters.bridge" in sys.modules:  # imported, or being imported: its last line installs
        return
    try:
        importlib.import_module("sith_lens.adapters.bridge")
    except Exception as err:  # never break the user's own import of transformer_lens
        warnings.warn(f"sith_lens could not add its TransformerBridge adapters: {err}", RuntimeWarning, stacklevel=2)


_AFTER_IMPORT = {"sae_lens": _register_lucid, _BRIDGE_SOURCE: _register_bridge}


class _AfterImport:
    """A meta path finder (duck-typed: importlib.abc costs start-up time, and the installed
    ``sith_lens-tl3.pth`` imports this package at every interpreter start) that finds nothing
    itself and wraps the loader of each module in ``_AFTER_IMPORT`` so that its registration runs
    right after the module does."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> object:
        if fullname not in _AFTER_IMPORT:
            return None
        register_after = _AFTER_IMPORT.pop(fullname)
        if not _AFTER_IMPORT:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: object) -> None:
            exec_module(module)
            register_after()

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


for _name in list(_AFTER_IMPORT):
    if _name in sys.modules:
        _AFTER_IMPORT.pop(_name)()
if _AFTER_IMPORT and not any(isinstance(f, _AfterImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterImport())
