"""``TrainingLucidSAE`` (training architecture ``"lucid"``): LUCID with its training losses.

Training keeps one decoder ``W_dec`` with unit-norm rows for both modalities and, per modality,
an encoder, a centre ``b_dec`` and an input scale, all in normalised units (``x / scale``).
``to_inference`` turns that into the raw-unit views of a ``LucidSAE``.

Example:
    >>> sae = TrainingLucidSAE(TrainingLucidSAEConfig(d_in=128, d_sae=1024))
    >>> sae.to_inference().vision.W_enc.shape
    torch.Size([128, 1024])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from sae_lens import TrainingSAE
from sae_lens.saes.sae import TrainCoefficientConfig, TrainStepInput, TrainStepOutput
from torch import Tensor, nn

from ..data import PairedActivations, PairedBatch
from ..sparse import (
    MODALITIES, auxk_loss, block_topk, block_topk_indices, check_modality, decode_sparse, fvu, topk_relu,
    visible_latents,
)
from ..distributed import SOLO, ProcessGroup
from ..transport import gcmt_loss, guidance_prior
from .config import LucidSAEConfig, TrainingLucidSAEConfig
from .inference import LucidSAE
from .layout import check_state_dict, raw_state_dict

#: The per-modality tensors of the training parametrisation, besides the shared ``W_dec``.
MODALITY_TENSORS = ("W_enc", "b_enc", "b_dec", "scale")


class TrainingLucidSAE(TrainingSAE[TrainingLucidSAEConfig]):
    """LUCID with its training losses: per-modality FVU, GCMT on the shared codes of each pair,
    and AuxK per modality. ``training_forward_pass`` takes a ``PairedBatch`` as ``sae_in``."""

    #: The processes training this SAE together (``SOLO``: one; set by ``train_lucid`` under torchrun).
    group: ProcessGroup = SOLO

    def __init__(self, cfg: TrainingLucidSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)

    def initialize_weights(self) -> None:
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

    def get_activation_fn(self) -> nn.Module:
        return nn.Identity()  # block Top-K is applied in encode_with_hidden_pre

    def get_coefficients(self) -> dict[str, float | TrainCoefficientConfig]:
        return {
            "ot": TrainCoefficientConfig(self.cfg.ot_coefficient, max(self.cfg.ot_warm_up_steps, 0)),
            "aux": self.cfg.aux_loss_coefficient,
        }

    def visible(self, modality: str) -> Tensor:
        """Latent indices ``modality`` uses: the shared block, then its private block."""
        cfg = self.cfg
        return visible_latents(modality, cfg.n_shared, cfg.n_private_vision, cfg.n_private_text).to(self.W_dec.device)

    def modality_weights(self, modality: str) -> dict[str, Tensor]:
        """A modality's ``W_enc`` [d_in, n_visible], ``b_enc``, ``b_dec`` (normalised units) and ``scale``."""
        return {name: getattr(self, f"{name}_{check_modality(modality)}") for name in MODALITY_TENSORS}

    def visible_pre_activations(self, x: Float[Tensor, "... d_in"], modality: str) -> Float[Tensor, "... n_visible"]:
        """Pre-activations of the latents ``modality`` uses, from raw activations."""
        w = self.modality_weights(modality)
        return (x / w["scale"] - w["b_dec"]) @ w["W_enc"] + w["b_enc"]

    def encode_with_hidden_pre(self, x: Tensor, modality: str | None = None) -> tuple[Tensor, Tensor]:
        """Full-width codes and pre-activations of raw ``modality`` activations."""
        if modality is None:
            raise ValueError("a LUCID SAE serves two modalities; pass modality='vision' or 'text'")
        cfg, visible = self.cfg, self.visible(modality)
        pre_visible = self.visible_pre_activations(self.hook_sae_input(x.to(self.W_dec.dtype)), modality)
        pre = pre_visible.new_zeros(*pre_visible.shape[:-1], cfg.d_sae).index_copy(-1, visible, pre_visible)
        pre = self.hook_sae_acts_pre(pre)
        codes_visible = block_topk(pre.index_select(-1, visible), cfg.n_shared, cfg.k_shared, cfg.k_private)
        codes = torch.zeros_like(pre).index_copy(-1, visible, codes_visible)
        return self.hook_sae_acts_post(codes), pre

    def encode(self, x: Tensor, modality: str | None = None) -> Tensor:
        return self.encode_with_hidden_pre(x, modality)[0]

    def decode(self, feature_acts: Tensor, modality: str | None = None) -> Tensor:
        """Raw-unit reconstruction ``scale * (codes @ W_dec + b_dec)``."""
        if modality is None:
            raise ValueError("a LUCID SAE serves two modalities; pass modality='vision' or 'text'")
        w = self.modality_weights(modality)
        return self.hook_sae_recons((feature_acts.to(self.W_dec.dtype) @ self.W_dec + w["b_dec"]) * w["scale"])

    def calculate_aux_loss(self, step_input: Any, feature_acts: Any, hidden_pre: Any, sae_out: Any) -> Any:
        raise TypeError("LUCID computes its auxiliary losses per modality inside training_forward_pass")

    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        raise NotImplementedError("LUCID scales each modality itself (scale_vision, scale_text); "
                                  "train it with normalize_activations='none'")

    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        check_state_dict(self, state_dict, "LUCID training")

    @torch.no_grad()
    def initialize_from_data(self, acts: PairedActivations, max_rows: int = 100_000) -> None:
        """Set each modality's scale (centred inputs get mean squared norm 1) and centre (``b_dec``)
        from the data, on at most ``max_rows`` rows per modality."""
        for modality in MODALITIES:
            x = acts.sample_rows(modality, max_rows).to(self.W_dec)
            mean = x.mean(0)
            scale = (x - mean).pow(2).sum(-1).mean().sqrt().clamp_min(1e-6)
            getattr(self, f"scale_{modality}").copy_(scale)
            getattr(self, f"b_dec_{modality}").copy_(mean / scale)

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        batch = step_input.sae_in
        if not isinstance(batch, PairedBatch):
            raise TypeError(
                "TrainingLucidSAE trains on paired batches (sith_lens.lucid.data.PairedBatch), not on a plain "
                "activation tensor; train it with sith_lens' LucidTrainer / train_lucid"
            )
        cfg = self.cfg
        coefficients = step_input.coefficients
        dead = step_input.dead_neuron_mask
        inputs = {"vision": batch.patch_rows, "text": batch.token_rows}
        pres, recons, dense, losses, shared_picks = {}, {}, {}, {}, {}
        aux = batch.patches.new_zeros(())
        for modality in MODALITIES:
            # the visible latents only, and a sparse decode: no full-width tensors on the gradient path
            x, visible = inputs[modality], self.visible(modality)
            scale, b_dec = getattr(self, f"scale_{modality}"), getattr(self, f"b_dec_{modality}")
            pres[modality] = self.visible_pre_activations(x, modality)
            values, indices = block_topk_indices(pres[modality], cfg.n_shared, cfg.k_shared, cfg.k_private)
            shared_picks[modality] = (values[:, : cfg.k_shared], indices[:, : cfg.k_shared])  # shared block first
            indices = visible[indices]
            recons[modality] = (decode_sparse(values, indices, self.W_dec) + b_dec) * scale
            with torch.no_grad():  # full-width codes and pre-activations, for the trainer's firing counts
                dense[modality] = self._full_width(pres[modality], values, indices, visible)
            losses[f"fvu_{modality}"] = fvu(x, recons[modality], self.group)
            if dead is not None and coefficients.get("aux", 0) > 0:
                residual = ((x - recons[modality]) / scale).detach()
                aux = aux + auxk_loss(residual, pres[modality], dead[visible], self.W_dec[visible], cfg.k_aux, self.group)
        losses["aux"] = coefficients.get("aux", 0) * aux
        metrics: dict[str, Any] = {}
        losses["gcmt"] = batch.patches.new_zeros(())
        if coefficients.get("ot", 0) > 0 and step_input.n_training_steps % cfg.ot_every == 0:
            # the shared block comes first among a modality's visible latents
            if cfg.ot_cost_k:
                cost_codes = {m: topk_relu(pres[m][:, : cfg.n_shared], cfg.ot_cost_k) for m in MODALITIES}
            else:  # the shared codes themselves, from the picks above (no second Top-K)
                cost_codes = {m: pres[m].new_zeros(len(pres[m]), cfg.n_shared).scatter(-1, shared_picks[m][1], shared_picks[m][0])
                              for m in MODALITIES}
            out = self.gcmt_terms(batch, cost_codes["vision"], cost_codes["text"], step_input.n_training_steps)
            losses["gcmt"] = coefficients["ot"] * cfg.ot_every * out.loss
            metrics.update(ot_matched_distance=out.matched_distance.detach(), ot_marginal_error=out.marginal_error,
                           ot_plan_peak_share=out.peak_share)
        return TrainStepOutput(
            sae_in=torch.cat([inputs["vision"], inputs["text"]]),
            sae_out=torch.cat([recons["vision"], recons["text"]]),
            feature_acts=torch.cat([dense["vision"][0], dense["text"][0]]),
            hidden_pre=torch.cat([dense["vision"][1], dense["text"][1]]),
            loss=sum(losses.values()),
            losses=losses,
            metrics=metrics,
        )

    def _full_width(self, pre_visible: Tensor, values: Tensor, indices: Tensor, visible: Tensor) -> tuple[Tensor, Tensor]:
        """Dense ``[rows, d_sae]`` codes and pre-activations from the training path's sparse ones."""
        codes = values.new_zeros(len(values), self.cfg.d_sae).scatter_(-1, indices, values)
        pre = pre_visible.new_zeros(len(values), self.cfg.d_sae).index_copy_(-1, visible, pre_visible)
        return codes, pre

    def gcmt_terms(self, batch: PairedBatch, patch_codes: Tensor, token_codes: Tensor, step: int = 0) -> Any:
        """The GCMT loss of a batch from the codes of its patch rows and token rows; the negatives
        drawn depend only on ``step``, so a resumed run draws the same ones."""
        n_shared = self.cfg.n_shared
        b, n, _ = batch.patches.shape
        zp = patch_codes[:, :n_shared].reshape(b, n, n_shared)
        zt = token_codes.new_zeros(*batch.token_mask.shape, n_shared)
        zt[batch.token_mask] = token_codes[:, :n_shared]
        # Slots after the batch's last weighted token carry no mass: drop them, since Sinkhorn's
        # time grows with the width and zero-mass columns are the slowest part of it
        weighted = (batch.token_weights > 0).any(0).nonzero()
        width = self.group.max_int(int(weighted.max()) + 1 if len(weighted) else batch.token_weights.shape[1])
        gcfg = self.cfg.gcmt()
        with torch.no_grad():
            log_prior = guidance_prior(batch.patches, batch.tokens[:, :width], batch.grid, gcfg)
        generator = torch.Generator().manual_seed(step)
        return gcmt_loss(zp, zt[:, :width], batch.token_weights[:, :width], log_prior, batch.grid, gcfg, generator,
                         self.group)

    @torch.no_grad()
    def to_inference(self) -> LucidSAE:
        """The trained weights as an inference ``LucidSAE`` (raw-unit views)."""
        cfg = LucidSAEConfig.from_dict(self.cfg.get_inference_sae_cfg_dict())
        sae = LucidSAE(cfg)
        sae.load_state_dict(raw_state_dict(self.state_dict(), self.cfg))
        return sae

    def save_inference_model(self, path: str | Path) -> tuple[Path, Path]:
        """The inference SAE (``LucidSAE``, raw-unit views) in SAELens format."""
        return self.to_inference().save_model(path)
