"""SigLIP through the same hooked towers: parity with transformers' SiglipModel, the MAP head's
hooks, and export back to a SiglipModel checkpoint (fp32, random weights, no downloads)."""

from __future__ import annotations

import pytest
import torch

import sith_lens as sl
from conftest import make_hf_siglip

RTOL = 1e-5


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


SHAPES = [
    dict(),
    dict(n_heads=3, d_head=12, patch=6, image=30, text_heads=6, text_d_head=6, n_ctx=7, act="gelu"),
]


@pytest.fixture(scope="module")
def hf_siglip():
    return make_hf_siglip()


@pytest.fixture(scope="module")
def siglip(hf_siglip):
    return sl.load_clip(hf_siglip)


def inputs(hf, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    size = hf.config.vision_config.image_size
    ids = torch.randint(2, 97, (batch, hf.config.text_config.max_position_embeddings))
    ids[:, -3:] = 1  # padding at the end, attended to as in SigLIP's training
    return torch.randn(batch, 3, size, size), ids


@pytest.mark.parametrize("shape", SHAPES, ids=["default", "odd-heads-patch6-gelu"])
@pytest.mark.parametrize("batch", [1, 3])
def test_image_and_text_embeddings_match_transformers(shape, batch):
    hf = make_hf_siglip(**shape)
    model = sl.load_clip(hf)
    pixels, ids = inputs(hf, batch, seed=batch)
    with torch.no_grad():
        want_img = hf.get_image_features(pixel_values=pixels).pooler_output
        want_txt = hf.get_text_features(input_ids=ids).pooler_output
        got_img = model.encode_image(pixels)
        got_txt = model.encode_text(ids)
    assert model.cfg.family == "siglip"
    assert got_img.shape == want_img.shape == (batch, hf.config.vision_config.hidden_size)
    assert rel_err(got_img, want_img) < RTOL
    assert rel_err(got_txt, want_txt) < RTOL


def test_text_padding_mask_matches_transformers(hf_siglip, siglip):
    _, ids = inputs(hf_siglip, 2)
    mask = (ids != 1).long()
    with torch.no_grad():
        want = hf_siglip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        got = siglip.text(ids, attention_mask=mask)
    assert rel_err(got, want) < RTOL


def test_logits_match_siglip_forward(hf_siglip, siglip):
    pixels, ids = inputs(hf_siglip, 3)
    with torch.no_grad():
        want = hf_siglip(input_ids=ids, pixel_values=pixels).logits_per_image
        img = siglip.encode_image(pixels, normalize=True)
        txt = siglip.encode_text(ids, normalize=True)
        got = img @ txt.T * siglip.logit_scale.exp() + siglip.logit_bias
    assert rel_err(got, want) < RTOL


def test_residual_stream_matches_hidden_states(hf_siglip, siglip):
    pixels, _ = inputs(hf_siglip, 2)
    with torch.no_grad():
        out = hf_siglip.vision_model(pixel_values=pixels, output_hidden_states=True)
        _, cache = siglip.vision.run_with_cache(pixels)
    assert cache["blocks.0.hook_resid_pre"].shape[1] == siglip.vision.cfg.n_patches  # no CLS token
    for layer in range(siglip.vision.cfg.n_layers):
        assert rel_err(cache["resid_post", layer], out.hidden_states[layer + 1]) < RTOL
    # ln_final centres and scales; its gain and bias are the read-out's (as after TL's fold_ln)
    assert rel_err(siglip.vision.ln_final.affine(cache["ln_final.hook_normalized"]), out.last_hidden_state) < RTOL


def test_map_head_hooks_exist_with_their_shapes(hf_siglip, siglip):
    pixels, _ = inputs(hf_siglip, 2)
    cfg = siglip.vision.cfg
    siglip.vision.set_use_attn_result(True)
    try:
        with torch.no_grad():
            embeds, cache = siglip.vision.run_with_cache(pixels)
    finally:
        siglip.vision.set_use_attn_result(False)
    assert cache["attn_pool.attn.hook_pattern"].shape == (2, cfg.n_heads, 1, cfg.n_patches)
    torch.testing.assert_close(cache["attn_pool.attn.hook_pattern"].sum(-1), torch.ones(2, cfg.n_heads, 1))
    assert cache["attn_pool.attn.hook_z"].shape == (2, 1, cfg.n_heads, cfg.d_head)
    result = cache["attn_pool.attn.hook_result"]
    assert result.shape == (2, 1, cfg.n_heads, cfg.d_model)
    # the per-head results plus the output bias are the attention output
    torch.testing.assert_close(result.sum(2) + siglip.vision.attn_pool.attn.b_O, cache["attn_pool.hook_attn_out"])
    torch.testing.assert_close(cache["attn_pool.hook_out"], embeds)


def test_zero_ablating_a_pooling_head_changes_the_embedding_and_patching_restores_it(hf_siglip, siglip):
    pixels, _ = inputs(hf_siglip, 3)
    with torch.no_grad():
        clean, cache = siglip.vision.run_with_cache(pixels, names_filter="attn_pool.attn.hook_z")

        def zero_head(z, hook, head=1):
            z = z.clone()
            z[:, :, head] = 0.0
            return z

        ablated = siglip.vision.run_with_hooks(pixels, fwd_hooks=[("attn_pool.attn.hook_z", zero_head)])
        patched = siglip.vision.run_with_hooks(
            pixels, fwd_hooks=[("attn_pool.attn.hook_z", lambda z, hook: cache["attn_pool.attn.hook_z"])]
        )
    assert rel_err(ablated, clean) > 1e-3
    torch.testing.assert_close(patched, clean, rtol=0, atol=0)


def test_per_token_outputs_pool_each_patch_on_its_own(hf_siglip, siglip):
    """return_type='tokens' pushes every token through the MAP head's value-output path and MLP,
    as if the probe attended to it alone: with one patch it is exactly the pooled embedding."""
    pixels, _ = inputs(hf_siglip, 2)
    head = siglip.vision.attn_pool
    with torch.no_grad():
        tokens = siglip.vision(pixels, return_type="tokens")
        _, cache = siglip.vision.run_with_cache(pixels, names_filter="ln_final.hook_normalized")
        normalized = siglip.vision.ln_final.affine(cache["ln_final.hook_normalized"])
        one = normalized[:, 3:4]  # a single token: the probe must attend to it
        torch.testing.assert_close(head(one), tokens[:, 3], rtol=1e-5, atol=1e-6)
        lin = normalized @ siglip.vision.W_proj  # the linear part, W_proj
        bias = head.attn.b_V.reshape(-1) @ head.attn.W_O.reshape(-1, head.attn.W_O.shape[-1]) + head.attn.b_O
    assert tokens.shape == (2, siglip.vision.cfg.n_patches, siglip.cfg.d_proj)
    assert not siglip.vision.joint_readout_is_exact
    v = lin + bias
    torch.testing.assert_close(v + head.mlp(head.ln(v)), tokens, rtol=1e-5, atol=1e-5)


def test_random_siglip_spec_and_summary():
    model = sl.load_clip("random:siglip-tiny")
    assert model.cfg.family == "siglip" and not model.vision.cfg.has_cls_token
    assert "attn_pool.attn.hook_pattern" in model.vision.hook_dict
    assert "siglip" in model.summary()


def test_save_pretrained_round_trips_through_siglip_model(tmp_path, hf_siglip, siglip):
    from transformers import SiglipModel

    out = siglip.save_pretrained(tmp_path / "sig")
    reloaded = SiglipModel.from_pretrained(out).eval()
    again = sl.load_clip(out)
    pixels, ids = inputs(hf_siglip, 2)
    with torch.no_grad():
        want = hf_siglip.get_image_features(pixel_values=pixels).pooler_output
        assert rel_err(reloaded.get_image_features(pixel_values=pixels).pooler_output, want) < RTOL
        assert rel_err(again.encode_image(pixels), want) < RTOL
        assert rel_err(again.encode_text(ids), hf_siglip.get_text_features(input_ids=ids).pooler_output) < RTOL
    assert float(again.logit_bias) == pytest.approx(float(hf_siglip.logit_bias.detach()))
    assert again.cfg.family == "siglip"
    # the default SigLIP preprocessing resizes to a square and normalises to [-1, 1]
    from PIL import Image

    pix = again.preprocess([Image.new("RGB", (50, 20), (255, 0, 0))])
    assert pix.shape == (1, 3, 32, 32) and float(pix.max()) == pytest.approx(1.0) and float(pix.min()) == pytest.approx(-1.0)


def test_strings_are_padded_to_the_full_context_and_pads_attended_as_in_training(toy):
    """SigLIP pools the last position, so tokenize pads every text to n_ctx, and encode_text passes
    no padding mask (transformers' SiglipModel, as trained). A word-level HF tokenizer stands in for
    SigLIP's SentencePiece one (whose files cannot be downloaded here)."""
    hf = make_hf_siglip(n_ctx=10)
    with torch.no_grad():
        hf.text_model.embeddings.token_embedding.weight.data = torch.randn(len(toy.tokenizer), 48)
    hf.config.text_config.vocab_size = len(toy.tokenizer)
    model = sl.load_clip(hf, tokenizer=toy.tokenizer)
    toks = model.tokenize(["a red circle", "a small blue striped square on the left"])
    assert toks.input_ids.shape == (2, 10)
    assert toks.attention_mask[0].tolist() == [1] * 5 + [0] * 5  # the mask still marks the real tokens
    with torch.no_grad():
        want = hf.get_text_features(input_ids=toks.input_ids).pooler_output
        got = model.encode_text(["a red circle", "a small blue striped square on the left"])
    assert rel_err(got, want) < RTOL


def test_sith_runs_on_siglip_and_says_how_it_reads_out():
    """No CLS token: the read-out goes through the MAP head's value-output map (documented, and
    warned about); explanations, and an identity edit, work as for CLIP."""
    model = sl.load_clip("random:siglip-tiny")
    torch.manual_seed(0)
    atoms = torch.nn.functional.normalize(torch.randn(40, model.cfg.d_proj), dim=-1)
    concepts = sl.ConceptDictionary.from_embeddings([f"c{i}" for i in range(40)], atoms)
    with pytest.warns(UserWarning, match="pools with an attention head"):
        result = sl.explain_heads(model, concepts, k=3, progress=False)
    cfg = model.vision.cfg
    assert result.singular_values.shape == (cfg.n_layers, cfg.n_heads, cfg.d_head)
    torch.testing.assert_close(model.vision.W_proj, torch.einsum(
        "hde,hef->df", model.vision.attn_pool.attn.W_V, model.vision.attn_pool.attn.W_O))
    edited = sl.edit_heads(model, result, torch.ones_like(result.singular_values))
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(edited.encode_image(pixels), model.encode_image(pixels), rtol=1e-5, atol=1e-5)
