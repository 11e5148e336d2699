"""Forward-pass speed of the hooked vision tower against transformers' own vision model.

Both run the same random weights (``--model vit-b-32``: CLIP ViT-B/32, 224 px, 12 layers x 12
heads; ``--model siglip-b-16``: SigLIP ViT-B/16 with its MAP head) on the same batch, in one
process, interleaved, so that machine noise hits both alike. Three timings:

- transformers ``get_image_features``, the baseline: ``CLIPModel.vision_model`` plus the visual
  projection (or ``SiglipModel.vision_model`` with its MAP head), so that both sides produce the
  same embedding; transformers' default attention backend (reported as ``hf_attention``);
- ``HookedCLIPVision.forward`` with no hooks attached (TransformerLens's optional hook points,
  ``hook_q_input``/``hook_k_input``/``hook_v_input``, ``hook_attn_in``, ``hook_mlp_in``, present but
  switched off);
- the same forward with the split-input switches on (``set_use_split_qkv_input(True)``,
  ``set_use_hook_mlp_in(True)``: one copy of each block's input per head, hooks unused);
- ``HookedCLIPVision.run_with_cache`` (every hook cached, attention patterns materialised).

``--bridge`` adds TransformerLens 3's ``TransformerBridge`` over the same tower (sith-lens's
adapter, ``adapters/bridge.py``): its plain forward and its ``run_with_cache``, against transformers
(its default attention and the eager attention the bridge forces, so that it can hook the pattern)
and against our tower; keys ``bridge_over_transformers``, ``bridge_over_transformers_eager``,
``bridge_over_ours``, ``bridge_cache_over_ours_cache`` and ``bridge_parity_rel_err`` (the bridge's
last hidden state against our last ``hook_resid_post``).

The last line printed is JSON: ``{"ratio_no_hooks": ..., "ratio_split_inputs": ...,
"ratio_with_cache": ..., ...}`` where a ratio is our median time over the baseline's.
Targets: ``ratio_no_hooks <= 1.05`` (the unused hook points cost nothing); the split inputs are
reported (TransformerLens pays the same: per-head copies and per-head projections).

    python benchmarks/hooked_forward.py [--model vit-b-32|siglip-b-16] [--batch 16] [--repeats 7] [--device cpu] [--bridge]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vit-b-32", choices=["vit-b-32", "vit-l-14", "siglip-b-16"],
                        help="built-in random config (see load_clip's random: specs)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bridge", action="store_true", help="also time TransformerLens 3's TransformerBridge")
    args = parser.parse_args()
    if args.bridge:  # boot() looks up an image processor under the model's name even with hf_model=;
        # offline, before huggingface_hub reads its settings, that fails at once instead of retrying
        os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import sith_lens as sl
    from sith_lens.adapters.loading import _random_model

    hf = _random_model(args.model).to(args.device)
    model = sl.load_clip(hf, device=args.device)
    torch.manual_seed(0)
    size = model.vision.cfg.image_size
    pixels = torch.randn(args.batch, 3, size, size, device=args.device)

    with torch.inference_mode():
        # parity on this very batch, so that the timing compares like with like
        ref = hf.get_image_features(pixel_values=pixels).pooler_output
        ours = model.vision(pixels)
        parity = ((ours - ref).norm() / ref.norm()).item()

        def split_inputs() -> torch.Tensor:
            model.vision.set_use_split_qkv_input(True)
            model.vision.set_use_hook_mlp_in(True)
            try:
                return model.vision(pixels)
            finally:
                model.vision.set_use_split_qkv_input(False)
                model.vision.set_use_hook_mlp_in(False)

        split_parity = ((split_inputs() - ours).norm() / ours.norm()).item()
        runs = {
            "transformers": lambda: hf.get_image_features(pixel_values=pixels),
            "hooked_no_hooks": lambda: model.vision(pixels),
            "hooked_split_inputs": split_inputs,
            "hooked_run_with_cache": lambda: model.vision.run_with_cache(pixels),
        }
        bridge_parity = None
        if args.bridge:
            bridge, eager = bridge_and_eager_tower(hf, args.device)
            last = f"blocks.{model.vision.cfg.n_layers - 1}.hook_resid_post"
            _, cache = model.vision.run_with_cache(pixels, names_filter=last)
            bridged = bridge(pixels)
            bridge_parity = ((bridged - cache[last]).norm() / cache[last].norm()).item()
            runs.update({
                "transformers_eager": lambda: eager(pixel_values=pixels),
                "bridge_no_hooks": lambda: bridge(pixels),
                "bridge_run_with_cache": lambda: bridge.run_with_cache(pixels),
            })
        for fn in runs.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn, args.device))

    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in med.items():
        print(f"{name:>24}: median {t * 1000:8.1f} ms over {args.repeats} runs (batch {args.batch})")
    result = {
        "ratio_no_hooks": round(med["hooked_no_hooks"] / med["transformers"], 3),
        "ratio_split_inputs": round(med["hooked_split_inputs"] / med["transformers"], 3),
        "split_inputs_over_no_hooks": round(med["hooked_split_inputs"] / med["hooked_no_hooks"], 3),
        "ratio_with_cache": round(med["hooked_run_with_cache"] / med["transformers"], 3),
        "transformers_ms": round(med["transformers"] * 1000, 1),
        "parity_rel_err": parity,
        "split_inputs_parity_rel_err": split_parity,
        "hf_attention": hf.config._attn_implementation,
        "model": args.model,
        "batch": args.batch,
        "device": args.device,
        "torch": torch.__version__,
    }
    if args.bridge:
        result.update({
            "bridge_over_transformers": round(med["bridge_no_hooks"] / med["transformers"], 3),
            "bridge_over_transformers_eager": round(med["bridge_no_hooks"] / med["transformers_eager"], 3),
            "bridge_over_ours": round(med["bridge_no_hooks"] / med["hooked_no_hooks"], 3),
            "bridge_cache_over_ours_cache": round(med["bridge_run_with_cache"] / med["hooked_run_with_cache"], 3),
            "bridge_parity_rel_err": bridge_parity,
        })
    print(json.dumps(result))


def bridge_and_eager_tower(hf, device: str):
    """A TransformerBridge over a copy of ``hf``'s vision tower (sith-lens's adapter), and another
    copy run by transformers with the eager attention the bridge forces."""
    from transformer_lens.model_bridge import TransformerBridge

    from sith_lens.adapters.bridge import vision_tower

    bridge = TransformerBridge.boot_transformers("benchmark", hf_model=vision_tower(hf), device=device)
    eager = vision_tower(hf)
    eager.set_attn_implementation("eager")
    return bridge, eager


if __name__ == "__main__":
    main()
