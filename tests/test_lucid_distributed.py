"""LUCID on two processes (torchrun, gloo, CPU): the weights equal one process's with the same global
batch, only rank 0 writes, and a resumed two-process run continues where it stopped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sith_lens.lucid.store import ToySource, collect_store

SAE_ARGS = ["--d-sae", "96", "--n-private", "8", "--k-shared", "6", "--k-aux", "16", "--dead-feature-window", "3"]
RUN_ARGS = ["--steps", "12", "--batch-size", "16", "--lr", "1e-3", "--seed", "1", "--holdout", "0", "--no-progress"]
TOLERANCE = 1e-5


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "sith_lens.cli", "lucid", "train", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "sae_weights.safetensors"))


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def store(toy, tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    return collect_store(toy, ToySource(192, 7), folder, shard_images=64, batch_size=32, progress=False)


def test_two_processes_train_the_one_process_weights_and_resume(store, tmp_path):
    from sith_lens.cli import main

    two = tmp_path / "two"
    done = _torchrun("--acts", str(store.folder), *SAE_ARGS, *RUN_ARGS, "--checkpoints", "2", "--out", str(two))
    assert done.stdout.count('"steps": 12') == 1  # one report, from rank 0
    checkpoints = sorted((two / "checkpoints").iterdir(), key=lambda p: int(p.name))
    assert len(checkpoints) == 2 and not [p for p in two.rglob(".*")]  # rank 0 wrote each once, whole

    one = tmp_path / "one"
    assert main(["lucid", "train", "--acts", str(store.folder), *SAE_ARGS, *RUN_ARGS, "--out", str(one)]) == 0
    difference = _max_difference(_weights(one), _weights(two))
    assert difference < TOLERANCE, f"2 processes differ from 1 by {difference:.2e}"

    # the comparison can fail: one process seeing only a rank's half of each batch ends elsewhere
    half = tmp_path / "half"
    half_args = [a if a != "16" else "8" for a in RUN_ARGS]
    assert main(["lucid", "train", "--acts", str(store.folder), *SAE_ARGS, *half_args, "--out", str(half)]) == 0
    assert _max_difference(_weights(one), _weights(half)) > 1000 * TOLERANCE

    resumed = tmp_path / "resumed"
    _torchrun("--acts", str(store.folder), *SAE_ARGS, *RUN_ARGS, "--resume", str(checkpoints[0]), "--out", str(resumed))
    difference = _max_difference(_weights(resumed), _weights(two))
    assert difference < TOLERANCE, f"the resumed run differs by {difference:.2e}"


def test_batch_that_does_not_split_over_the_processes_is_refused(store, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "sith_lens.cli", "lucid", "train", "--acts", str(store.folder), *SAE_ARGS, "--steps", "2",
               "--batch-size", "15", "--holdout", "0", "--no-progress", "--out", str(tmp_path / "x")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "batch_size=15 pairs do not split evenly over 2 processes; pass a multiple of 2" in done.stderr
