"""Does LUCID on 2 processes compute what 1 process computes? (torchrun, gloo, CPU, toy store)

1. one step's gradients: the 2-process run (DDP-averaged, each rank on half the batch) against
   one process on the whole batch, relative error per parameter, AuxK and transport active;
2. weights after 12 steps, 2 processes vs 1, same global batch, at the default learning rate and
   at 3x it, as the largest absolute difference (the target is 1e-5);
3. the control that shows the comparison can fail: one process on half the batch (what a rank
   sees, without the shared loss) against the whole batch.

    python benchmarks/lucid_ddp_parity.py      # ~2 min on 2 cores; the last line is JSON
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

SAE = dict(d_in=128, d_sae=96, n_private_vision=8, n_private_text=8, k_shared=6, k_private=2, k_aux=16)
SAE_ARGS = ["--d-sae", "96", "--n-private", "8", "--k-shared", "6", "--k-aux", "16", "--dead-feature-window", "3"]


def gradients(store: str, out: str) -> None:
    """One training step's gradients (run once alone and once under torchrun); rank 0 saves them."""
    from sae_lens.saes.sae import TrainStepInput

    from sith_lens.lucid.distributed import ProcessGroup
    from sith_lens.lucid.sae import TrainingLucidSAEConfig
    from sith_lens.lucid.sae.trainer import _PairedForward
    from sith_lens.lucid.sae.training import TrainingLucidSAE
    from sith_lens.lucid.store import ActivationStore

    acts = ActivationStore.open(store)
    group = ProcessGroup.from_environment("cpu")
    torch.manual_seed(0)
    sae = TrainingLucidSAE(TrainingLucidSAEConfig(**SAE))
    sae.group = group
    sae.initialize_from_data(acts)
    dead = torch.zeros(SAE["d_sae"], dtype=torch.bool)
    dead[::3] = True  # AuxK on a third of the latents
    step = TrainStepInput(sae_in=acts.batch_at(0, 16, 1, group.rank, group.world), coefficients={"ot": 0.5, "aux": 1 / 32},
                          dead_neuron_mask=dead, n_training_steps=0, is_logging_step=False)
    if group.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(_PairedForward(sae))  # kept: its reducer averages in backward
        out_step = ddp(step)
    else:
        out_step = sae.training_forward_pass(step)
    out_step.loss.backward()
    if group.rank == 0:
        torch.save({n: p.grad for n, p in sae.named_parameters()}, out)
    group.close()


def _torchrun(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args],
                   check=True, capture_output=True, text=True)


def _train(store: Path, out: Path, lr: str, batch: str, processes: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    args = ["-m", "sith_lens.cli", "lucid", "train", "--acts", str(store), *SAE_ARGS, "--steps", "12", "--batch-size",
            batch, "--lr", lr, "--seed", "1", "--holdout", "0", "--no-progress", "--out", str(out)]
    if processes == 2:
        _torchrun(*args)
    else:
        subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True)
    return load_file(str(out / "final" / "sae_weights.safetensors"))


def _max_abs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def main() -> None:
    import sith_lens as sl
    from sith_lens.lucid.store import ToySource, collect_store

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        collect_store(sl.load_clip("toy"), ToySource(192, 7), root / "store", shard_images=64, batch_size=32, progress=False)
        subprocess.run([sys.executable, __file__, "--gradients", str(root / "store"), str(root / "g1.pt")], check=True,
                       capture_output=True)
        _torchrun(__file__, "--gradients", str(root / "store"), str(root / "g2.pt"))
        one, two = torch.load(root / "g1.pt"), torch.load(root / "g2.pt")
        results["gradient_rel_err"] = {k: float((one[k] - two[k]).norm() / one[k].norm()) for k in one}
        for lr in ("1e-3", "3e-3"):
            a = _train(root / "store", root / f"one-{lr}", lr, "16", 1)
            b = _train(root / "store", root / f"two-{lr}", lr, "16", 2)
            results[f"weights_max_abs_diff_lr_{lr}"] = _max_abs(a, b)
        half = _train(root / "store", root / "half", "1e-3", "8", 1)
        results["control_half_batch_max_abs_diff"] = _max_abs(_train(root / "store", root / "one-again", "1e-3", "16", 1), half)
    worst = max(results["gradient_rel_err"].values())
    print(f"one step's gradients, 2 processes vs 1: largest relative error {worst:.1e} (float32 rounding: ~1e-7)")
    for lr in ("1e-3", "3e-3"):
        print(f"weights after 12 steps at lr {lr}, 2 processes vs 1: max |diff| {results[f'weights_max_abs_diff_lr_{lr}']:.1e} "
              "(target 1e-5)")
    print(f"control, 1 process on half the batch vs the whole batch: {results['control_half_batch_max_abs_diff']:.2e}")
    out = Path(__file__).parent / "results" / "lucid_ddp_parity.json"
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(results))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--gradients":
        gradients(sys.argv[2], sys.argv[3])
    else:
        main()
