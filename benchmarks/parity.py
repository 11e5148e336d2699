"""Numerical parity of the hooked towers with transformers' CLIPModel, on the test suite's shapes.

For every shape in ``tests/test_parity.py`` (quick_gelu and gelu, 4-6 heads, d_head 8-24, patch
sizes 4-8) and batch sizes 1 and 3, it compares image and text embeddings in fp32 with random
weights and reports the largest relative error (``||ours - theirs|| / ||theirs||``).

The last line printed is JSON: ``{"max_rel_err_image": ..., "max_rel_err_text": ..., ...}``.

    python benchmarks/parity.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_hf_clip  # noqa: E402  (the suite's own tiny-model builder and shapes)
from test_parity import SHAPES, rel_err  # noqa: E402

import sith_lens as sl  # noqa: E402


def main() -> None:
    worst = {"image": 0.0, "text": 0.0}
    for shape in SHAPES:
        hf = make_hf_clip(**shape)
        model = sl.load_clip(hf)
        size = hf.config.vision_config.image_size
        for batch in (1, 3):
            torch.manual_seed(batch)
            pixels = torch.randn(batch, 3, size, size)
            ids = torch.randint(1, 98, (batch, 7))
            ids[:, -2] = 98  # end-of-text
            with torch.no_grad():
                errs = {
                    "image": rel_err(model.encode_image(pixels), hf.get_image_features(pixel_values=pixels).pooler_output),
                    "text": rel_err(model.encode_text(ids), hf.get_text_features(input_ids=ids).pooler_output),
                }
            print(f"{shape} batch {batch}: image {errs['image']:.2e}, text {errs['text']:.2e}")
            worst = {k: max(worst[k], errs[k]) for k in worst}
    print(json.dumps({"max_rel_err_image": worst["image"], "max_rel_err_text": worst["text"],
                      "cases": 2 * len(SHAPES), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
