"""LUCID as a SAELens SAE: ``LucidSAE`` (architecture ``"lucid"``) and its per-modality views.

One latent index space serves both modalities (``sith_lens.lucid.sparse``): the shared block,
whose decoder rows are common to image patches and text tokens, then a private block per modality.
Each modality has its own encoder, its own decoder bias (its centre) and its own input scale; its
codes are zero on the other modality's private block.

Internally every modality is encoded in normalised units, ``x / scale``. The views expose the
equivalent raw-unit weights, so that SAELens's formulas hold for them exactly:
``pre = (x - b_dec) @ W_enc + b_enc`` and ``x_hat = codes @ W_dec + b_dec``.

Example:
    >>> from sae_lens import SAE
    >>> sae = SAE.load_from_disk("runs/lucid/final")        # a LucidSAE, once sith_lens is imported
    >>> codes = sae.vision.encode(patch_acts)               # [..., d_sae]
    >>> recon = sae.text(token_acts)                        # encode + decode
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any

import torch
from jaxtyping import Float
from sae_lens import SAE, SAEConfig
from sae_lens.registry import SAE_CLASS_REGISTRY
from sae_lens.saes.sae import SAEMetadata, _disable_hooks
from torch import Tensor, nn

from sith_lens.checks import check_finite_fields, check_finite_tensors
from sith_lens.lucid.sparse import MODALITIES, block_topk, check_modality, visible_latents

ARCHITECTURE = "lucid"
#: The per-modality tensors of a LUCID SAE, besides the shared ``W_dec``.
MODALITY_TENSORS = ("W_enc", "b_enc", "b_dec", "scale")


def check_lucid_shape(cfg: Any) -> None:
    """Validate the block sizes and Top-K budgets of a LUCID config (inference or training)."""
    check_finite_fields(cfg, "invalid LUCID config")
    problems = []
    n_shared = cfg.n_shared
    if min(cfg.d_in, cfg.n_private_vision, cfg.n_private_text) < 0 or cfg.d_in == 0:
        problems.append("d_in must be positive and private sizes >= 0")
    if n_shared < 1:
        problems.append(f"d_sae={cfg.d_sae} leaves no shared latent after the private blocks "
                        f"({cfg.n_private_vision} + {cfg.n_private_text})")
    elif not 1 <= cfg.k_shared <= n_shared:
        problems.append(f"k_shared={cfg.k_shared} must be between 1 and the {n_shared} shared latents")
    if cfg.k_private < 0 or (cfg.k_private > min(cfg.n_private_vision, cfg.n_private_text)
                             and min(cfg.n_private_vision, cfg.n_private_text) > 0):
        problems.append(f"k_private={cfg.k_private} must be between 0 and the smaller private block")
    if cfg.normalize_activations != "none" or cfg.reshape_activations != "none" or not cfg.apply_b_dec_to_input:
        problems.append("LUCID normalises each modality itself: keep normalize_activations='none', "
                        "reshape_activations='none', apply_b_dec_to_input=True")
    if problems:
        raise ValueError("invalid LUCID config: " + "; ".join(problems))


class LucidShape:
    """What LUCID's inference and training configs share besides their fields."""

    d_sae: int
    n_private_vision: int
    n_private_text: int

    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE

    @property
    def n_shared(self) -> int:
        """Latents in the shared block."""
        return self.d_sae - self.n_private_vision - self.n_private_text


@dataclass
class LucidSAEConfig(LucidShape, SAEConfig):
    """A LUCID SAE's shape. ``d_sae`` counts every latent: shared, vision-private, text-private.

    ``metadata`` carries ``hook_name_vision`` and ``hook_name_text`` (``"hook_joint_tokens"`` for the
    joint-space token outputs), ``model_name`` and the input space.
    """

    #: Latents only image patches use (the block after the shared one).
    n_private_vision: int = 0
    #: Latents only text tokens use (the last block).
    n_private_text: int = 0
    #: Top-K budget of the shared block, per token.
    k_shared: int = 16
    #: Top-K budget of a modality's private block, per token.
    k_private: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_lucid_shape(self)


class LucidWeights(nn.Module):
    """The parameters and maths LucidSAE and TrainingLucidSAE share (a mixin: the SAE base class
    calls ``initialize_weights``)."""

    cfg: Any

    def _init_lucid_weights(self) -> None:
        cfg = self.cfg
        kwargs = {"dtype": self.dtype, "device": self.device}
        decoder = torch.empty(cfg.d_sae, cfg.d_in, **kwargs)
        nn.init.kaiming_uniform_(decoder)
        decoder /= decoder.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        self.W_dec = nn.Parameter(decoder)
        for modality in MODALITIES:
            visible = self.visible(modality)
            setattr(self, f"W_enc_{modality}", nn.Parameter(decoder[visible].T.clone().contiguous()))
            setattr(self, f"b_enc_{modality}", nn.Parameter(torch.zeros(len(visible), **kwargs)))
            setattr(self, f"b_dec_{modality}", nn.Parameter(torch.zeros(cfg.d_in, **kwargs)))
            self.register_buffer(f"scale_{modality}", torch.ones((), **kwargs))

    def visible(self, modality: str) -> Tensor:
        """Latent indices ``modality`` uses (``sith_lens.lucid.sparse.visible_latents``)."""
        cfg = self.cfg
        return visible_latents(modality, cfg.n_shared, cfg.n_private_vision, cfg.n_private_text).to(self.W_dec.device)

    def modality_weights(self, modality: str) -> dict[str, Tensor]:
        """A modality's ``W_enc`` [d_in, n_visible], ``b_enc``, ``b_dec`` (normalised units) and ``scale``."""
        return {name: getattr(self, f"{name}_{modality}") for name in MODALITY_TENSORS}

    def _check_input(self, x: Tensor, modality: str) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"LUCID takes floating-point activations [..., {self.cfg.d_in}], got "
                            f"{type(x).__name__ if not isinstance(x, Tensor) else x.dtype}")
        if x.shape[-1] != self.cfg.d_in:
            hook = self.cfg.metadata.get(f"hook_name_{modality}")
            raise ValueError(
                f"this LUCID SAE takes {modality} activations of width d_in={self.cfg.d_in} (hook {hook!r}), "
                f"got {list(x.shape)}; collect them at that hook of the model it was trained on"
            )

    def visible_pre_activations(self, x: Float[Tensor, "... d_in"], modality: str) -> Float[Tensor, "... n_visible"]:
        """Pre-activations of the latents ``modality`` uses (``visible``: the shared block, then its
        private block), from raw activations, with no input checks and no hook points of its own."""
        w = self.modality_weights(modality)
        return (x / w["scale"] - w["b_dec"]) @ w["W_enc"] + w["b_enc"]

    def encode_normalized(
        self, x: Float[Tensor, "... d_in"], modality: str, hooks: nn.Module
    ) -> tuple[Float[Tensor, "... d_sae"], Float[Tensor, "... d_sae"]]:
        """Codes and pre-activations (full latent width) of raw activations ``x``; ``hooks`` is the
        module whose ``hook_sae_*`` points see the tensors."""
        modality = check_modality(modality)
        self._check_input(x, modality)
        cfg = self.cfg
        visible = self.visible(modality)
        pre_visible = self.visible_pre_activations(hooks.hook_sae_input(x.to(self.W_dec.dtype)), modality)
        pre = pre_visible.new_zeros(*pre_visible.shape[:-1], cfg.d_sae).index_copy(-1, visible, pre_visible)
        pre = hooks.hook_sae_acts_pre(pre)
        codes_visible = block_topk(pre.index_select(-1, visible), cfg.n_shared, cfg.k_shared, cfg.k_private)
        codes = torch.zeros_like(pre).index_copy(-1, visible, codes_visible)
        return hooks.hook_sae_acts_post(codes), pre

    def decode_normalized(self, codes: Float[Tensor, "... d_sae"], modality: str, hooks: nn.Module) -> Float[Tensor, "... d_in"]:
        """Raw-unit reconstruction ``scale * (codes @ W_dec + b_dec)``."""
        modality = check_modality(modality)
        if codes.shape[-1] != self.cfg.d_sae:
            raise ValueError(f"codes must have d_sae={self.cfg.d_sae} entries on the last axis, got {list(codes.shape)}")
        w = self.modality_weights(modality)
        recons = (codes.to(self.W_dec.dtype) @ self.W_dec + w["b_dec"]) * w["scale"]
        return hooks.hook_sae_recons(recons)

    def raw_weights(self, modality: str) -> dict[str, Tensor]:
        """The modality's weights in raw units, full latent width, in SAELens's convention:
        ``W_enc`` [d_in, d_sae] (zero columns for the other modality's private block), ``b_enc``,
        ``W_dec`` [d_sae, d_in], ``b_dec`` [d_in]."""
        w = self.modality_weights(check_modality(modality))
        visible = self.visible(modality)
        W_enc = w["W_enc"].new_zeros(self.cfg.d_in, self.cfg.d_sae).index_copy(1, visible, w["W_enc"] / w["scale"])
        b_enc = w["b_enc"].new_zeros(self.cfg.d_sae).index_copy(0, visible, w["b_enc"])
        return {"W_enc": W_enc, "b_enc": b_enc, "W_dec": self.W_dec * w["scale"], "b_dec": w["b_dec"] * w["scale"]}

    @torch.no_grad()
    def fold_W_dec_norm(self) -> None:
        """Rescale decoder rows to unit norm and fold their norms into the encoders (codes and
        reconstructions are unchanged)."""
        norms = self.W_dec.norm(dim=-1).clamp_min(1e-12)
        for modality in MODALITIES:
            visible = self.visible(modality)
            getattr(self, f"W_enc_{modality}").mul_(norms[visible])
            getattr(self, f"b_enc_{modality}").mul_(norms[visible])
        self.W_dec.div_(norms[:, None])

    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        raise NotImplementedError("LUCID scales each modality itself (scale_vision, scale_text); "
                                  "train it with normalize_activations='none'")

    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        """Check the file's tensors against this config before loading, with a message that says what differs."""
        expected = {name: tuple(t.shape) for name, t in self.state_dict().items()}
        found = {name: tuple(t.shape) for name, t in state_dict.items()}
        if expected != found:
            missing = sorted(set(expected) - set(found))
            extra = sorted(set(found) - set(expected))
            wrong = sorted(n for n in set(expected) & set(found) if expected[n] != found[n])
            raise ValueError(
                "LUCID weights do not match cfg.json: "
                + "; ".join(p for p in (
                    f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else "",
                    ", ".join(f"{n} is {found[n]}, expected {expected[n]}" for n in wrong),
                ) if p)
                + ". The file is corrupt or belongs to another SAE; save it again with save_model"
            )
        check_finite_tensors(state_dict, "LUCID weights", fix="the SAE is broken (a diverged training run or a "
                             "damaged file); train it again or load an earlier checkpoint")

    def view(self, modality: str) -> LucidView:
        """The SAELens SAE that encodes and decodes one modality (cached; shares these weights)."""
        modality = check_modality(modality)
        views = self.__dict__.setdefault("_views", {})
        if modality not in views:
            views[modality] = LucidView(self, modality)
        return views[modality]

    @property
    def vision(self) -> LucidView:
        """The image-patch view: a SAELens SAE with ``encode``/``decode``/``forward`` on patch activations."""
        return self.view("vision")

    @property
    def text(self) -> LucidView:
        """The text-token view."""
        return self.view("text")


def _modality_required(name: str) -> ValueError:
    return ValueError(
        f"a LUCID SAE serves two modalities; call sae.vision.{name}(x) / sae.text.{name}(x), "
        f"or sae.{name}(x, modality='vision' | 'text')"
    )


class LucidSAE(LucidWeights, SAE[LucidSAEConfig]):
    """The inference LUCID SAE, registered with SAELens as ``"lucid"``.

    ``encode``, ``decode`` and ``forward`` take ``modality="vision" | "text"``; the views
    ``sae.vision`` and ``sae.text`` are one-modality SAEs for splicing into a tower.

    Example:
        >>> sae = LucidSAE(LucidSAEConfig(d_in=128, d_sae=512, n_private_vision=64, n_private_text=64))
        >>> codes = sae.encode(torch.randn(10, 128), modality="vision")    # [10, 512]
    """

    def __init__(self, cfg: LucidSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)

    def initialize_weights(self) -> None:
        self._init_lucid_weights()

    def get_activation_fn(self):
        return nn.Identity()  # block Top-K is applied in encode_normalized

    def encode(self, x: Float[Tensor, "... d_in"], modality: str | None = None) -> Float[Tensor, "... d_sae"]:
        """Codes of raw ``modality`` activations."""
        if modality is None:
            raise _modality_required("encode")
        return self.encode_normalized(x, modality, self)[0]

    def decode(self, feature_acts: Float[Tensor, "... d_sae"], modality: str | None = None) -> Float[Tensor, "... d_in"]:
        """Raw-unit reconstruction of ``modality`` from codes."""
        if modality is None:
            raise _modality_required("decode")
        return self.decode_normalized(feature_acts, modality, self)

    def forward(self, x: Float[Tensor, "... d_in"], modality: str | None = None) -> Float[Tensor, "... d_in"]:
        """Reconstruction of ``x`` (plus the error term when ``use_error_term``)."""
        if modality is None:
            raise _modality_required("forward")
        sae_out = self.decode(self.encode(x, modality), modality)
        if self.use_error_term:
            with torch.no_grad(), _disable_hooks(self):
                clean = self.decode(self.encode(x, modality), modality)
            sae_out = sae_out + self.hook_sae_error(x - clean)
        return self.hook_sae_output(sae_out)


@dataclass
class LucidViewConfig(LucidSAEConfig):
    """The config of one modality's view: its parent's, with ``modality`` set and
    ``metadata.hook_name`` set to that modality's hook."""

    modality: str = "vision"


class LucidView(SAE[LucidViewConfig]):
    """One modality of a LUCID SAE as an ordinary SAELens SAE, for splicing into a tower.

    It holds no weights: ``W_enc``, ``b_enc``, ``W_dec`` and ``b_dec`` are the parent's, in raw
    units and full latent width, so ``encode(x) == block_topk((x - b_dec) @ W_enc + b_enc)`` and
    ``decode(z) == z @ W_dec + b_dec``. It has its own hook points, so a vision view and a text
    view spliced into two towers cache under their own names. Move or train the parent, not the view.
    """

    def __init__(self, parent: LucidWeights, modality: str):
        base = {f.name: getattr(parent.cfg, f.name) for f in fields(LucidSAEConfig) if f.name != "metadata"}
        metadata = SAEMetadata(**copy.deepcopy(parent.cfg.metadata.to_dict()))
        metadata.hook_name = metadata.get(f"hook_name_{modality}")
        cfg = LucidViewConfig(**base, modality=modality, metadata=metadata)
        object.__setattr__(self, "_parent", parent)  # not a submodule: the parent owns the weights
        super().__init__(cfg)
        self.modality = modality

    def initialize_weights(self) -> None:
        pass

    def get_activation_fn(self):
        return nn.Identity()

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return self._parent.encode_normalized(x, self.modality, self)[0]

    def decode(self, feature_acts: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        return self._parent.decode_normalized(feature_acts, self.modality, self)

    @property
    def W_enc(self) -> Tensor:
        return self._parent.raw_weights(self.modality)["W_enc"]

    @property
    def b_enc(self) -> Tensor:
        return self._parent.raw_weights(self.modality)["b_enc"]

    @property
    def W_dec(self) -> Tensor:
        return self._parent.raw_weights(self.modality)["W_dec"]

    @property
    def b_dec(self) -> Tensor:
        return self._parent.raw_weights(self.modality)["b_dec"]

    def save_model(self, path: Any) -> Any:
        raise TypeError("a LUCID view has no weights of its own; save the LucidSAE it comes from (sae.save_model)")


def register_in(registry: dict[str, Any], entry: tuple[type, type]) -> None:
    """Put ``entry`` under ``"lucid"`` in a SAELens registry; the same classes from a re-imported
    module replace the old ones, anything else registered under that name is a clash."""
    current = registry.get(ARCHITECTURE)
    if current is not None and current != entry and current[0].__module__ != entry[0].__module__:
        raise ValueError(f"SAELens architecture {ARCHITECTURE!r} is already registered by "
                         f"{current[0].__module__}.{current[0].__name__}")
    registry[ARCHITECTURE] = entry


def register_inference() -> None:
    """Register ``LucidSAE`` with SAELens (idempotent)."""
    register_in(SAE_CLASS_REGISTRY, (LucidSAE, LucidSAEConfig))


register_inference()
# The training classes register when their module is imported, and the packaged release when
# lucid_release's register_release runs; both are done here so that loading this module sets up
# everything. They come last, after every name above exists.
from . import lucid_training  # noqa: E402,F401
from .lucid_release import register_release  # noqa: E402

register_release()
