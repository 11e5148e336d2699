"""LUCID's one set of defaults: the recipe of the packaged release ``sith-lens-toy-lucid``.

The SAE configs (``sith_lens.lucid.sae``), the transport settings (``GCMTConfig``), ``train_lucid``,
the CLI (``sith-lens lucid train``), the release script and the benchmarks all read them from
here, so ``sith-lens lucid train --holdout 0`` trains the release again. This module imports
nothing heavy, so the CLI can show the defaults without loading torch or SAELens. Every number is
our choice (lucid_spec.md §3.3 [R]).

Example:
    >>> DEFAULTS.d_sae - 2 * DEFAULTS.n_private     # shared latents
    768
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})



@dataclass(frozen=True)
class LucidRecipe:
    """Every setting of a LUCID training run, with the release's values."""

    # -- the SAE's shape
    d_sae: int = _f(1024, "latents in all: shared + vision-private + text-private")
    n_private: int = _f(128, "private latents per modality")
    k_shared: int = _f(8, "Top-K of the shared block, per token")
    k_private: int = _f(2, "Top-K of each private block, per token")
    # -- the losses
    k_aux: int = _f(256, "AuxK: how many dead latents try to reconstruct the residual")
    aux_loss_coefficient: float = _f(1 / 32, "weight of the AuxK loss")
    ot_coefficient: float = _f(0.5, "weight of the GCMT transport loss; 0 turns it off")
    ot_warm_up_steps: int = _f(-1, "steps over which the transport weight rises from 0 (-1: the first 10 %% of the run)")
    ot_eps: float = _f(0.05, "entropic regularisation of the transport, on a cost in [0, 1]")
    ot_iterations: int = _f(50, "Sinkhorn iterations")
    ot_patch_mass: float = _f(0.2, "share of an image's patch mass matched to words (1: balanced transport)")
    ot_context_weight: float = _f(0.5, "weight of the frozen model's patch-token similarity in the transport prior")
    ot_context_temperature: float = _f(0.05, "temperature of the softmax that turns that similarity into a prior")
    ot_grid_sigma: float = _f(1.0, "width, in patches, of the Gaussian that smooths the prior over the grid (0: off)")
    ot_negatives: int = _f(4, "in-batch negatives per image and per caption (0: off)")
    ot_nce_temperature: float = _f(0.1, "temperature of the InfoNCE over transport distances")
    ot_cost_k: int = _f(0, "transport cost on the top ot_cost_k shared pre-activations (0: on the codes)")
    ot_patch_saliency: float = _f(1.0, "share of the patch marginal taken from the guidance prior's saliency (0: uniform)")
    ot_relative_cost: bool = _f(False, "solve each plan on its cost divided by its spread over the pair (eps relative to it)")
    ot_every: int = _f(1, "transport loss on every ot_every-th step, weighted ot_every times (1: every step)")
    # -- the run
    steps: int = _f(2000, "optimiser steps")
    batch_size: int = _f(32, "image-caption pairs per step")
    lr: float = _f(1e-3, "peak learning rate (cosine schedule to a tenth of it, 5 %% warm-up)")
    seed: int = _f(0, "seed of the initialisation and of the batch order")
    dead_feature_window: int = _f(200, "steps without firing after which a latent counts as dead (AuxK)")
    # -- the toy-world data
    toy_pairs: int = _f(6144, "toy-world training scenes")
    toy_seed: int = _f(21, "seed of the toy-world training scenes")
    eval_pairs: int = _f(512, "held-out scenes the release is scored on")
    eval_seed: int = _f(22, "their seed, never used in training")

    @classmethod
    def loss_fields(cls) -> list[str]:
        """The settings that belong to ``TrainingLucidSAEConfig`` besides the shape."""
        return [f.name for f in fields(cls) if f.name.startswith(("k_aux", "aux_", "ot_"))]

    @classmethod
    def help(cls, name: str) -> str:
        """What a setting does, for help texts (``%%`` escaped for argparse)."""
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)


#: The one set of defaults.
DEFAULTS = LucidRecipe()

#: The default hook: each tower's per-token output in the joint space.
JOINT = "hook_joint_tokens"
