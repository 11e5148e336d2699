"""LUCID's configs and its one set of defaults.

- ``LucidShape``: the block layout every LUCID config shares (declared once);
- ``LucidSAEConfig``: the two-modality inference SAE (architecture ``"lucid"``);
- ``LucidViewConfig``: one modality of it as an ordinary SAE (architecture ``"lucid_view"``);
- ``TrainingLucidSAEConfig``: the shape plus the training losses.

Their defaults come from ``sith_lens.lucid.defaults.DEFAULTS``, the packaged release's recipe.

Example:
    >>> cfg = TrainingLucidSAEConfig(d_in=128, d_sae=DEFAULTS.d_sae)
    >>> cfg.n_shared, cfg.k_shared, cfg.k_private
    (768, 8, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sae_lens import SAEConfig, TrainingSAEConfig

from sith_lens.checks import check_finite_fields

from ..sparse import MODALITIES
from ..defaults import DEFAULTS
from ..transport import GCMTConfig, config_from_details

ARCHITECTURE = "lucid"
VIEW_ARCHITECTURE = "lucid_view"


@dataclass(kw_only=True)
class LucidShape:
    """The latent layout: ``[shared | vision-private | text-private]``, ``d_sae`` in all, and a
    Top-K budget per block."""

    #: Latents only image patches use (the block after the shared one).
    n_private_vision: int = DEFAULTS.n_private
    #: Latents only text tokens use (the last block).
    n_private_text: int = DEFAULTS.n_private
    #: Top-K budget of the shared block, per token.
    k_shared: int = DEFAULTS.k_shared
    #: Top-K budget of a modality's private block, per token.
    k_private: int = DEFAULTS.k_private

    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE

    @property
    def n_shared(self) -> int:
        """Latents in the shared block."""
        return self.d_sae - self.n_private_vision - self.n_private_text  # type: ignore[attr-defined]

    def shape_fields(self) -> dict[str, Any]:
        """``d_in``, ``d_sae`` and the block layout, for building a related config."""
        return {name: getattr(self, name) for name in ("d_in", "d_sae", *(f.name for f in fields(LucidShape)))}

    def check_shape(self) -> None:
        """Validate the block sizes and Top-K budgets, with a message naming the fix."""
        check_finite_fields(self, "invalid LUCID config")
        d_in, d_sae = self.d_in, self.d_sae  # type: ignore[attr-defined]
        problems = []
        if not isinstance(d_in, int) or not isinstance(d_sae, int) or d_in < 1 or d_sae < 1:
            problems.append(f"d_in and d_sae must be positive integers, got {d_in!r} and {d_sae!r}")
        elif min(self.n_private_vision, self.n_private_text) < 0:
            problems.append("private block sizes must be >= 0")
        elif self.n_shared < 1:
            problems.append(f"d_sae={d_sae} leaves no shared latent after the private blocks "
                            f"({self.n_private_vision} + {self.n_private_text}); raise d_sae or lower n_private_*")
        elif not 1 <= self.k_shared <= self.n_shared:
            problems.append(f"k_shared={self.k_shared} must be between 1 and the {self.n_shared} shared latents")
        else:
            smallest = min(self.n_private_vision, self.n_private_text)
            if self.k_private < 0 or (smallest > 0 and self.k_private > smallest):
                problems.append(f"k_private={self.k_private} must be between 0 and the smaller private block ({smallest})")
        cfg: Any = self
        if cfg.normalize_activations != "none" or cfg.reshape_activations != "none" or not cfg.apply_b_dec_to_input:
            problems.append("LUCID normalises each modality itself: keep normalize_activations='none', "
                            "reshape_activations='none', apply_b_dec_to_input=True")
        if problems:
            raise ValueError("invalid LUCID config: " + "; ".join(problems))


@dataclass
class LucidSAEConfig(LucidShape, SAEConfig):
    """The two-modality LUCID SAE. ``d_sae`` counts every latent: shared, vision-private, text-private.

    ``metadata`` carries ``hook_name_vision`` and ``hook_name_text`` (one hook per tower; see
    ``LucidSAE``), ``model_name``, and, for a trained SAE, the measured ``variance_explained_*``
    and ``l0_*`` per modality.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_shape()


@dataclass
class LucidViewConfig(LucidShape, SAEConfig):
    """One modality of a LUCID SAE: the same layout, ``modality`` set, and ``metadata.hook_name``
    the hook of that modality's tower."""

    modality: str = "vision"

    @classmethod
    def architecture(cls) -> str:
        return VIEW_ARCHITECTURE

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.modality not in MODALITIES:
            raise ValueError(f"invalid LUCID view config: modality must be one of {MODALITIES}, got {self.modality!r}")
        self.check_shape()


@dataclass(kw_only=True)
class TrainingLucidSAEConfig(LucidShape, TrainingSAEConfig):
    """A LUCID SAE's shape plus its training losses."""

    #: No decoder-norm heuristic: LUCID keeps decoder rows at unit norm throughout.
    decoder_init_norm: float | None = None
    #: The losses; ``sith_lens.lucid.defaults.LucidRecipe`` says what each does.
    k_aux: int = DEFAULTS.k_aux
    aux_loss_coefficient: float = DEFAULTS.aux_loss_coefficient
    ot_coefficient: float = DEFAULTS.ot_coefficient
    ot_warm_up_steps: int = DEFAULTS.ot_warm_up_steps
    ot_eps: float = DEFAULTS.ot_eps
    ot_iterations: int = DEFAULTS.ot_iterations
    ot_patch_mass: float = DEFAULTS.ot_patch_mass
    ot_context_weight: float = DEFAULTS.ot_context_weight
    ot_context_temperature: float = DEFAULTS.ot_context_temperature
    ot_grid_sigma: float = DEFAULTS.ot_grid_sigma
    ot_negatives: int = DEFAULTS.ot_negatives
    ot_nce_temperature: float = DEFAULTS.ot_nce_temperature
    ot_patch_saliency: float = DEFAULTS.ot_patch_saliency
    ot_relative_cost: bool = DEFAULTS.ot_relative_cost
    #: Top-K passes no gradient to the latents it drops, so a cost on a wider cut than the codes
    #: also lifts latents just below it; 0 computes the cost on the codes (the reference formulation).
    ot_cost_k: int = DEFAULTS.ot_cost_k
    #: Lazy transport (as lazy regularisation in StyleGAN2).
    ot_every: int = DEFAULTS.ot_every

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_shape()
        if self.ot_coefficient < 0 or self.aux_loss_coefficient < 0 or self.k_aux < 1:
            raise ValueError("ot_coefficient and aux_loss_coefficient must be >= 0 and k_aux >= 1")
        if self.ot_every < 1:
            raise ValueError(f"ot_every must be >= 1 (1 = the transport loss on every step), got {self.ot_every}")
        if self.ot_cost_k != 0 and not self.k_shared <= self.ot_cost_k <= self.n_shared:
            raise ValueError(f"ot_cost_k must be 0 (cost on the codes) or between k_shared={self.k_shared} and the "
                             f"{self.n_shared} shared latents, got {self.ot_cost_k}")
        self.gcmt()  # validates the OT settings

    def gcmt(self) -> GCMTConfig:
        """The transport settings as a GCMTConfig."""
        return config_from_details(vars(self))

    def get_inference_config_class(self) -> type[LucidSAEConfig]:
        return LucidSAEConfig
