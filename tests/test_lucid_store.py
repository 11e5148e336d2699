"""LUCID's sharded activation store: the same pairs as the in-memory path, streaming training with
identical results, resumable collection, refusals by fingerprint, truncated shards, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sith_lens.lucid.collect import collect_toy_activations
from sith_lens.lucid.data import TENSOR_NAMES, PairedActivations
from sith_lens.lucid.store import INDEX_FILE, ActivationStore, FolderSource, ToySource, collect_store

PAIRS, SEED, BATCH = 200, 5, 40


@pytest.fixture(scope="module")
def in_memory(toy):
    return collect_toy_activations(toy, n_pairs=PAIRS, seed=SEED, batch_size=BATCH, progress=False)


@pytest.fixture(scope="module")
def store(toy, tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    return collect_store(toy, ToySource(PAIRS, SEED), folder, shard_images=2 * BATCH, batch_size=BATCH, progress=False)


def _assert_same_data(a: PairedActivations, b: PairedActivations) -> None:
    for name in TENSOR_NAMES:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.captions == b.captions and a.token_strings == b.token_strings
    for name in a.extras:
        assert torch.equal(a.extras[name], b.extras[name]), name


def test_store_holds_the_in_memory_pairs(store, in_memory):
    assert len(store.shards) == 3 and [s.entry["n_images"] for s in store.shards] == [80, 80, 40]
    assert (len(store), store.d_in, store.grid) == (PAIRS, in_memory.d_in, in_memory.grid)
    back = store.to_memory()
    assert torch.equal(back.extras.pop("pair.index"), torch.arange(PAIRS))
    _assert_same_data(back, in_memory)
    assert PairedActivations.load(store.folder).captions == in_memory.captions
    umask = os.umask(0)
    os.umask(umask)
    assert {oct(f.stat().st_mode & 0o777) for f in store.folder.iterdir()} == {oct(0o666 & ~umask)}  # not 0600


@pytest.mark.parametrize("rank,world", [(0, 1), (0, 2), (1, 2)])
def test_store_batches_and_rows_equal_the_in_memory_ones(store, in_memory, rank, world):
    for step in (0, 4, 13):  # 13: the third epoch
        a, b = in_memory.batch_at(step, 16, 3, rank, world), store.batch_at(step, 16, 3, rank, world)
        for field in ("patches", "tokens", "token_mask", "token_weights"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field
        if world > 1:  # each rank gets its half, as wide as the whole batch
            whole = in_memory.batch_at(step, 16, 3)
            assert len(b) == 8 and b.tokens.shape[1] == whole.tokens.shape[1]
            assert torch.equal(b.patches, whole.patches[rank * 8:(rank + 1) * 8])
    for modality in ("vision", "text"):
        assert torch.equal(store.sample_rows(modality, 777), in_memory.sample_rows(modality, 777))


def test_split_gives_the_in_memory_train_and_holdout_parts(store, in_memory):
    train, holdout = store.split(30)
    mem_train, mem_holdout = in_memory.split(30)
    assert (len(train), len(holdout)) == (170, 30)
    width = holdout.tokens.shape[1]
    assert torch.equal(holdout.tokens, mem_holdout.tokens[:, :width]) and torch.equal(holdout.patches, mem_holdout.patches)
    assert not mem_holdout.token_mask[:, width:].any()
    for modality in ("vision", "text"):
        assert torch.equal(train.sample_rows(modality, 5000), mem_train.sample_rows(modality, 5000))
    assert torch.equal(train.batch_at(3, 16, 0).tokens, mem_train.batch_at(3, 16, 0).tokens)


def test_streaming_training_equals_in_memory_training(store, in_memory):
    from sith_lens.lucid.sae import TrainingLucidSAEConfig, train_lucid

    cfg = dict(d_in=128, d_sae=96, n_private_vision=16, n_private_text=8, k_shared=6, k_private=2, k_aux=16)
    args = dict(steps=12, batch_size=16, lr=3e-3, seed=1, progress=False)
    a = train_lucid(in_memory, TrainingLucidSAEConfig(**cfg), **args)
    b = train_lucid(store, TrainingLucidSAEConfig(**cfg), **args)
    for name, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], value, rtol=1e-6, atol=1e-7)
    assert b.cfg.metadata["variance_explained_vision"] == a.cfg.metadata["variance_explained_vision"]


def test_windowed_shuffle_reads_a_window_of_shards_at_a_time(toy, tmp_path):
    collect_store(toy, ToySource(160, 1), tmp_path, shard_images=20, batch_size=20, progress=False)
    store = ActivationStore.open(tmp_path, shuffle_shards=2)  # 8 shards of 20 pairs, windows of 2
    order = store.epoch_order(0, seed=4)
    assert sorted(order.tolist()) == list(range(160))
    windows = [set((order[i:i + 40] // 20).tolist()) for i in range(0, 160, 40)]
    assert all(len(w) == 2 for w in windows) and set().union(*windows) == set(range(8))
    assert not torch.equal(order, store.epoch_order(1, seed=4))
    assert torch.equal(ActivationStore.open(tmp_path).epoch_order(0, 4), torch.randperm(
        160, generator=torch.Generator().manual_seed(4 * 100_003)))  # 0: the in-memory order


def test_half_precision_stores_halve_the_disk_and_stay_close(toy, tmp_path, in_memory):
    sizes = {}
    for dtype, tolerance in (("float16", 2e-3), ("bfloat16", 1e-2)):
        s = collect_store(toy, ToySource(PAIRS, SEED), tmp_path / dtype, shard_images=80, batch_size=BATCH,
                          dtype=dtype, progress=False)
        assert s.shards[0]["patches"].dtype == getattr(torch, dtype)
        sizes[dtype] = sum(x.entry["bytes"] for x in s.shards)
        batch, exact = s.batch_at(0, 32, 0), in_memory.batch_at(0, 32, 0)
        assert batch.patches.dtype == torch.float32
        rel = (batch.patches - exact.patches).norm() / exact.patches.norm()
        assert 0 < rel < tolerance
    full = sum(x.entry["bytes"] for x in collect_store(toy, ToySource(PAIRS, SEED), tmp_path / "f32", shard_images=80,
                                                        batch_size=BATCH, progress=False).shards)
    assert 0.45 < sizes["float16"] / full < 0.6 and sizes["bfloat16"] == sizes["float16"]


def test_truncated_shard_is_refused_then_collected_again(toy, tmp_path, store):
    folder = tmp_path / "s"
    collect_store(toy, ToySource(PAIRS, SEED), folder, shard_images=80, batch_size=BATCH, progress=False)
    shard = folder / "shard-00001.safetensors"
    others = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*") if p != shard}
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="shard-00001.safetensors has .* bytes.*truncated.*run the same collection"):
        ActivationStore.open(folder)
    again = collect_store(toy, ToySource(PAIRS, SEED), folder, shard_images=80, batch_size=BATCH, progress=False)
    assert shard.read_bytes() == data
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*") if p != shard} == others
    _assert_same_data(again.to_memory(), store.to_memory())


def test_stores_of_another_model_hook_or_setting_are_refused(toy, tmp_path, store):
    import copy

    other = copy.deepcopy(toy)
    with torch.no_grad():
        other.vision.blocks[0].attn.W_V.mul_(1.01)
    args = dict(shard_images=80, batch_size=BATCH, progress=False)
    with pytest.raises(ValueError, match="activations of another model.*fingerprint"):
        collect_store(other, ToySource(PAIRS, SEED), store.folder, **args)
    with pytest.raises(ValueError, match="other settings.*vision_hook"):
        collect_store(toy, ToySource(PAIRS, SEED), store.folder, vision_hook="blocks.1.hook_resid_post", **args)
    with pytest.raises(ValueError, match="other settings.*dtype"):
        collect_store(toy, ToySource(PAIRS, SEED), store.folder, dtype="float16", **args)
    with pytest.raises(ValueError, match="another model"):
        store.check_source(other)
    with pytest.raises(ValueError, match="text_hook"):
        store.check_source(toy, text_hook="blocks.0.hook_resid_post")
    store.check_source(toy)
    with pytest.raises(ValueError, match="multiple of batch_size"):
        collect_store(toy, ToySource(PAIRS, SEED), tmp_path / "x", shard_images=50, batch_size=BATCH)
    with pytest.raises(ValueError, match="dtype must be one of"):
        collect_store(toy, ToySource(PAIRS, SEED), tmp_path / "x", dtype="int8")
    with pytest.raises(FileNotFoundError, match="no LUCID activation store"):
        ActivationStore.open(tmp_path)


def test_kill_during_collection_loses_at_most_the_shard_being_written(toy, tmp_path):
    folder = tmp_path / "killed"
    command = [sys.executable, "-m", "sith_lens.cli", "lucid", "collect", "--toy-pairs", "640", "--toy-seed", "3",
               "--shard-images", "32", "--collect-batch-size", "32", "--out", str(folder)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, listed = time.time() + 120, 0
    while time.time() < deadline and proc.poll() is None:
        try:
            listed = len(json.loads((folder / INDEX_FILE).read_text())["shards"])
        except (OSError, ValueError):
            listed = 0
        if listed >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the collection ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    index = json.loads((folder / INDEX_FILE).read_text())
    assert not index["complete"] and 3 <= len(index["shards"]) < 20
    with pytest.raises(ValueError, match=r"stopped after \d+ of 20 shards; run the same collection again"):
        ActivationStore.open(folder)
    resumed = subprocess.run(command, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    whole = collect_store(toy, ToySource(640, 3), tmp_path / "whole", shard_images=32, batch_size=32, progress=False)
    _assert_same_data(ActivationStore.open(folder).to_memory(), whole.to_memory())
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_folder_store_groups_pairs_by_image(toy, tmp_path):
    from PIL import Image

    from sith_lens.lucid.collect import collect_folder_activations
    from sith_lens.toyworld import ToyWorld

    batch = ToyWorld(seed=2, image_size=toy.vision.cfg.image_size, patch_size=toy.vision.cfg.patch_size).batch(0, 3)
    for i, pixels in enumerate(batch.images):
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    lines = [(0, "a red circle"), (1, batch.texts[1]), (0, batch.texts[0]), (2, "a small blue square"), (1, "a scene")]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps({"image": f"{i}.png", "caption": c}) + "\n" for i, c in lines))
    mem = collect_folder_activations(toy, tmp_path / "captions.jsonl", batch_size=2, progress=False)
    store = collect_store(toy, FolderSource(str(tmp_path / "captions.jsonl")), tmp_path / "store", shard_images=2,
                          batch_size=2, progress=False).to_memory()
    order = store.extras["pair.index"]
    assert order.tolist() == [0, 2, 1, 4, 3]  # pairs grouped by image, each with its line number
    assert store.captions == [mem.captions[i] for i in order]
    assert torch.equal(store.image_index, mem.image_index[order])
    assert torch.allclose(store.patches, mem.patches, atol=1e-6)
    for p, line in enumerate(order.tolist()):
        n = int(mem.token_mask[line].sum())
        assert torch.allclose(store.tokens[p, :n], mem.tokens[line, :n], atol=1e-5)


def test_cli_collects_a_store_and_trains_from_it(tmp_path, capsys, monkeypatch):
    from sith_lens.cli import main

    monkeypatch.setenv("SITH_LENS_CACHE", str(tmp_path / "cache"))
    assert main(["lucid", "collect", "--toy-pairs", "96", "--shard-images", "64", "--collect-batch-size", "32",
                 "--dtype", "float16", "--out", str(tmp_path / "acts")]) == 0
    assert "collected 96 pairs (96 images, 64 patches each, width 128, float16) in 2 shards" in capsys.readouterr().out
    assert main(["lucid", "train", "--acts", str(tmp_path / "acts"), "--steps", "4", "--batch-size", "8", "--d-sae", "96",
                 "--n-private", "8", "--holdout", "16", "--shuffle-shards", "1", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pairs"] == 80 and summary["holdout"]["pairs"] == 16
    assert (tmp_path / "run" / "final" / "cfg.json").is_file()
    assert not (tmp_path / "cache").exists()  # read from the store, nothing collected


def test_kill_during_training_loses_at_most_the_checkpoint_being_written(store, tmp_path):
    from safetensors.torch import load_file

    from sith_lens.cli import main

    args = ["lucid", "train", "--acts", str(store.folder), "--d-sae", "96", "--n-private", "8", "--steps", "120",
            "--batch-size", "16", "--holdout", "0", "--no-progress", "--checkpoints", "12"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "sith_lens.cli", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (killed / "checkpoints").is_dir() and len(list((killed / "checkpoints").iterdir())) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists()
    whole = sorted((p for p in (killed / "checkpoints").iterdir() if not p.name.startswith(".")), key=lambda p: int(p.name))
    assert 2 <= len(whole) < 12 and all((p / "lucid_checkpoint.json").is_file() for p in whole)
    assert main([*args, "--resume", str(whole[-1]), "--out", str(tmp_path / "resumed")]) == 0
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    a = load_file(str(tmp_path / "resumed" / "final" / "sae_weights.safetensors"))
    b = load_file(str(tmp_path / "straight" / "final" / "sae_weights.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
