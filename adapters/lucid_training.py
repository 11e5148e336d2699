"""Training LUCID with SAELens: ``TrainingLucidSAE`` (training architecture ``"lucid"``) and
``LucidTrainer``, an ``SAETrainer`` that feeds paired batches.

SAELens's own trainer streams unpaired ``[batch, d_in]`` activations; LUCID's transport loss needs
to know which patches and tokens come from the same image and caption. ``LucidTrainer`` keeps
SAETrainer's loop, optimiser, learning-rate and coefficient schedules, dead-latent tracking,
checkpoints (``cfg.json`` + ``sae_weights.safetensors`` + ``trainer_state.pt``) and resume, and
replaces only the step: it takes a ``PairedBatch``, keeps decoder rows at unit norm, and counts
firing over patch and token rows.

Example:
    >>> acts = collect_toy_activations(sl.load_clip("toy"), n_pairs=4096)
    >>> sae = train_lucid(acts, TrainingLucidSAEConfig(d_in=128, d_sae=1024, n_private_vision=128,
    ...                                                n_private_text=128), steps=2000, out_dir="runs/lucid")
"""

from __future__ import annotations

import functools
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from sae_lens import SAETrainer, TrainingSAE, TrainingSAEConfig
from sae_lens.config import SAETrainerConfig
from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY
from sae_lens.saes.sae import TrainCoefficientConfig, TrainStepInput, TrainStepOutput

from sith_lens.atomic import atomic_directory
from sith_lens.lucid.data import PairedActivations, PairedBatch
from sith_lens.lucid.sparse import (
    MODALITIES, auxk_loss, block_topk_indices, decode_sparse, fvu, normalize_rows_, remove_parallel_gradient, topk_relu,
)
from sith_lens.lucid.transport import GCMTConfig, config_from_details, gcmt_loss, guidance_prior

from .lucid_sae import LucidSAE, LucidSAEConfig, LucidShape, LucidWeights, check_lucid_shape, register_in


@dataclass(kw_only=True)
class TrainingLucidSAEConfig(LucidShape, TrainingSAEConfig):
    """A LUCID SAE's shape plus its training losses. Defaults are our choices (lucid_spec.md §3.3 [R])."""

    n_private_vision: int = 0
    n_private_text: int = 0
    k_shared: int = 16
    k_private: int = 4
    #: No decoder-norm heuristic: LUCID keeps decoder rows at unit norm throughout.
    decoder_init_norm: float | None = None
    #: AuxK: the top ``k_aux`` dead latents reconstruct the residual, weighted by this.
    k_aux: int = 256
    aux_loss_coefficient: float = 1 / 32
    #: Weight of the GCMT transport loss, warmed up linearly from 0 over ``ot_warm_up_steps``
    #: (-1: the first 10 % of the run).
    ot_coefficient: float = 0.5
    ot_warm_up_steps: int = -1
    #: GCMT settings (``sith_lens.lucid.transport.GCMTConfig``).
    ot_eps: float = GCMTConfig.eps
    ot_iterations: int = GCMTConfig.n_iter
    ot_patch_mass: float = GCMTConfig.patch_mass
    ot_context_weight: float = GCMTConfig.context_weight
    ot_context_temperature: float = GCMTConfig.context_temperature
    ot_grid_sigma: float = GCMTConfig.grid_sigma
    ot_negatives: int = GCMTConfig.n_negatives
    ot_nce_temperature: float = GCMTConfig.nce_temperature
    #: The transport cost is computed on the top ``ot_cost_k`` ReLU pre-activations of the shared
    #: block rather than on the ``k_shared`` that form the code. Top-K passes no gradient to the
    #: latents it drops, so on the codes alone only latents already active in both modalities could
    #: be aligned; with a wider cut the alignment also lifts latents just below it. 0 computes the
    #: cost on the codes themselves (the reference formulation).
    ot_cost_k: int = 16
    #: Lazy transport, as lazy regularisation (StyleGAN2): the GCMT loss on every ``ot_every``-th
    #: step only, weighted ``ot_every`` times, so that its average weight is unchanged. 1 is every step.
    ot_every: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_lucid_shape(self)
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


class TrainingLucidSAE(LucidWeights, TrainingSAE[TrainingLucidSAEConfig]):
    """LUCID with its training losses: per-modality FVU, GCMT on the shared codes of each pair,
    and AuxK per modality. ``training_forward_pass`` takes a ``PairedBatch`` as ``sae_in``."""

    def __init__(self, cfg: TrainingLucidSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)

    def initialize_weights(self) -> None:
        self._init_lucid_weights()

    def get_activation_fn(self):
        return torch.nn.Identity()

    def get_coefficients(self) -> dict[str, float | TrainCoefficientConfig]:
        return {
            "ot": TrainCoefficientConfig(self.cfg.ot_coefficient, max(self.cfg.ot_warm_up_steps, 0)),
            "aux": self.cfg.aux_loss_coefficient,
        }

    def encode_with_hidden_pre(self, x: torch.Tensor, modality: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if modality is None:
            raise ValueError("a LUCID SAE serves two modalities; pass modality='vision' or 'text'")
        return self.encode_normalized(x, modality, self)

    def encode(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        return self.encode_with_hidden_pre(x, modality)[0]

    def decode(self, feature_acts: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        if modality is None:
            raise ValueError("a LUCID SAE serves two modalities; pass modality='vision' or 'text'")
        return self.decode_normalized(feature_acts, modality, self)

    def calculate_aux_loss(self, step_input, feature_acts, hidden_pre, sae_out):
        raise TypeError("LUCID computes its auxiliary losses per modality inside training_forward_pass")

    @torch.no_grad()
    def initialize_from_data(self, acts: PairedActivations, max_rows: int = 100_000) -> None:
        """Set each modality's scale (centred inputs get mean squared norm 1) and centre (``b_dec``)
        from the data, on at most ``max_rows`` rows per modality."""
        rows = {"vision": acts.patches.reshape(-1, acts.d_in), "text": acts.tokens[acts.token_mask]}
        for modality, x in rows.items():
            x = x[torch.linspace(0, len(x) - 1, min(len(x), max_rows)).long()].to(self.W_dec)
            mean = x.mean(0)
            scale = (x - mean).pow(2).sum(-1).mean().sqrt().clamp_min(1e-6)
            getattr(self, f"scale_{modality}").copy_(scale)
            getattr(self, f"b_dec_{modality}").copy_(mean / scale)

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        batch = step_input.sae_in
        if not isinstance(batch, PairedBatch):
            raise TypeError(
                "TrainingLucidSAE trains on paired batches (sith_lens.lucid.PairedBatch), not on a plain "
                "activation tensor; train it with sith_lens' LucidTrainer / train_lucid"
            )
        cfg = self.cfg
        coefficients = step_input.coefficients
        dead = step_input.dead_neuron_mask
        inputs = {"vision": batch.patch_rows, "text": batch.token_rows}
        pres, recons, dense, losses = {}, {}, {}, {}
        aux = batch.patches.new_zeros(())
        for modality in MODALITIES:
            # the visible latents only, and a sparse decode: no full-width tensors on the gradient path
            x, visible = inputs[modality], self.visible(modality)
            scale, b_dec = getattr(self, f"scale_{modality}"), getattr(self, f"b_dec_{modality}")
            pres[modality] = self.visible_pre_activations(x, modality)
            values, indices = block_topk_indices(pres[modality], cfg.n_shared, cfg.k_shared, cfg.k_private)
            indices = visible[indices]
            recons[modality] = (decode_sparse(values, indices, self.W_dec) + b_dec) * scale
            with torch.no_grad():  # full-width codes and pre-activations, for the trainer's firing counts
                dense[modality] = self._full_width(pres[modality], values, indices, visible)
            losses[f"fvu_{modality}"] = fvu(x, recons[modality])
            if dead is not None and coefficients.get("aux", 0) > 0:
                residual = ((x - recons[modality]) / scale).detach()
                aux = aux + auxk_loss(residual, pres[modality], dead[visible], self.W_dec[visible], cfg.k_aux)
        losses["aux"] = coefficients.get("aux", 0) * aux
        metrics: dict[str, Any] = {}
        losses["gcmt"] = batch.patches.new_zeros(())
        if coefficients.get("ot", 0) > 0 and step_input.n_training_steps % cfg.ot_every == 0:
            # the shared block comes first among a modality's visible latents
            k = cfg.ot_cost_k or cfg.k_shared
            cost_codes = {m: topk_relu(pres[m][:, : cfg.n_shared], k) for m in MODALITIES}
            out = self.gcmt_terms(batch, cost_codes["vision"], cost_codes["text"], step_input.n_training_steps)
            losses["gcmt"] = coefficients["ot"] * cfg.ot_every * out.loss
            metrics.update(ot_matched_distance=out.matched_distance.detach(), ot_marginal_error=out.marginal_error)
        return TrainStepOutput(
            sae_in=torch.cat([inputs["vision"], inputs["text"]]),
            sae_out=torch.cat([recons["vision"], recons["text"]]),
            feature_acts=torch.cat([dense["vision"][0], dense["text"][0]]),
            hidden_pre=torch.cat([dense["vision"][1], dense["text"][1]]),
            loss=sum(losses.values()),
            losses=losses,
            metrics=metrics,
        )

    def _full_width(self, pre_visible: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, visible: torch.Tensor):
        """Dense ``[rows, d_sae]`` codes and pre-activations from the training path's sparse ones."""
        codes = values.new_zeros(len(values), self.cfg.d_sae).scatter_(-1, indices, values)
        pre = pre_visible.new_zeros(len(values), self.cfg.d_sae).index_copy_(-1, visible, pre_visible)
        return codes, pre

    def gcmt_terms(self, batch: PairedBatch, patch_codes: torch.Tensor, token_codes: torch.Tensor, step: int = 0):
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
        width = int(weighted.max()) + 1 if len(weighted) else batch.token_weights.shape[1]
        gcfg = self.cfg.gcmt()
        with torch.no_grad():
            log_prior = guidance_prior(batch.patches, batch.tokens[:, :width], batch.grid, gcfg)
        generator = torch.Generator().manual_seed(step)
        return gcmt_loss(zp, zt[:, :width], batch.token_weights[:, :width], log_prior, batch.grid, gcfg, generator)

    def to_inference(self) -> LucidSAE:
        """The trained weights as an inference ``LucidSAE``."""
        cfg = LucidSAEConfig.from_dict(self.cfg.get_inference_sae_cfg_dict())
        sae = LucidSAE(cfg)
        sae.load_state_dict(self.state_dict())
        return sae


class TrainingDivergedError(ValueError):
    """LUCID training stopped because a step's loss was not finite."""

    def __init__(self, step: int, detail: str):  # step: 1-based
        super().__init__(
            f"LUCID training diverged at step {step} ({detail}); nothing was saved for this run. Lower the "
            "learning rate (--lr) or the transport weight (--ot), and check that the "
            "activations are finite and not huge"
        )
        self.step = step


#: Written last into every checkpoint folder: the run's settings and a hash of each file.
CHECKPOINT_MANIFEST = "lucid_checkpoint.json"
CHECKPOINT_FORMAT = "sith-lens/lucid-checkpoint/1"


def _file_hashes(folder: Path) -> dict[str, str]:
    import hashlib

    hashes = {}
    for file in sorted(folder.iterdir()):
        if file.is_file() and file.name != CHECKPOINT_MANIFEST and not file.name.startswith("."):
            h = hashlib.blake2b(digest_size=16)
            with open(file, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            hashes[file.name] = h.hexdigest()
    return hashes


def check_checkpoint(path: str | os.PathLike, settings: dict[str, Any]) -> None:
    """Refuse to resume from ``path`` unless it is a whole checkpoint of a run with ``settings``.

    Example:
        >>> check_checkpoint("runs/lucid/checkpoints/1024", run_settings)
    """
    import json

    path = Path(path)
    manifest_file = path / CHECKPOINT_MANIFEST
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint folder at {path}; pass one of OUT/checkpoints/* from a run "
                                "with --checkpoints")
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ValueError(f"{path} is not a complete LUCID checkpoint (no readable {CHECKPOINT_MANIFEST}): it was "
                         "interrupted, or written by an older sith-lens; resume from another checkpoint or "
                         "start again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{manifest_file} is not a LUCID checkpoint manifest; resume from another checkpoint")
    if manifest.get("files") != _file_hashes(path):
        raise ValueError(f"the files in {path} are not the ones its manifest lists (changed, missing or "
                         "mixed in from another run); resume from another checkpoint or start again")
    saved = manifest.get("settings", {})
    differ = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
    if differ:
        detail = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in sorted(differ.items()))
        raise ValueError(f"{path} was written by a run with other settings ({detail}); resume with the same "
                         "settings and data, or start a new run in another --out")


class LucidTrainer(SAETrainer):
    """SAELens's SAETrainer with a LUCID step: paired batches, unit-norm decoder rows, firing
    counted over patch and token rows. ``data_provider`` yields ``PairedBatch`` objects.

    Checkpoints are written whole (a temporary folder, then a rename) with a manifest of the run's
    settings and file hashes, and trainer state is read with ``weights_only=True``."""

    #: What a resumed run must share with the run that wrote the checkpoint (set by train_lucid).
    run_settings: dict[str, Any] = {}

    def save_checkpoint(self, checkpoint_name: str, base_path: Path | str | None = None,
                        wandb_aliases: list[str] | None = None) -> None:
        import json

        base = base_path if base_path is not None else self.cfg.checkpoint_path
        if base is None or self.cfg.logger.log_to_wandb:
            return super().save_checkpoint(checkpoint_name, base_path, wandb_aliases)
        with atomic_directory(Path(base) / checkpoint_name) as tmp:
            super().save_checkpoint(tmp.name, base_path=tmp.parent, wandb_aliases=wandb_aliases)
            manifest = {"format": CHECKPOINT_FORMAT, "n_training_samples": self.n_training_samples,
                        "settings": self.run_settings, "files": _file_hashes(tmp)}
            (tmp / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")

    def load_trainer_state(self, checkpoint_path: Path | str) -> None:
        """SAETrainer.load_trainer_state, reading ``trainer_state.pt`` with ``weights_only=True``
        whatever torch's default (a crafted file cannot run code)."""
        import pickle

        original = torch.load
        torch.load = functools.partial(original, weights_only=True)  # type: ignore[assignment]
        try:
            super().load_trainer_state(checkpoint_path)
        except pickle.UnpicklingError as err:
            raise ValueError(f"{Path(checkpoint_path) / 'trainer_state.pt'} holds more than tensors and numbers "
                             f"(objects that could run code when loaded), so it was not loaded ({str(err)[:120]}); "
                             "resume only from checkpoints you wrote") from None
        finally:
            torch.load = original  # type: ignore[assignment]

    def step(self, batch: PairedBatch) -> TrainStepOutput:  # type: ignore[override]
        sae = self.sae
        batch = batch.to(sae.device)
        self.n_training_samples += len(batch)
        sae.train()
        try:
            with self.autocast_if_enabled:
                out = sae.training_forward_pass(TrainStepInput(
                    sae_in=batch,  # type: ignore[arg-type]
                    coefficients=self.get_coefficients(),
                    dead_neuron_mask=self.dead_neurons,
                    n_training_steps=self.n_training_steps,
                    is_logging_step=self._is_logging_step(),
                ))
        except FloatingPointError as err:  # the transport solver saw non-finite codes
            raise TrainingDivergedError(self.n_training_steps + 1, str(err)) from None
        if not bool(torch.isfinite(out.loss)):
            bad = [name for name, value in out.losses.items() if not bool(torch.isfinite(value))]
            raise TrainingDivergedError(self.n_training_steps + 1, f"non-finite loss terms {bad}")
        if "ot_matched_distance" in out.metrics:  # a transport step: keep its loss for the progress bar
            self.last_gcmt = float(out.losses["gcmt"].detach()) / sae.cfg.ot_every
        with torch.no_grad():
            firing = out.feature_acts != 0
            self.n_forward_passes_since_fired += 1
            self.n_forward_passes_since_fired[firing.any(0)] = 0
            self.act_freq_scores += firing.float().sum(0)
            self.n_frac_active_samples += firing.shape[0]
        out.loss.backward()
        remove_parallel_gradient(sae.W_dec)
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        self.optimizer.step()
        normalize_rows_(sae.W_dec)
        self.optimizer.zero_grad()
        self.lr_scheduler.step()
        for scheduler in self.coefficient_schedulers.values():
            scheduler.step()
        return out

    #: The GCMT loss of the last transport step, per step (divided by ``ot_every``), for display.
    last_gcmt: float | None = None

    def _update_pbar(self, step_output: TrainStepOutput, pbar: Any, update_interval: int = 100) -> None:
        """SAETrainer's bar shows the losses of the step it lands on, which with lazy transport is
        rarely a transport step: show the last transport step's GCMT loss instead."""
        if self.last_gcmt is not None:
            step_output = replace(step_output, losses={**step_output.losses, "gcmt": torch.tensor(self.last_gcmt)})
        super()._update_pbar(step_output, pbar, update_interval)


def train_lucid(
    acts: PairedActivations,
    sae_cfg: TrainingLucidSAEConfig,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    n_checkpoints: int = 0,
    resume_from: str | os.PathLike | None = None,
    dead_feature_window: int = 200,
    device: str = "cpu",
    progress: bool = True,
) -> LucidSAE:
    """Train a LUCID SAE on paired activations; seeded and resumable.

    Args:
        acts: from ``collect_toy_activations`` / ``collect_pairs`` (or ``PairedActivations.load``).
        sae_cfg: the SAE's shape and losses; ``d_in`` must match ``acts``.
        steps: optimiser steps of ``batch_size`` image-caption pairs each.
        out_dir: where ``final/`` (the inference SAE, SAELens format) and ``checkpoints/`` go.
        n_checkpoints: evenly spaced checkpoints under ``out_dir/checkpoints`` (each resumable).
        resume_from: a checkpoint folder to continue from (same settings, same ``acts``).
        dead_feature_window: steps without firing after which a latent counts as dead (AuxK).

    Returns:
        The trained inference ``LucidSAE`` (also saved to ``out_dir/final``).

    Example:
        >>> sae = train_lucid(acts, TrainingLucidSAEConfig(d_in=acts.d_in, d_sae=512), steps=500)
    """
    if sae_cfg.d_in != acts.d_in:
        raise ValueError(f"sae_cfg.d_in={sae_cfg.d_in} but the activations have width {acts.d_in}")
    if steps < 1 or batch_size < 2:
        raise ValueError(f"need steps >= 1 and batch_size >= 2 (pairs per step), got {steps}, {batch_size}")
    if n_checkpoints and out_dir is None:
        raise ValueError("n_checkpoints needs an out_dir to write them to")
    if sae_cfg.ot_warm_up_steps < 0:
        sae_cfg = replace(sae_cfg, ot_warm_up_steps=math.ceil(0.1 * steps))
    sae_cfg = replace(sae_cfg, device=device)
    for key in ("model_name", "hook_name_vision", "hook_name_text", "source"):
        if key in acts.metadata and key not in sae_cfg.metadata:
            sae_cfg.metadata[key] = acts.metadata[key]
    sae_cfg.metadata["grid"] = acts.grid
    torch.manual_seed(seed)
    sae = TrainingLucidSAE(sae_cfg)
    sae.initialize_from_data(acts)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch_size, train_batch_size_samples=batch_size, lr=lr,
        lr_scheduler_name="cosineannealing", lr_warm_up_steps=max(1, steps // 20), lr_end=lr / 10,
        device=device, dead_feature_window=dead_feature_window, feature_sampling_window=max(1, steps),
        n_checkpoints=n_checkpoints, checkpoint_path=str(Path(out_dir) / "checkpoints") if out_dir else None,
    )
    trainer = LucidTrainer(cfg=trainer_cfg, sae=sae, data_provider=iter(()))
    trainer.run_settings = {
        "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "pairs": len(acts),
        "sae": {k: v for k, v in vars(sae_cfg).items() if isinstance(v, (int, float, str, bool)) and k != "device"},
    }
    if resume_from is not None:
        resume_from = Path(resume_from)
        check_checkpoint(resume_from, trainer.run_settings)
        sae.load_weights_from_checkpoint(resume_from)
        trainer.load_trainer_state(resume_from)
        # SAETrainer saves a checkpoint before counting the step it just took
        trainer.n_training_steps = trainer.n_training_samples // batch_size
        trainer.checkpoint_thresholds = [t for t in trainer.checkpoint_thresholds if t >= trainer.n_training_samples]
    trainer.data_provider = acts.batches(batch_size, seed, start=trainer.n_training_steps)
    with _progress_bar(progress):
        trainer.fit()
    final = sae.to_inference()
    if out_dir is not None:
        with atomic_directory(Path(out_dir) / "final") as tmp:
            final.save_model(tmp)
    return final


@contextmanager
def _progress_bar(show: bool) -> Iterator[None]:
    """SAETrainer.fit always draws a tqdm bar; hide it when ``show`` is False."""
    from sae_lens.training import sae_trainer

    original = sae_trainer.tqdm
    if not show:
        sae_trainer.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        sae_trainer.tqdm = original


def register_training() -> None:
    """Register ``TrainingLucidSAE`` with SAELens (idempotent)."""
    register_in(SAE_TRAINING_CLASS_REGISTRY, (TrainingLucidSAE, TrainingLucidSAEConfig))


register_training()
