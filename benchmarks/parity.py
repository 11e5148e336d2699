"""Numerical parity of the hooked towers with each family's reference implementation, on the test
suite's shapes: transformers' CLIPModel and SiglipModel, and open_clip's own forward when
open_clip is importable (run it with .venv-open-clip/bin/python for that family).

For every shape in ``tests/test_parity.py``, ``tests/test_siglip.py`` and
``tests/test_open_clip.py`` and batch sizes 1 and 3, it compares image and text embeddings in fp32
with random weights and reports the largest relative error (``||ours - theirs|| / ||theirs||``)
per family.

The last line printed is JSON: ``{"clip": {"max_rel_err_image": ..., "max_rel_err_text": ...,
"cases": ...}, "siglip": {...}, "open_clip": {...} or null, ...}``.

    python benchmarks/parity.py
    .venv-open-clip/bin/python benchmarks/parity.py     # adds OpenCLIP
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Iterable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_hf_clip, make_hf_siglip  # noqa: E402  (the suite's own tiny-model builders and shapes)
from test_parity import SHAPES, rel_err  # noqa: E402
from test_siglip import SHAPES as SIGLIP_SHAPES  # noqa: E402
from test_siglip import inputs as siglip_inputs  # noqa: E402

import sith_lens as sl  # noqa: E402


def clip_cases() -> Iterable[tuple[str, Any, Any, torch.Tensor, torch.Tensor]]:
    for shape in SHAPES:
        hf = make_hf_clip(**shape)
        size = hf.config.vision_config.image_size
        for batch in (1, 3):
            torch.manual_seed(batch)
            ids = torch.randint(1, 98, (batch, 7))
            ids[:, -2] = 98  # end-of-text
            yield (f"{shape} batch {batch}", lambda p, hf=hf: hf.get_image_features(pixel_values=p).pooler_output,
                   lambda t, hf=hf: hf.get_text_features(input_ids=t).pooler_output, hf,
                   (torch.randn(batch, 3, size, size), ids))


def siglip_cases() -> Iterable[tuple[str, Any, Any, torch.Tensor, torch.Tensor]]:
    for shape in SIGLIP_SHAPES:
        hf = make_hf_siglip(**shape)
        for batch in (1, 3):
            yield (f"{shape} batch {batch}", lambda p, hf=hf: hf.get_image_features(pixel_values=p).pooler_output,
                   lambda t, hf=hf: hf.get_text_features(input_ids=t).pooler_output, hf, siglip_inputs(hf, batch, batch))


def open_clip_cases() -> Iterable[tuple[str, Any, Any, torch.Tensor, torch.Tensor]]:
    from test_open_clip import VARIANTS, make_open_clip, token_ids

    for variant, kwargs in VARIANTS.items():
        reference = make_open_clip(**kwargs)
        size = reference.visual.image_size[0]
        for batch in (1, 3):
            torch.manual_seed(batch)
            pixels = torch.randn(batch, 3, size, size)
            n_ctx = getattr(reference, "text", reference).positional_embedding.shape[0]
            yield (f"{variant} batch {batch}", reference.encode_image, reference.encode_text, reference,
                   (pixels, token_ids(batch, n_ctx, seed=batch)))


def measure(cases: Iterable[tuple[str, Any, Any, Any, Any]]) -> dict[str, float | int]:
    worst = {"image": 0.0, "text": 0.0}
    n = 0
    for label, image_fn, text_fn, reference, (pixels, ids) in cases:
        model = sl.load_clip(reference)
        with torch.no_grad():
            errs = {"image": rel_err(model.encode_image(pixels), image_fn(pixels)),
                    "text": rel_err(model.encode_text(ids), text_fn(ids))}
        print(f"  {label}: image {errs['image']:.2e}, text {errs['text']:.2e}")
        worst = {k: max(worst[k], errs[k]) for k in worst}
        n += 1
    return {"max_rel_err_image": worst["image"], "max_rel_err_text": worst["text"], "cases": n}


def main() -> None:
    out: dict[str, Any] = {}
    for family, cases in (("clip", clip_cases), ("siglip", siglip_cases)):
        print(family)
        out[family] = measure(cases())
    if importlib.util.find_spec("open_clip") is not None:
        print("open_clip")
        out["open_clip"] = measure(open_clip_cases())
    else:
        print("open_clip: not installed here; run this script with .venv-open-clip/bin/python")
        out["open_clip"] = None
    out["torch"] = torch.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
