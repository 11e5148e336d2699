"""The runnable example scripts run end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path


DEMOS = Path(__file__).resolve().parents[1] / "demos"


def load_demo(name: str):
    spec = importlib.util.spec_from_file_location(name, DEMOS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hooks_tour_reports_every_head_of_the_last_layers(tiny, pixels, capsys):
    tour = load_demo("hooks_tour")
    rows = tour.head_table(tiny, pixels, last_layers=2)
    assert [r["head"] for r in rows] == [f"L{l}H{h}" for l in (1, 2) for h in range(4)]
    assert all(r["ablation_shift"] > 0 and r["direct_share"] > 0 for r in rows)
    assert all(0 <= r["cls_self_attn"] <= 1 for r in rows)
    tour.main(["--model", "random:tiny", "--last-layers", "1"])
    assert "L1H3" in capsys.readouterr().out


def test_hooked_forward_benchmark_runs_for_siglip():
    """The speed benchmark's last line is JSON with both ratios and a parity check (batch 1, one
    repeat: this checks that the script runs, not the speed)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "hooked_forward.py"
    out = subprocess.run(
        [sys.executable, str(script), "--model", "siglip-b-16", "--batch", "1", "--repeats", "1", "--device", "cpu"],
        capture_output=True, text=True, check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["model"] == "siglip-b-16" and result["parity_rel_err"] < 1e-5
    assert result["ratio_no_hooks"] > 0 and result["ratio_with_cache"] > 0 and result["ratio_split_inputs"] > 0
    assert result["split_inputs_parity_rel_err"] < 1e-5


def test_prisma_tour_runs_on_the_toy_clip_and_a_random_clip(capsys):
    """The Prisma-style analyses run unchanged on the toy CLIP (class prompts) and on a random
    CLIP without a tokenizer (random class embeddings); on the toy the attribution is checked
    against the logits it explains."""
    import torch

    import sith_lens as sl

    tour = load_demo("prisma_tour")
    for model in ("toy", "random:tiny"):
        tour.main(["--model", model])
        out = capsys.readouterr().out
        assert "1. heads" in out and "2. patch logit lens" in out and "3. activation patching" in out
    toy = sl.load_clip("toy")
    tour.attach_head(toy)
    from sith_lens.toyworld import ToyWorld

    pixels = ToyWorld(seed=0).batch(0, 3).pixels
    with torch.no_grad():
        logits, cache = toy.vision.run_with_cache(pixels, return_type="logits")
        lens = tour.patch_logit_lens(toy.vision, cache, target=2, image=1)
    assert lens.shape == (toy.vision.cfg.n_layers + 1, toy.vision.cfg.n_ctx)
    torch.testing.assert_close(lens[-1, 0], logits[1, 2], rtol=1e-4, atol=1e-4)
    top = tour.head_attribution(toy.vision, cache, logits.argmax(-1), top=3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]
