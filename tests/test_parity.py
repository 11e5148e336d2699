"""The hooked towers reproduce transformers' CLIPModel exactly (fp32, random weights)."""

from __future__ import annotations

import pytest
import torch

import sith_lens as sl
from conftest import make_hf_clip

RTOL = 1e-5


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


SHAPES = [
    dict(act="quick_gelu"),
    dict(act="gelu"),
    dict(act="gelu", n_heads=5, d_head=24, patch=4, image=24, text_heads=6, text_d_head=10),
    dict(act="quick_gelu", n_heads=6, d_head=8, patch=6, image=30, text_heads=5, text_d_head=8),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
@pytest.mark.parametrize("batch", [1, 3])
def test_image_and_text_embeddings_match_transformers(shape, batch):
    hf = make_hf_clip(**shape)
    model = sl.load_clip(hf)
    size = hf.config.vision_config.image_size
    torch.manual_seed(batch)
    pixels = torch.randn(batch, 3, size, size)
    ids = torch.randint(1, 98, (batch, 7))
    ids[:, -2] = 98  # end-of-text, followed by one padding token
    mask = torch.ones_like(ids)
    mask[:, -1] = 0
    with torch.no_grad():
        want_img = hf.get_image_features(pixel_values=pixels).pooler_output
        want_txt = hf.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        got_img = model.encode_image(pixels)
        got_txt = model.encode_text(ids)
        got_txt_masked = model.text(ids, attention_mask=mask)
    assert got_img.shape == (batch, hf.config.projection_dim)
    assert rel_err(got_img, want_img) < RTOL
    assert rel_err(got_txt, want_txt) < RTOL
    assert rel_err(got_txt_masked, want_txt) < RTOL


def test_per_token_outputs_match_transformers_hidden_states(hf_tiny, tiny, pixels):
    with torch.no_grad():
        hf_out = hf_tiny.vision_model(pixel_values=pixels, output_hidden_states=True)
        _, cache = tiny.vision.run_with_cache(pixels)
    for layer in range(tiny.vision.cfg.n_layers):
        # transformers' hidden_states[l + 1] is the residual stream after block l
        assert rel_err(cache["resid_post", layer], hf_out.hidden_states[layer + 1]) < RTOL
    assert rel_err(cache["blocks.0.hook_resid_pre"], hf_out.hidden_states[0]) < RTOL


def test_eos_pooling_by_token_id(token_batch):
    """Newer configs pool at the first eos_token_id rather than the highest id."""
    hf = make_hf_clip(eos_token_id=50)
    model = sl.load_clip(hf)
    ids, mask = token_batch
    ids = ids.clone()
    ids[ids == 98] = 50
    ids[0, 0] = 97  # the highest id is no longer the end-of-text token
    with torch.no_grad():
        want = hf.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        got = model.text(ids, attention_mask=mask)
    assert rel_err(got, want) < RTOL


def test_loading_does_not_share_storage(hf_tiny):
    model = sl.load_clip(hf_tiny)
    with torch.no_grad():
        model.vision.blocks[0].attn.W_V.zero_()
    assert hf_tiny.vision_model.encoder.layers[0].self_attn.v_proj.weight.abs().sum() > 0
