"""LUCID at scale on this machine: the sharded store and multi-process training against the
in-memory path they replace, measured in one run (ratios, so the machine's speed cancels).

1. collection: toy pairs per second into the sharded store (float16) vs the in-memory path
   (``collect_toy_activations`` + ``PairedActivations.save``), 2,000 pairs, 3 alternating repeats
   (target: >= 0.9x);
2. memory: peak resident memory of a process collecting 20,000 toy pairs vs 2,000, into the
   store and (for contrast) in memory (target for the store: <= 1.2x, flat);
3. training: ``train_lucid`` steps per second reading the store (float32 and float16, memory-
   mapped) vs the same pairs in memory, default SAE settings, 3 alternating repeats (target: >= 0.8x);
4. processes: the same training launched by torchrun on 2 processes (gloo, 1 thread each) vs 1
   process with 2 threads and with 1 thread, same global batch (reported; this machine has 2 cores);
5. disk: bytes per pair of a float16 store for common CLIP towers, from the shard layout, with the
   layout's formula checked against the toy store's measured size.

Each ratio is the median of the repeats, with the repeats' range (3 repeats give no useful
interval beyond that).

    python benchmarks/lucid_scale.py          # ~17 min on 2 cores; the last line is JSON
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPEATS = 3
SMALL, LARGE = 2_000, 20_000
TRAIN_STEPS, BATCH = 150, 32

_COLLECT = """
import json, resource, sys, time
import sith_lens as sl
from sith_lens.lucid.collect import collect_toy_activations
from sith_lens.lucid.store import ToySource, collect_store
mode, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
model = sl.load_clip("toy")
start = time.perf_counter()
if mode == "store":
    collect_store(model, ToySource(n, 21), out, shard_images=1024, dtype="float16", progress=False)
else:
    collect_toy_activations(model, n, seed=21, progress=False).save(out)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _collect(mode: str, n: int, folder: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", _COLLECT, mode, str(n), str(folder)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratio(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def collection(root: Path) -> dict[str, Any]:
    """Pairs per second, store vs in memory, and peak memory at 2,000 and 20,000 pairs."""
    ratios, rates = [], {"store": [], "memory": []}
    for r in range(REPEATS):
        store = _collect("store", SMALL, root / f"s{r}")
        memory = _collect("memory", SMALL, root / f"m{r}")
        rates["store"].append(SMALL / store["seconds"])
        rates["memory"].append(SMALL / memory["seconds"])
        ratios.append(rates["store"][-1] / rates["memory"][-1])
    peaks = {}
    for mode in ("store", "in_memory"):
        small = _collect(mode, SMALL, root / f"{mode}-small")["peak_rss_mb"]
        large = _collect(mode, LARGE, root / f"{mode}-large")["peak_rss_mb"]
        peaks[mode] = {"peak_rss_mb_2k": round(small), "peak_rss_mb_20k": round(large), "ratio_20k_over_2k": round(large / small, 3)}
    return {"store_over_memory_pairs_per_s": _ratio(ratios),
            "pairs_per_s": {k: round(statistics.median(v), 1) for k, v in rates.items()}, "peak_memory": peaks}


def training(root: Path) -> dict[str, Any]:
    """Steps per second from the store (float32, float16) vs the same pairs in memory."""
    import torch

    import sith_lens as sl
    from sith_lens.lucid.collect import collect_toy_activations
    from sith_lens.lucid.defaults import DEFAULTS
    from sith_lens.lucid.sae import TrainingLucidSAEConfig, train_lucid
    from sith_lens.lucid.store import ActivationStore, ToySource, collect_store

    torch.set_num_threads(2)
    model = sl.load_clip("toy")
    sources = {"memory": collect_toy_activations(model, SMALL, seed=21, progress=False)}
    for dtype in ("float32", "float16"):
        collect_store(model, ToySource(SMALL, 21), root / f"train-{dtype}", shard_images=1024, dtype=dtype, progress=False)
        sources[dtype] = ActivationStore.open(root / f"train-{dtype}")

    def steps_per_s(acts: Any) -> float:
        cfg = TrainingLucidSAEConfig(d_in=acts.d_in, d_sae=DEFAULTS.d_sae, n_private_vision=DEFAULTS.n_private,
                                     n_private_text=DEFAULTS.n_private)
        start = time.perf_counter()
        train_lucid(acts, cfg, steps=TRAIN_STEPS, batch_size=BATCH, progress=False)
        return TRAIN_STEPS / (time.perf_counter() - start)

    ratios: dict[str, list[float]] = {"float32": [], "float16": []}
    rates: dict[str, list[float]] = {k: [] for k in sources}
    for _ in range(REPEATS):
        for name in ("memory", "float32", "float16"):
            rates[name].append(steps_per_s(sources[name]))
        for dtype in ratios:
            ratios[dtype].append(rates[dtype][-1] / rates["memory"][-1])
    return {"store_over_memory_steps_per_s": {k: _ratio(v) for k, v in ratios.items()},
            "steps_per_s": {k: round(statistics.median(v), 2) for k, v in rates.items()}}


def processes(root: Path) -> dict[str, Any]:
    """torchrun with 2 processes vs 1 process, same global batch, training time from the CLI's report."""
    store = root / "train-float32"
    args = ["lucid", "train", "--acts", str(store), "--steps", str(TRAIN_STEPS), "--holdout", "0", "--no-progress"]

    def seconds(nproc: int, out: Path, threads: int | None, batch: int) -> float:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] \
            if nproc > 1 else [sys.executable]
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        done = subprocess.run([*launcher, "-m", "sith_lens.cli", *args, "--batch-size", str(batch), "--out", str(out)],
                              capture_output=True, text=True, check=True, env=env)
        return json.loads(done.stdout[done.stdout.index("{"):])["train_seconds"]

    # the last row is one rank's compute alone: 1 thread on half the batch, no collectives
    runs = {"1 process, 2 threads": (1, None, BATCH), "1 process, 1 thread": (1, 1, BATCH),
            "2 processes, 1 thread each": (2, None, BATCH), "1 process, 1 thread, half the batch": (1, 1, BATCH // 2)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    ratios: dict[str, list[float]] = {"over_1_process_2_threads": [], "over_1_process_1_thread": [],
                                      "ideal_over_1_process_1_thread": []}
    for r in range(REPEATS):
        for i, (name, spec) in enumerate(runs.items()):
            times[name].append(seconds(spec[0], root / f"p{i}-{r}", *spec[1:]))
        two, one, half = (times[k][-1] for k in ("2 processes, 1 thread each", "1 process, 1 thread",
                                                  "1 process, 1 thread, half the batch"))
        ratios["over_1_process_2_threads"].append(times["1 process, 2 threads"][-1] / two)
        ratios["over_1_process_1_thread"].append(one / two)
        ratios["ideal_over_1_process_1_thread"].append(one / half)
    t = {k: statistics.median(v) for k, v in times.items()}
    overhead = (t["2 processes, 1 thread each"] - t["1 process, 1 thread, half the batch"]) / TRAIN_STEPS
    return {"two_processes_steps_per_s": {k: _ratio(v) for k, v in ratios.items()}, "train_seconds": t,
            "collective_ms_per_step": round(1000 * overhead, 1),
            "note": "2 cores; torchrun gives each process 1 thread; 'ideal' is a rank's compute alone (half the "
                    "batch, 1 thread), and collective_ms_per_step what the 2-process run spends beyond it"}


#: Patches per image (CLS excluded), joint-space width and residual width of common towers.
TOWERS = {
    "ViT-B/32 (224 px)": (49, 512, 768),
    "ViT-B/16 (224 px)": (196, 512, 768),
    "ViT-L/14 (224 px)": (256, 768, 1024),
    "SigLIP-B/16 (224 px)": (196, 768, 768),
}
#: Bytes per token slot besides its activation: mask (1), weight (4), id (8), position (8).
SLOT_BYTES = 1 + 4 + 8 + 8
#: Bytes per pair besides its slots: image index and pair index (8 each).
PAIR_BYTES = 16


def pair_bytes(n_patches: int, d: int, slots: float, itemsize: int = 2, extra_per_pair: float = 0.0) -> float:
    """Bytes per image-caption pair of a store with one caption per image."""
    return n_patches * d * itemsize + slots * (d * itemsize + SLOT_BYTES) + PAIR_BYTES + extra_per_pair


def disk(root: Path) -> dict[str, Any]:
    """The layout's formula against the toy store's tensors, then the table for real towers (the
    captions and token strings in each shard's header taken at the toy store's size per pair)."""
    from sith_lens.lucid.store import ActivationStore

    store = ActivationStore.open(root / "train-float16")
    core = [*("patches", "tokens", "token_mask", "token_weights", "token_ids", "token_positions", "image_index"),
            "extra.pair.index"]
    measured = predicted = header = 0.0
    for s in store.shards:
        sizes = {k: v.numel() * v.element_size() for k, v in s.tensors.items()}
        measured += sum(sizes[k] for k in core)
        predicted += s.entry["n_pairs"] * pair_bytes(store.grid ** 2, store.d_in, s.entry["width"])
        header += s.entry["bytes"] - sum(sizes.values())
    header_per_pair = header / len(store)
    check = {"measured_bytes": int(measured), "formula_bytes": int(predicted),
             "formula_over_measured": round(predicted / measured, 6), "header_bytes_per_pair": round(header_per_pair)}
    rows = {}
    for name, (n_patches, joint, resid) in TOWERS.items():
        for hook, d in (("hook_joint_tokens", joint), ("residual hook", resid)):
            for slots in (16, 77):  # captions padded to 16 slots; every slot of a 77-token text tower
                b = pair_bytes(n_patches, d, slots, extra_per_pair=header_per_pair)
                rows[f"{name} | {hook} (d={d}) | {slots} slots"] = {"kb_per_pair": round(b / 1e3, 1),
                                                                    "gb_per_million": round(b / 1e3)}
    return {"check_on_toy_store": check, "float16_per_pair": rows}


def main() -> None:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results: dict[str, Any] = {"collection": collection(root), "training": training(root)}
        results["processes"] = processes(root)
        results["disk"] = disk(root)
    results.update(machine=f"{os.cpu_count()} cores", torch=torch.__version__, date=time.strftime("%Y-%m-%d"))
    c, t, p = results["collection"], results["training"], results["processes"]
    print(f"collection pairs/s, store / in memory: {c['store_over_memory_pairs_per_s']} (target >= 0.9)")
    for mode, row in c["peak_memory"].items():
        print(f"peak memory {mode}: {row['peak_rss_mb_2k']} MB at 2k pairs, {row['peak_rss_mb_20k']} MB at 20k: "
              f"{row['ratio_20k_over_2k']}x" + (" (target <= 1.2)" if mode == "store" else " (the path the store replaces)"))
    for dtype, row in t["store_over_memory_steps_per_s"].items():
        print(f"training steps/s, {dtype} store / in memory: {row} (target >= 0.8)")
    labels = {"over_1_process_2_threads": "2 processes (1 thread each) / 1 process (2 threads)",
              "over_1_process_1_thread": "2 processes (1 thread each) / 1 process (1 thread)",
              "ideal_over_1_process_1_thread": "the most 2 could give: one rank's compute alone / 1 process (1 thread)"}
    for base, row in p["two_processes_steps_per_s"].items():
        print(f"training steps/s, {labels[base]}: {row}")
    print(f"  the 2-process run spends {p['collective_ms_per_step']} ms per step beyond one rank's compute "
          "(gloo collectives on this CPU)")
    print(f"disk: the layout's formula / the toy store's tensors: {results['disk']['check_on_toy_store']}")
    for name, row in results["disk"]["float16_per_pair"].items():
        print(f"  {name}: {row['kb_per_pair']} kB per pair, {row['gb_per_million']} GB per million pairs")
    out = Path(__file__).parent / "results" / "lucid_scale.json"
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
