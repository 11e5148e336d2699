"""Training LUCID with SAELens's trainer: ``LucidTrainer``, an ``SAETrainer`` that feeds paired
batches, and ``train_lucid``.

SAELens's own trainer streams unpaired ``[batch, d_in]`` activations; LUCID's transport loss needs
to know which patches and tokens come from the same image and caption. ``LucidTrainer`` keeps
SAETrainer's loop, optimiser, learning-rate and coefficient schedules, dead-latent tracking,
checkpoints (``cfg.json`` + ``sae_weights.safetensors`` + ``sparsity.safetensors`` +
``trainer_state.pt``) and resume, and replaces only the step: it takes a ``PairedBatch``, keeps
decoder rows at unit norm, and counts firing over patch and token rows.

Example:
    >>> import sith_lens as sl
    >>> from sith_lens.lucid.sae import TrainingLucidSAEConfig, train_lucid
    >>> acts = sl.collect_toy_activations(sl.load_clip("toy"), 32, seed=DEFAULTS.toy_seed, progress=False)
    >>> cfg = TrainingLucidSAEConfig(d_in=acts.d_in, d_sae=64, n_private_vision=8, n_private_text=8, k_shared=4, k_private=1)
    >>> sae = train_lucid(acts, cfg, steps=3, batch_size=8, out_dir="lucid-run")   # the release: DEFAULTS' steps
    >>> type(sae).__name__, sorted(p.name for p in Path("lucid-run/final").iterdir())[:2]
    ('LucidSAE', ['cfg.json', 'sae_weights.safetensors'])
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch
from sae_lens import SAETrainer
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput

from torch import Tensor

from sith_lens.atomic import atomic_directory, file_digest
from sith_lens.checks import describe_differences

from ..data import PairedActivations, PairedBatch, check_split
from ..store import ActivationStore
from ..sparse import normalize_rows_, remove_parallel_gradient
from ..defaults import DEFAULTS
from ..distributed import SOLO, ProcessGroup
from .config import TrainingLucidSAEConfig
from .inference import LucidSAE
from .training import TrainingLucidSAE


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
    return {file.name: file_digest(file) for file in sorted(folder.iterdir())
            if file.is_file() and file.name != CHECKPOINT_MANIFEST and not file.name.startswith(".")}


def check_checkpoint(path: str | os.PathLike, settings: dict[str, Any]) -> None:
    """Refuse to resume from ``path`` unless it is a whole checkpoint of a run with ``settings``.

    Example:
        >>> check_checkpoint("lucid-run/checkpoints/1024", {"steps": 2000})     # a run that wrote none
        Traceback (most recent call last):
        FileNotFoundError: no checkpoint folder at lucid-run/checkpoints/1024; pass one of OUT/checkpoints/* from a run with --checkpoints
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
    detail = describe_differences(manifest.get("settings", {}), settings, "then")
    if detail:
        raise ValueError(f"{path} was written by a run with other settings ({detail}); resume with the same "
                         "settings and data, or start a new run in another --out")


class _PairedForward(torch.nn.Module):
    """The SAE's paired training forward as a module's ``forward``, for DDP to wrap."""

    def __init__(self, sae: TrainingLucidSAE):
        super().__init__()
        self.sae = sae

    def forward(self, step_input: TrainStepInput) -> TrainStepOutput:
        return self.sae.training_forward_pass(step_input)


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

        if self.group.rank != 0:  # every process holds the same weights and state: one writes them
            return
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

    #: The processes training together (``SOLO``: this one alone).
    group: ProcessGroup = SOLO
    _ddp: Any = None

    def _forward(self) -> Any:
        """The step's forward: the SAE's own, or under several processes DDP's, which averages the
        gradients over them in backward."""
        if not self.group.distributed:
            return self.sae.training_forward_pass
        if self._ddp is None:
            from torch.nn.parallel import DistributedDataParallel

            device = torch.device(self.sae.device)
            # DDP's default buffer sync (the two input scales, equal on every rank) works on every torch
            self._ddp = DistributedDataParallel(_PairedForward(self.sae),
                                                device_ids=[device] if device.type == "cuda" else None)
        return self._ddp

    def step(self, batch: PairedBatch) -> TrainStepOutput:  # type: ignore[override]
        sae, group = self.sae, self.group
        batch = batch.to(sae.device)
        self.n_training_samples += len(batch) * group.world
        sae.train()
        try:
            with self.autocast_if_enabled:
                out = self._forward()(TrainStepInput(
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
            self._check_plan(out.metrics.get("ot_plan_peak_share", float("nan")), batch.patches.shape[1])
        with torch.no_grad():  # firing over the rows of every process
            firing = out.feature_acts != 0
            self.n_forward_passes_since_fired += 1
            self.n_forward_passes_since_fired[group.sum(firing.any(0).float()) > 0] = 0
            self.act_freq_scores += group.sum(firing.float().sum(0))
            self.n_frac_active_samples += group.world * firing.shape[0]
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
    #: Whether a collapsed or uniform plan was already reported (once per run).
    _plan_warned: bool = False

    def _check_plan(self, peak_share: float, n_patches: int) -> None:
        """Warn once, after the transport's warm-up, when the plan collapses (a word's mass on a
        single patch) or is uniform (spread evenly over every patch): either way it aligns nothing."""
        step = self.n_training_steps + 1
        if self._plan_warned or step <= self.sae.cfg.ot_warm_up_steps or not math.isfinite(peak_share):
            return
        if peak_share > PLAN_COLLAPSED:
            what = (f"collapsed: a word's plan puts {peak_share:.0%} of its mass on one patch on average; "
                    f"raise ot_eps (now {self.sae.cfg.ot_eps})")
        elif peak_share < PLAN_UNIFORM * (1.0 / n_patches):
            what = (f"uniform: a word's heaviest patch holds {peak_share:.4f} of its mass, as a uniform plan over "
                    f"{n_patches} patches would ({1 / n_patches:.4f}); lower ot_eps (now {self.sae.cfg.ot_eps}) or "
                    "raise ot_context_weight")
        else:
            return
        self._plan_warned = True
        warnings.warn(f"LUCID's transport plan at step {step} is {what}", PlanWarning, stacklevel=2)

    def _update_pbar(self, step_output: TrainStepOutput, pbar: Any, update_interval: int = 100) -> None:
        """SAETrainer's bar shows the losses of the step it lands on, which with lazy transport is
        rarely a transport step: show the last transport step's GCMT loss instead."""
        if self.last_gcmt is not None:
            step_output = replace(step_output, losses={**step_output.losses, "gcmt": torch.tensor(self.last_gcmt)})
        super()._update_pbar(step_output, pbar, update_interval)




class PlanWarning(UserWarning):
    """A LUCID run's transport plan collapsed onto single patches or became uniform."""


#: A plan whose words put more than this share of their mass on one patch has collapsed.
PLAN_COLLAPSED = 0.95
#: A plan whose words' heaviest patch holds less than this multiple of 1/N is uniform.
PLAN_UNIFORM = 1.5


def train_lucid(
    acts: PairedActivations | ActivationStore,
    sae_cfg: TrainingLucidSAEConfig,
    steps: int = DEFAULTS.steps,
    batch_size: int = DEFAULTS.batch_size,
    lr: float = DEFAULTS.lr,
    seed: int = DEFAULTS.seed,
    out_dir: str | os.PathLike | None = None,
    n_checkpoints: int = 0,
    resume_from: str | os.PathLike | None = None,
    dead_feature_window: int = DEFAULTS.dead_feature_window,
    device: str = "cpu",
    progress: bool = True,
) -> LucidSAE:
    """Train a LUCID SAE on paired activations; seeded and resumable. Defaults: ``DEFAULTS``.

    Args:
        acts: from ``collect_toy_activations`` / ``collect_pairs`` (or ``PairedActivations.load``), or a
            sharded ``ActivationStore`` (``collect_store``), read through memory maps a batch at a time.
        sae_cfg: the SAE's shape and losses; ``d_in`` must match ``acts``.
        steps: optimiser steps of ``batch_size`` image-caption pairs each.
        out_dir: where ``final/`` (the inference SAE in SAELens format, with ``sparsity.safetensors``)
            and ``checkpoints/`` go.
        n_checkpoints: evenly spaced checkpoints under ``out_dir/checkpoints`` (each resumable).
        resume_from: a checkpoint folder to continue from (same settings, same ``acts``).
        dead_feature_window: steps without firing after which a latent counts as dead (AuxK).

    Launched by ``torchrun`` (``WORLD_SIZE`` > 1), each process trains on its share of every batch
    and the processes together compute the one-process result (``sith_lens.lucid.distributed``);
    ``batch_size`` is the global batch, and only rank 0 writes checkpoints and ``final/``.

    Returns:
        The trained inference ``LucidSAE`` (also saved to ``out_dir/final``), with its measured
        variance explained and L0 per modality in ``cfg.metadata``.

    Example:
        >>> import sith_lens as sl
        >>> from sith_lens.lucid.sae import TrainingLucidSAEConfig
        >>> acts = sl.collect_toy_activations(sl.load_clip("toy"), 32, progress=False)
        >>> sae = train_lucid(acts, TrainingLucidSAEConfig(d_in=acts.d_in, d_sae=64, n_private_vision=8,
        ...                                                n_private_text=8, k_shared=4, k_private=1), steps=3, batch_size=8)
        >>> sae.vision.encode(acts.patches[0]).shape
        torch.Size([64, 64])
    """
    if not isinstance(acts, (PairedActivations, ActivationStore)):
        raise TypeError(f"train_lucid takes PairedActivations (collect_toy_activations, collect_pairs or "
                        f"PairedActivations.load) or an ActivationStore (collect_store, ActivationStore.open), "
                        f"got {type(acts).__name__}")
    if not isinstance(sae_cfg, TrainingLucidSAEConfig):
        raise TypeError(f"sae_cfg must be a TrainingLucidSAEConfig, got {type(sae_cfg).__name__}")
    if sae_cfg.d_in != acts.d_in:
        raise ValueError(f"sae_cfg.d_in={sae_cfg.d_in} but the activations have width {acts.d_in}")
    if steps < 1 or batch_size < 2:
        raise ValueError(f"need steps >= 1 and batch_size >= 2 (pairs per step), got {steps}, {batch_size}")
    if n_checkpoints and out_dir is None:
        raise ValueError("n_checkpoints needs an out_dir to write them to")
    if sae_cfg.ot_coefficient > 0 and isinstance(acts, PairedActivations):
        empty = torch.nonzero(acts.token_weights.sum(-1) <= 0).flatten().tolist()
        if empty:
            raise ValueError(f"pairs {empty[:10]} have captions with no weighted token, so the transport's token "
                             "marginal sums to zero there; keep the others (acts.subset(indices)) or pass ot_coefficient=0")
    group = ProcessGroup.from_environment(device)
    try:
        return _train(acts, sae_cfg, steps, batch_size, lr, seed, out_dir, n_checkpoints, resume_from,
                      dead_feature_window, device, progress, group)
    finally:
        group.close()


def _train(acts: PairedActivations | ActivationStore, sae_cfg: TrainingLucidSAEConfig, steps: int, batch_size: int,
           lr: float, seed: int, out_dir: str | os.PathLike | None, n_checkpoints: int,
           resume_from: str | os.PathLike | None, dead_feature_window: int, device: str, progress: bool,
           group: ProcessGroup) -> LucidSAE:
    check_split(batch_size, group.world)
    if group.distributed and str(device).startswith("cuda"):
        device = group.device  # one GPU per process
        torch.cuda.set_device(device)
    if sae_cfg.ot_warm_up_steps < 0:
        sae_cfg = replace(sae_cfg, ot_warm_up_steps=math.ceil(0.1 * steps))
    sae_cfg = replace(sae_cfg, device=device)
    for key in ("model_name", "hook_name_vision", "hook_name_text", "source"):
        if key in acts.metadata and key not in sae_cfg.metadata:
            sae_cfg.metadata[key] = acts.metadata[key]
    sae_cfg.metadata["grid"] = acts.grid
    torch.manual_seed(seed)
    sae = TrainingLucidSAE(sae_cfg)
    sae.group = group
    sae.initialize_from_data(acts)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch_size, train_batch_size_samples=batch_size, lr=lr,
        lr_scheduler_name="cosineannealing", lr_warm_up_steps=max(1, steps // 20), lr_end=lr / 10,
        device=device, dead_feature_window=dead_feature_window, feature_sampling_window=max(1, steps),
        n_checkpoints=n_checkpoints, checkpoint_path=str(Path(out_dir) / "checkpoints") if out_dir else None,
    )
    trainer = LucidTrainer(cfg=trainer_cfg, sae=sae, data_provider=iter(()))
    trainer.group = group
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
    trainer.data_provider = acts.batches(batch_size, seed, start=trainer.n_training_steps, rank=group.rank,
                                         world=group.world)
    with _progress_bar(progress and group.rank == 0):
        trainer.fit()
    final = sae.to_inference().to("cpu")
    sparsity = measure(final, acts)
    final.to(device)
    if out_dir is not None and group.rank == 0:
        save_with_sparsity(final, Path(out_dir) / "final", sparsity)
    group.barrier()  # the run ends when its output is written
    return final


#: How many training pairs ``measure`` reads.
MEASURE_PAIRS = 4096


@torch.no_grad()
def measure(sae: LucidSAE, acts: PairedActivations, max_pairs: int = MEASURE_PAIRS) -> dict[str, Tensor]:
    """Record in ``sae.cfg.metadata`` the variance explained and mean L0 of each modality on the
    first ``max_pairs`` pairs of ``acts``, and return the log10 firing density of every latent
    (``sparsity``: over patch and token rows together, as SAELens's trainer counts them;
    ``sparsity_vision``, ``sparsity_text``: over one modality's rows).

    Example:
        >>> import sith_lens as sl
        >>> from sae_lens import SAE
        >>> sae = SAE.from_pretrained("sith-lens-toy-lucid", "final")
        >>> acts = sl.collect_toy_activations(sl.load_clip("toy"), 32, seed=22, progress=False)
        >>> sparsity = measure(sae, acts)
        >>> 0 < sae.cfg.metadata.variance_explained_vision < 1, sparsity["sparsity"].shape
        (True, torch.Size([1024]))
    """
    from ..evaluate import modality_rows
    from ..sparse import fvu

    batch, rows = modality_rows(sae, acts, max_pairs)
    sparsity: dict[str, Tensor] = {}
    fired, n_rows = torch.zeros(sae.cfg.d_sae), 0
    for modality, (x, codes) in rows.items():
        sae.cfg.metadata[f"variance_explained_{modality}"] = round(1 - float(fvu(x, sae.view(modality).decode(codes))), 4)
        sae.cfg.metadata[f"l0_{modality}"] = round(float((codes != 0).sum(-1).float().mean()), 3)
        counts = (codes != 0).sum(0).float().cpu()
        sparsity[f"sparsity_{modality}"] = torch.log10(counts / max(len(codes), 1) + 1e-10)
        fired, n_rows = fired + counts, n_rows + len(codes)
    sparsity["sparsity"] = torch.log10(fired / max(n_rows, 1) + 1e-10)
    sae.cfg.metadata["measured_on"] = f"{len(batch)} training pairs"  # the views get their own figures
    return sparsity


def save_with_sparsity(sae: LucidSAE, folder: Path, sparsity: dict[str, Tensor]) -> None:
    """``sae.save_model`` plus ``sparsity.safetensors``, written whole (a temporary folder, then a rename)."""
    from sae_lens.constants import SPARSITY_FILENAME
    from safetensors.torch import save_file

    with atomic_directory(folder) as tmp:
        sae.save_model(tmp)
        save_file({k: v.contiguous() for k, v in sparsity.items()}, str(tmp / SPARSITY_FILENAME))

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


