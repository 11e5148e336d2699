"""``load_clip``: one entry point from a name, a directory or a model instance to a ``HookedCLIP``.

Accepted specs:

- ``"toy"``: the toy CLIP shipped with the package;
- ``"random:tiny"``, ``"random:vit-b-32"``, ``"random:siglip-tiny"``...: a model with seeded random
  weights, built from a config that ships with the package (no download; for trying the tools and
  for tests);
- a Hugging Face id (``"openai/clip-vit-base-patch32"``, ``"google/siglip-base-patch16-224"``) or a
  local directory holding a transformers ``CLIPModel`` or ``SiglipModel`` checkpoint;
- ``"open_clip:ARCH/PRETRAINED"``, ``"open_clip:ARCH/path/to/checkpoint.pt"``, ``"open_clip:ARCH"``
  (random weights) or ``"open_clip:hf-hub:ORG/NAME"``, with the ``[open_clip]`` extra;
- an already-built transformers ``CLIPModel`` / ``SiglipModel`` or open_clip ``CLIP`` model;
- a ``HookedCLIP``, returned as is.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from sith_lens.adapters.families import HF_FAMILIES, HFFamily, hf_family, towers_from_hf
from sith_lens.adapters.hooked_clip import CLIPInfo, HookedCLIP
from sith_lens.adapters.text_tokens import TextTokens

__all__ = ["load_clip", "ModelNotAvailableError", "toy_checkpoint_dir", "RANDOM_CONFIGS",
           # defined in hooked_clip and text_tokens, importable from here as before
           "HookedCLIP", "CLIPInfo", "TextTokens"]

logger = logging.getLogger(__name__)


class ModelNotAvailableError(FileNotFoundError):
    """The requested checkpoint is neither a local directory nor in the Hugging Face cache."""


# Built-in configs for "random:NAME": transformers CLIPConfig keyword arguments, or SiglipConfig ones
# where family="siglip".
RANDOM_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        projection_dim=32,
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        text_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=1000, max_position_embeddings=16),
    ),
    "vit-b-32": dict(
        projection_dim=512,
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=32),
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
    ),
    "siglip-tiny": dict(
        family="siglip",
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        text_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=1000, max_position_embeddings=16, projection_size=64),
    ),
    "siglip-b-16": dict(
        family="siglip",
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=16),
        text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                         vocab_size=32000, max_position_embeddings=64, projection_size=768),
    ),
    "vit-l-14": dict(
        projection_dim=768,
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=224, patch_size=14),
        text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    ),
}


def _offline() -> bool:
    import huggingface_hub.constants

    env = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
    return bool(huggingface_hub.constants.HF_HUB_OFFLINE) or env.upper() in {"1", "ON", "YES", "TRUE"}


def _not_available(spec: str, cause: Exception | None = None) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"cannot load {spec!r}: it is not a local directory and not in the Hugging Face cache"
        + (" (offline mode is on)" if _offline() else " (and the hub could not be reached)")
        + f". To make it available, run `huggingface-cli download {spec}` on a machine with network access "
        "and copy its cache (~/.cache/huggingface) here, or save the model with "
        "`CLIPModel.from_pretrained(...).save_pretrained(DIR)` and pass DIR. "
        "Without any download, 'random:tiny' gives a small random CLIP."
        + (f" (underlying error: {cause})" if cause else "")
    )


def _local_checkpoint(name: str) -> Path | None:
    """The checkpoint directory ``name`` points to, or None when ``name`` is a hub id."""
    from sith_lens.atomic import recover_directory

    path = Path(name).expanduser()
    if recover_directory(path):
        logger.warning("%s: restored the previous checkpoint that an interrupted write had moved aside", path)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{name!r} is not a checkpoint directory (no config.json in it); "
                "write one with model.save_pretrained(DIR)"
            )
        return path
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
        raise ModelNotAvailableError(
            f"{name!r} is neither an existing directory nor a Hugging Face id of the form 'org/name'"
        )
    return None


def toy_checkpoint_dir() -> Path:
    """The directory of the toy CLIP shipped as package data (an ordinary HF checkpoint directory).

    Example:
        >>> from transformers import CLIPModel
        >>> type(CLIPModel.from_pretrained(toy_checkpoint_dir())).__name__
        'CLIPModel'
    """
    from importlib.resources import files

    path = Path(str(files("sith_lens") / "assets" / "toy_clip"))
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise ModelNotAvailableError(
            f"the toy CLIP checkpoint is not in this installation ({path} has no config.json/model.safetensors). "
            "Rebuild it in a source checkout with `make toy-clip-base toy-clip` (the two seeded stages of "
            "`python -m recipes.toy_clip`, about an hour on CPU), "
            "or use 'random:tiny' for a small random CLIP"
        )
    return path


def _from_hub(cls: Any, spec: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(spec)`` from the cache first; the hub only when it is allowed."""
    try:
        return cls.from_pretrained(spec, local_files_only=True, **kwargs)
    except OSError as cached_err:
        if _offline():
            raise _not_available(spec, cached_err) from None
    try:
        return cls.from_pretrained(spec, **kwargs)
    except OSError as err:
        raise _not_available(spec, err) from None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def _from_checkpoint(cls: Any, name: str, local: Path | None, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` from the local directory, or from the hub id through ``_from_hub``."""
    return cls.from_pretrained(local, **kwargs) if local is not None else _from_hub(cls, name, **kwargs)


def _tokenizer_and_processor(
    name: str, local: Path | None, family: HFFamily, want_tokenizer: bool, want_processor: bool
) -> tuple[Any, Any]:
    """The tokenizer and image processor saved with a checkpoint; None for each one that is absent
    or not wanted (the caller passed its own)."""
    import transformers

    found = []
    for cls, files, wanted in (
        (transformers.AutoTokenizer, TOKENIZER_FILES, want_tokenizer),
        (getattr(transformers, family.processor_class), ("preprocessor_config.json",), want_processor),
    ):
        if not wanted:
            found.append(None)
            continue
        if local is not None and not any((local / f).is_file() for f in files):
            logger.info("%s has none of %s; %s not loaded", name, files, cls.__name__)
            found.append(None)
            continue
        try:
            found.append(_from_checkpoint(cls, name, local))
        except (OSError, ValueError) as err:
            logger.warning("%s: could not load its %s (%s); pass one to load_clip", name, cls.__name__, err)
            found.append(None)
    return found[0], found[1]


def _random_model(name: str) -> Any:
    import transformers

    if name not in RANDOM_CONFIGS:
        raise ValueError(f"unknown random model 'random:{name}'; choose one of {[f'random:{k}' for k in RANDOM_CONFIGS]}")
    kwargs = dict(RANDOM_CONFIGS[name])
    family = HF_FAMILIES[kwargs.pop("family", "clip")]
    config = getattr(transformers, family.model_class.replace("Model", "Config"))(**kwargs)
    with torch.random.fork_rng():  # seeded, without touching the caller's random state
        torch.manual_seed(0)
        return family.model_cls()(config).eval()


def load_clip(
    spec: str | os.PathLike | Any,
    *,
    tokenizer: Any = None,
    image_processor: Any = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> HookedCLIP:
    """Load a CLIP-family model (CLIP, SigLIP, OpenCLIP) as a ``HookedCLIP`` with TransformerLens
    hooks on both towers.

    Args:
        spec: ``"toy"``, ``"random:tiny"``, a Hugging Face id, a local directory, a transformers
            ``CLIPModel`` / ``SiglipModel`` instance, ``"open_clip:ARCH/PRETRAINED"`` or an open_clip
            model, a ``HookedCLIP`` (see the module docstring), or a TransformerLens 3
            ``TransformerBridge`` over a CLIP/SigLIP vision tower (``adapters.bridge.from_bridge``).
        tokenizer: overrides the tokenizer found next to the checkpoint (needed for instances).
        image_processor: overrides the image processor found next to the checkpoint.
        device: where to put the towers (default: where the weights are, CPU for files).
        dtype: parameter dtype (default: the checkpoint's).

    Raises:
        ModelNotAvailableError: the id is neither local nor cached and the hub is unreachable
            or offline mode is on; the message says how to make it available.
        ValueError: the spec or checkpoint is not a supported model, or its weight files are
            missing, corrupt or do not fit its config.
        ImportError: an OpenCLIP spec without the ``[open-clip]`` extra installed.

    Example:
        >>> model = load_clip("random:tiny")
        >>> model.vision.cfg.n_layers, model.vision.cfg.n_heads
        (2, 4)
    """
    if isinstance(spec, HookedCLIP):
        model = spec
    elif type(spec).__name__ == "TransformerBridge":
        from sith_lens.adapters.bridge import from_bridge

        model = from_bridge(spec)
    elif _is_open_clip(spec):
        from sith_lens.adapters.openclip import load_open_clip

        model = load_open_clip(spec, tokenizer=tokenizer, image_processor=image_processor)
    else:
        hf_model, name, found_tok, found_proc, local = _hf_clip_from_spec(
            spec, want_tokenizer=tokenizer is None, want_processor=image_processor is None
        )
        family = hf_family(hf_model.config.model_type, name)
        vision, text = towers_from_hf(hf_model, model_name=name)
        bias = getattr(hf_model, "logit_bias", None)
        model = HookedCLIP(
            vision,
            text,
            CLIPInfo(model_name=name, family=family.name, d_proj=vision.cfg.d_proj),
            logit_scale=float(hf_model.logit_scale.detach().reshape(())),
            logit_bias=0.0 if bias is None else float(bias.detach().reshape(())),
            tokenizer=found_tok if tokenizer is None else tokenizer,
            image_processor=found_proc if image_processor is None else image_processor,
            hf_config=hf_model.config,
        ).eval()
        if model.image_processor is None:
            model.image_processor = family.default_processor(vision.cfg.image_size)
        model.image_mean = _saved_image_mean(local, vision.cfg.d_proj)
    _check_finite_weights(model)
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def _check_finite_weights(model: HookedCLIP) -> None:
    """Refuse a model with NaN or infinite weights: every activation and explanation would be NaN."""
    from sith_lens.checks import check_finite_tensors

    tensors = {f"{tower}.{key}": t for tower in ("vision", "text") for key, t in getattr(model, tower).state_dict().items()}
    check_finite_tensors(tensors, model.cfg.model_name, fix="the checkpoint is broken (a diverged training run or a "
                         "damaged file); load an earlier checkpoint or download it again")


def _is_open_clip(spec: Any) -> bool:
    if isinstance(spec, str):
        return spec.startswith("open_clip:")
    return type(spec).__module__.split(".")[0] == "open_clip"


def _hf_clip_from_spec(
    spec: Any, want_tokenizer: bool, want_processor: bool
) -> tuple[Any, str, Any, Any, Path | None]:
    """``(transformers model, name, tokenizer or None, image processor or None, local directory or
    None)`` for any accepted spec; the tokenizer and processor are looked for next to a checkpoint
    only when wanted."""
    from transformers import PreTrainedModel

    if isinstance(spec, PreTrainedModel):
        name = getattr(spec.config, "_name_or_path", "") or "custom"
        family = hf_family(spec.config.model_type, name)
        if not isinstance(spec, family.model_cls()):
            raise ValueError(
                f"load_clip takes a whole {family.model_class} (both towers), got {type(spec).__name__}; "
                f"load it with {family.model_class}.from_pretrained(...)"
            )
        return spec, name, None, None, None
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(
            f"load_clip takes a name, a directory, a transformers CLIPModel/SiglipModel or an open_clip model, "
            f"got {type(spec).__name__}"
        )
    name = str(spec)
    if not name.strip():
        raise ValueError("load_clip needs a model spec, got an empty string; try 'toy' or 'random:tiny'")
    if name.startswith("random:"):
        return _random_model(name.split(":", 1)[1]), name, None, None, None
    local = toy_checkpoint_dir() if name == "toy" else _local_checkpoint(name)
    hf_model = _load_hf_model(name, local)  # first: it rejects unsupported checkpoints
    family = hf_family(hf_model.config.model_type, name)
    return (hf_model, name, *_tokenizer_and_processor(name, local, family, want_tokenizer, want_processor), local)


IMAGE_MEAN_FILE = "image_mean.safetensors"


def _saved_image_mean(local: Path | None, d_proj: int) -> torch.Tensor | None:
    """The mean normalised image embedding saved next to a checkpoint (``image_mean.safetensors``,
    key ``image_mean``, as the toy CLIP ships it), or None."""
    if local is None or not (local / IMAGE_MEAN_FILE).is_file():
        return None
    from safetensors.torch import load_file

    try:
        mean = load_file(str(local / IMAGE_MEAN_FILE))["image_mean"].float()
    except Exception as err:
        logger.warning("ignoring %s (%s)", local / IMAGE_MEAN_FILE, err)
        return None
    if mean.shape != (d_proj,):
        logger.warning("ignoring %s: shape %s, expected (%d,)", local / IMAGE_MEAN_FILE, tuple(mean.shape), d_proj)
        return None
    return mean


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _load_hf_model(name: str, local: Path | None) -> Any:
    """The transformers model of a supported family, with every weight read from the checkpoint.

    A missing, truncated or incomplete weight file is a ``ValueError`` (transformers would fill a
    missing tensor with random values and only log it); nothing is returned half-loaded.
    """
    from transformers import AutoConfig

    try:
        config = _from_checkpoint(AutoConfig, name, local)
    except ValueError as err:  # config.json without a usable model_type
        raise ValueError(f"{name!r}: its config.json is not a transformers model config ({err})") from None
    except OSError as err:
        if local is None:
            raise
        raise ValueError(f"{name!r}: cannot read its config.json ({' '.join(str(err).split())}); restore the "
                         "config.json that came with the weights, or save the model again") from None
    family = hf_family(config.model_type, name)
    where = str(local) if local is not None else f"the cached files of {name!r}"
    if local is not None and not any((local / f).is_file() for f in WEIGHT_FILES):
        raise ValueError(
            f"{local} has a config.json but no weights (none of {', '.join(WEIGHT_FILES)}); copy the "
            f"weight file next to it, or write the folder again with model.save_pretrained(DIR)"
        )
    try:
        hf_model, info = _from_checkpoint(family.model_cls(), name, local, output_loading_info=True)
    except ModelNotAvailableError:
        raise
    except Exception as err:  # safetensors' own error type, torch's unpickling errors, OSError
        if "mismatched" in str(err):
            raise ValueError(
                f"the weights in {where} have other shapes than its config.json says; the config was "
                "edited or belongs to another model. Restore the config that came with the weights"
            ) from None
        raise ValueError(
            f"cannot read the weights in {where}: {type(err).__name__}: {err}. The file is probably "
            "truncated or corrupt (an interrupted download or copy); download or copy it again"
        ) from None
    _check_weight_dtypes(local, where)
    info = dict(info)
    info["unexpected_keys"] = [k for k in info.get("unexpected_keys", []) if not _rebuilt_buffer(k)]
    problems = {k: sorted(v) for k, v in info.items()
                if k in ("missing_keys", "mismatched_keys", "unexpected_keys") and v}
    if problems:
        detail = "; ".join(f"{k.replace('_', ' ')}: {len(v)}, e.g. {v[:3]}" for k, v in problems.items())
        raise ValueError(
            f"the weights in {where} do not fit its config ({detail}); the weight file is incomplete, has "
            f"more layers or parts than config.json describes, or belongs to another model. Restore the "
            f"config.json that came with the weights, or save the model again"
        )
    return hf_model.eval()


def _rebuilt_buffer(key: str) -> bool:
    """A buffer older transformers versions saved (integer position ids) and newer ones rebuild."""
    return key.endswith("position_ids")


def _check_weight_dtypes(local: Path | None, where: str) -> None:
    """Refuse integer or boolean weight tensors in a local safetensors checkpoint (transformers casts
    them silently, and a model of rounded weights computes nothing meaningful)."""
    if local is None:
        return
    from safetensors import safe_open

    files = sorted(local.glob("*.safetensors"))
    files = [f for f in files if f.name != IMAGE_MEAN_FILE]
    bad = []
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                dtype = f.get_slice(key).get_dtype()
                if not dtype.startswith(("F", "BF")) and not _rebuilt_buffer(key):
                    bad.append(f"{key} ({dtype})")
    if bad:
        raise ValueError(
            f"the weights in {where} include {len(bad)} non-floating tensors, e.g. {bad[:3]}; a CLIP's "
            "weights are floating point. The file was written wrongly (cast back with .float() before "
            "save_pretrained) or belongs to something else"
        )

