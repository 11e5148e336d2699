"""A tour of the hooked vision tower with the analyses TransformerLens users already run.

For a batch of images it prints, per head of the last layers:
- the direct contribution of the head to the image embedding (its share of the embedding's norm,
  via ``stack_head_results(apply_ln=True)`` read out by ``W_joint``, ``ln_final``'s gain folded
  into the projection);
- how much the embedding moves when the head is zero-ablated (``run_with_hooks`` on ``hook_z``);
- how much attention the CLS token pays to itself.

    python demos/hooks_tour.py [--model toy] [--images a.jpg b.png] [--last-layers 2]

With no ``--images`` it uses eight toy-world scenes for the toy model and random pixels for any
other model, which is enough to see the machinery work.
"""

from __future__ import annotations

import argparse

import torch

import sith_lens as sl


def head_table(model: sl.HookedCLIP, pixels: torch.Tensor, last_layers: int) -> list[dict]:
    """One row per head of the last ``last_layers`` layers (see the module docstring)."""
    tower = model.vision
    n_layers, n_heads = tower.cfg.n_layers, tower.cfg.n_heads
    with torch.no_grad():
        embeds, cache = tower.run_with_cache(pixels)
        heads = cache.stack_head_results(apply_ln=True)[:, :, 0]  # [layer*head, batch, d_model] at CLS
        direct = heads @ tower.W_joint  # [layer*head, batch, d_proj]; b_joint is no head's
        rows = []
        for layer in range(n_layers - last_layers, n_layers):
            for head in range(n_heads):
                def ablate(z, hook, head=head):
                    z[:, :, head] = 0.0
                    return z

                ablated = tower.run_with_hooks(pixels, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", ablate)])
                rows.append({
                    "head": f"L{layer}H{head}",
                    "direct_share": (direct[layer * n_heads + head].norm(dim=-1) / embeds.norm(dim=-1)).mean().item(),
                    "ablation_shift": ((ablated - embeds).norm(dim=-1) / embeds.norm(dim=-1)).mean().item(),
                    "cls_self_attn": cache["pattern", layer][:, head, 0, 0].mean().item(),
                })
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--images", nargs="*", default=[])
    parser.add_argument("--last-layers", type=int, default=2)
    args = parser.parse_args(argv)

    model = sl.load_clip(args.model)
    size = model.vision.cfg.image_size
    if args.images:
        pixels = model.preprocess(args.images)
    elif args.model == "toy":
        from sith_lens.toyworld import ToyWorld

        pixels = ToyWorld(seed=0).batch(0, 8).pixels
    else:
        torch.manual_seed(0)
        pixels = torch.randn(4, 3, size, size)
    last = min(args.last_layers, model.vision.cfg.n_layers)
    print(f"{model.cfg.model_name}: {len(pixels)} images, last {last} layers")
    print(f"{'head':>7} {'direct share':>13} {'ablation shift':>15} {'CLS self-attn':>14}")
    for row in head_table(model, pixels, last):
        print(f"{row['head']:>7} {row['direct_share']:>13.3f} {row['ablation_shift']:>15.3f} {row['cls_self_attn']:>14.3f}")


if __name__ == "__main__":
    main()
