"""LUCID for inference, as SAELens SAEs.

``LucidView`` (architecture ``"lucid_view"``) is one modality of a LUCID SAE and an ordinary
SAELens SAE: it owns ``W_enc`` [d_in, d_sae], ``b_enc``, ``W_dec`` [d_sae, d_in] and ``b_dec`` in
the raw units of its tower's activations, with ``encode(x) = BlockTopK((x - b_dec) W_enc + b_enc)``
and ``decode(z) = z W_dec + b_dec``, and ``cfg.metadata.hook_name`` set to its tower's hook.
Block Top-K keeps ``k_shared`` latents of the shared block and ``k_private`` of the view's own
private block; the other modality's private block never fires (its encoder columns are zero).

``LucidSAE`` (architecture ``"lucid"``) is the pair: ``sae.vision`` and ``sae.text`` are its
submodules and hold all its weights (``vision.W_enc``, ...). The shared block means the same thing
in both: a shared latent's decoder rows point the same way in the two views (they differ by the
modality's scale). What a one-modality SAE does, the parent does with ``modality=``, or refuses
with a message naming the view to use (``LucidModalityError``); see ``LucidSAE``.

Example:
    >>> import torch
    >>> cfg = LucidSAEConfig(d_in=16, d_sae=64, n_private_vision=8, n_private_text=8, k_shared=4, k_private=1)
    >>> sae = LucidSAE(cfg)
    >>> sae.vision.encode(torch.randn(3, 16)).count_nonzero(-1).tolist()
    [5, 5, 5]
    >>> torch.allclose(sae.text.decode(z := sae.text.encode(x := torch.randn(3, 16))), z @ sae.text.W_dec + sae.text.b_dec)
    True
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from jaxtyping import Float
from sae_lens import SAE
from sae_lens.saes.sae import SAEMetadata
from torch import Tensor, nn

from ..sparse import MODALITIES, block_topk, check_modality, latent_slices
from .config import LucidSAEConfig, LucidShape, LucidViewConfig
from .layout import check_state_dict, is_normalized_state_dict, raw_state_dict

class LucidModalityError(ValueError):
    """An operation of a one-modality SAE asked of the two-modality ``LucidSAE``."""

    def __init__(self, what: str, use: str, or_modality: bool = False):
        tail = ", or pass modality='vision' | 'text'" if or_modality else ""
        super().__init__(f"a LUCID SAE has one {what} per modality; use sae.vision{use} or sae.text{use} "
                         f"(each an ordinary SAELens SAE){tail}")


class BlockTopK(nn.Module):
    """LUCID's activation for one modality: ReLU Top-K with a budget per block (shared, own
    private); the other modality's private block stays zero."""

    def __init__(self, cfg: LucidShape, modality: str):
        super().__init__()
        self.n_shared, self.k_shared, self.k_private = cfg.n_shared, cfg.k_shared, cfg.k_private
        self.private = latent_slices(cfg.n_shared, cfg.n_private_vision, cfg.n_private_text)[check_modality(modality)]

    def forward(self, pre: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
        visible = torch.cat([pre[..., : self.n_shared], pre[..., self.private]], -1)
        codes_visible = block_topk(visible, self.n_shared, self.k_shared, self.k_private)
        codes = torch.zeros_like(pre)
        codes[..., : self.n_shared] = codes_visible[..., : self.n_shared]
        codes[..., self.private] = codes_visible[..., self.n_shared :]
        return codes


def _check_activations(x: Any, cfg: Any, modality: str, hook: str | None) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"LUCID takes floating-point activations [..., {cfg.d_in}], got "
                        f"{type(x).__name__ if not isinstance(x, Tensor) else x.dtype}")
    if x.shape[-1] != cfg.d_in:
        raise ValueError(f"this LUCID SAE takes {modality} activations of width d_in={cfg.d_in} (hook {hook!r}), "
                         f"got {list(x.shape)}; collect them at that hook of the model it was trained on")


class LucidView(SAE[LucidViewConfig]):
    """One modality of a LUCID SAE: an ordinary SAELens SAE on that tower's activations.

    Example:
        >>> import sith_lens
        >>> sae = SAE.from_pretrained("sith-lens-toy-lucid", "final/vision")   # or LucidSAE(...).vision
        >>> patch_acts = torch.randn(2, 64, sae.cfg.d_in)
        >>> codes = sae.encode(patch_acts)                                     # [..., d_sae]
        >>> torch.allclose(codes @ sae.W_dec + sae.b_dec, sae.decode(codes), atol=1e-5)
        True
    """

    b_enc: nn.Parameter

    def __init__(self, cfg: LucidViewConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)

    @property
    def modality(self) -> str:
        return self.cfg.modality

    def initialize_weights(self) -> None:
        super().initialize_weights()
        cfg = self.cfg
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=self.dtype, device=self.device))
        other = latent_slices(cfg.n_shared, cfg.n_private_vision, cfg.n_private_text)[
            "text" if cfg.modality == "vision" else "vision"]
        with torch.no_grad():
            self.W_enc[:, other] = 0  # that block belongs to the other modality: it never fires here

    def get_activation_fn(self) -> nn.Module:
        return BlockTopK(self.cfg, self.cfg.modality)

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Codes of raw activations: ``BlockTopK((x - b_dec) @ W_enc + b_enc)``."""
        _check_activations(x, self.cfg, self.modality, self.cfg.metadata.hook_name)
        sae_in = self.process_sae_in(x)
        hidden_pre = self.hook_sae_acts_pre(sae_in @ self.W_enc + self.b_enc)
        return self.hook_sae_acts_post(self.activation_fn(hidden_pre))

    def decode(self, feature_acts: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        """Raw-unit reconstruction ``feature_acts @ W_dec + b_dec``."""
        if not isinstance(feature_acts, Tensor) or feature_acts.shape[-1] != self.cfg.d_sae:
            shape = list(feature_acts.shape) if isinstance(feature_acts, Tensor) else type(feature_acts).__name__
            raise ValueError(f"codes must have d_sae={self.cfg.d_sae} entries on the last axis, got {shape}")
        return self.hook_sae_recons(feature_acts @ self.W_dec + self.b_dec)

    @torch.no_grad()
    def fold_W_dec_norm(self) -> None:
        """Fold decoder norms into the encoder, as SAELens does, when that cannot change the codes
        (``check_foldable``)."""
        self.check_foldable()
        self.fold_and_get_W_dec_norm()

    @torch.no_grad()
    def check_foldable(self) -> None:
        """Folding scales latent i's pre-activation by its decoder norm, so Top-K could pick other
        latents if the norms differ within a block; like SAELens's TopK SAE, the fold is then
        refused. A trained LUCID view has one norm for all its rows (its modality's scale)."""
        norms = self.W_dec.norm(dim=-1)
        cfg = self.cfg
        blocks = latent_slices(cfg.n_shared, cfg.n_private_vision, cfg.n_private_text)
        for block in ("shared", self.modality):
            part = norms[blocks[block]]
            if len(part) and not torch.allclose(part, part[:1].expand_as(part), rtol=1e-4):
                raise NotImplementedError(
                    f"folding W_dec norms is not safe for this LUCID view: its {block} block's decoder rows have "
                    f"norms from {float(part.min()):.4g} to {float(part.max()):.4g}, so Top-K would pick other "
                    "latents (SAELens's TopK SAE refuses for the same reason); a trained view has one norm")

    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        check_state_dict(self, state_dict, f"LUCID {self.modality} view")

    def get_name(self) -> str:
        meta = self.cfg.metadata
        return f"sae_{meta.model_name}_lucid_{self.modality}_{meta.hook_name}_{self.cfg.d_sae}"


def view_config(cfg: LucidSAEConfig, modality: str) -> LucidViewConfig:
    """The config of ``modality``'s view of a LUCID SAE with ``cfg``."""
    metadata = {k: v for k, v in copy.deepcopy(cfg.metadata.to_dict()).items() if k != "hook_name"}
    metadata["hook_name"] = metadata.get(f"hook_name_{modality}")
    for key in ("variance_explained", "l0"):  # the view's own measured figures, if recorded
        if f"{key}_{modality}" in metadata:
            metadata[key] = metadata[f"{key}_{modality}"]
    return LucidViewConfig(**cfg.shape_fields(), dtype=cfg.dtype, device=cfg.device, modality=modality,
                           metadata=SAEMetadata(**metadata))


class LucidMetadata(SAEMetadata):
    """A LUCID SAE's metadata: two hooks (``hook_name_vision``, ``hook_name_text``), so reading
    ``hook_name`` refuses instead of giving None, which SAELens code would take as "attach nowhere".
    What is set here is passed on to the views (``hook_name_vision`` becomes the vision view's
    ``hook_name``)."""

    __slots__ = ("_on_set",)  # not in __dict__, so never saved

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        on_set = getattr(self, "_on_set", None)
        if on_set is not None and name != "_on_set":
            on_set(name, value)

    @property
    def hook_name(self) -> str:
        raise LucidModalityError("hook (hook_name_vision, hook_name_text)", ".cfg.metadata.hook_name")

    def __deepcopy__(self, memo: dict[int, Any]) -> LucidMetadata:
        return LucidMetadata(**copy.deepcopy(self.__dict__, memo))


def lucid_metadata(metadata: SAEMetadata) -> LucidMetadata:
    return metadata if isinstance(metadata, LucidMetadata) else LucidMetadata(
        **{k: v for k, v in metadata.to_dict().items() if k != "hook_name"})


class LucidSAE(SAE[LucidSAEConfig]):
    """The two-modality LUCID SAE: ``sae.vision`` and ``sae.text`` (``LucidView``) hold its weights.

    The generic SAE behaviours, on the parent:

    - ``encode``/``decode``/``forward`` take ``modality="vision" | "text"`` and run that view;
      without it they raise ``LucidModalityError``, naming the views;
    - ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``, ``cfg.metadata.hook_name``, ``get_W_dec_norm`` and
      ``fold_activation_norm_scaling_factor`` differ per modality: they raise ``LucidModalityError``;
    - ``.to(...)``, ``fold_W_dec_norm()`` and ``use_error_term`` apply to both views (after a fold
      each view's decoder rows have unit norm in its own raw units; each modality's codes are
      multiplied by its scale, reconstructions are unchanged; see ``LucidView.fold_W_dec_norm``);
    - ``save_model``/``load_from_disk``/``from_pretrained`` round-trip both views;
    - splicing into a sith-lens tower (``model.vision.add_sae(sae)``) splices the tower's view.

    Example:
        >>> sae = LucidSAE(LucidSAEConfig(d_in=128, d_sae=1024))
        >>> codes = sae.encode(torch.randn(10, 128), modality="vision")    # == sae.vision.encode(...)
    """

    vision: LucidView
    text: LucidView

    def __init__(self, cfg: LucidSAEConfig, use_error_term: bool = False):
        cfg.metadata = lucid_metadata(cfg.metadata)
        super().__init__(cfg, use_error_term)
        # the parent computes nothing itself: its views do, under their own hook points
        for name in [n for n in self.hook_dict if "." not in n]:
            delattr(self, name)
        self.setup()
        object.__setattr__(self.cfg.metadata, "_on_set", self._pass_metadata_on)

    def __setstate__(self, state: dict[str, Any]) -> None:  # copy.deepcopy and pickle
        super().__setstate__(state)
        object.__setattr__(self.cfg.metadata, "_on_set", self._pass_metadata_on)

    def setup(self) -> None:
        """HookedRootModule's setup, after which each view names its hook points as on its own
        (``hook_sae_acts_post``, not ``vision.hook_sae_acts_post``), so a view caches the same
        whether it came from a parent or from its own file."""
        super().setup()
        for modality in MODALITIES:
            if modality in self._modules:
                self.view(modality).setup()

    def _pass_metadata_on(self, name: str, value: Any) -> None:
        """Keep the views' metadata in step with what is set on the parent's."""
        for modality in MODALITIES:
            meta = self.view(modality).cfg.metadata
            meta[name] = value
            if name == f"hook_name_{modality}":
                meta["hook_name"] = value
            elif name in (f"variance_explained_{modality}", f"l0_{modality}"):
                meta[name.removesuffix(f"_{modality}")] = value

    def initialize_weights(self) -> None:
        for modality in MODALITIES:
            view = LucidView(view_config(self.cfg, modality))
            view._use_error_term = self._use_error_term
            setattr(self, modality, view)

    def get_activation_fn(self) -> nn.Module:
        return nn.Identity()  # each view has its own

    def view(self, modality: str) -> LucidView:
        """``sae.vision`` or ``sae.text``."""
        return getattr(self, check_modality(modality))

    @property
    def use_error_term(self) -> bool:
        return self._use_error_term

    @use_error_term.setter
    def use_error_term(self, value: bool) -> None:
        self._use_error_term = value
        for modality in MODALITIES:
            if modality in self._modules:
                self._modules[modality]._use_error_term = value  # type: ignore[union-attr]

    def encode(self, x: Float[Tensor, "... d_in"], modality: str | None = None) -> Float[Tensor, "... d_sae"]:
        """Codes of raw ``modality`` activations (``sae.vision.encode(x)`` / ``sae.text.encode(x)``)."""
        if modality is None:
            raise LucidModalityError("encoder", ".encode(x)", or_modality=True)
        return self.view(modality).encode(x)

    def decode(self, feature_acts: Float[Tensor, "... d_sae"], modality: str | None = None) -> Float[Tensor, "... d_in"]:
        """Raw-unit reconstruction of ``modality`` from codes."""
        if modality is None:
            raise LucidModalityError("decoder", ".decode(z)", or_modality=True)
        return self.view(modality).decode(feature_acts)

    def forward(self, x: Float[Tensor, "... d_in"], modality: str | None = None) -> Float[Tensor, "... d_in"]:
        """Reconstruction of ``x`` (plus the error term when ``use_error_term``)."""
        if modality is None:
            raise LucidModalityError("encoder and decoder", "(x)", or_modality=True)
        return self.view(modality)(x)

    def to(self, *args: Any, **kwargs: Any) -> LucidSAE:  # type: ignore[override]
        for modality in MODALITIES:
            self.view(modality).to(*args, **kwargs)  # keeps each view's cfg.dtype / cfg.device true
        return super().to(*args, **kwargs)

    @torch.no_grad()
    def fold_W_dec_norm(self) -> None:
        """Fold each view's decoder norms into its encoder (see the class docstring); refused,
        with neither view changed, if either view refuses."""
        for modality in MODALITIES:
            self.view(modality).check_foldable()  # raises before anything changes
        for modality in MODALITIES:
            self.view(modality).fold_W_dec_norm()

    def fold_and_get_W_dec_norm(self) -> Tensor:
        raise LucidModalityError("set of decoder norms", ".fold_and_get_W_dec_norm()")

    def get_W_dec_norm(self) -> Tensor:
        raise LucidModalityError("set of decoder norms", ".get_W_dec_norm()")

    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        raise LucidModalityError("input scale", ".fold_activation_norm_scaling_factor(s)")

    @property
    def W_enc(self) -> Tensor:
        raise LucidModalityError("encoder", ".W_enc")

    @property
    def b_enc(self) -> Tensor:
        raise LucidModalityError("encoder bias", ".b_enc")

    @property
    def W_dec(self) -> Tensor:
        raise LucidModalityError("decoder", ".W_dec")

    @property
    def b_dec(self) -> Tensor:
        raise LucidModalityError("decoder bias", ".b_dec")

    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        if is_normalized_state_dict(state_dict):  # written by sith-lens < 0.2 (one shared decoder)
            raw = raw_state_dict(state_dict, self.cfg)
            state_dict.clear()
            state_dict.update(raw)
        check_state_dict(self, state_dict, "LUCID")

    def get_name(self) -> str:
        meta = self.cfg.metadata
        hooks = {meta.get("hook_name_vision"), meta.get("hook_name_text")}
        return f"sae_{meta.model_name}_lucid_{'+'.join(sorted(str(h) for h in hooks))}_{self.cfg.d_sae}"
