"""TransformerLens behaviour of the hooked towers: names, shapes, caches, interventions."""

from __future__ import annotations

import einops
import pytest
import torch
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.FactoredMatrix import FactoredMatrix


PER_BLOCK = [
    "hook_resid_pre", "ln1.hook_scale", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
    "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "attn.hook_result", "hook_attn_out",
    "hook_resid_mid", "ln2.hook_scale", "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_post",
    "hook_mlp_out", "hook_resid_post",
]


def test_hook_names_follow_transformer_lens(tiny):
    for tower, top in ((tiny.vision, ["hook_embed", "ln_pre.hook_scale", "embed.hook_patches", "embed.hook_pos"]),
                       (tiny.text, ["hook_embed", "hook_pos_embed"])):
        names = set(tower.hook_dict)
        for layer in range(tower.cfg.n_layers):
            assert {f"blocks.{layer}.{h}" for h in PER_BLOCK} <= names
        assert {"ln_final.hook_scale", "ln_final.hook_normalized", *top} <= names


def test_weight_shapes_and_factored_ov(tiny):
    c = tiny.vision.cfg
    v = tiny.vision
    assert v.W_Q.shape == v.W_K.shape == v.W_V.shape == (c.n_layers, c.n_heads, c.d_model, c.d_head)
    assert v.W_O.shape == (c.n_layers, c.n_heads, c.d_head, c.d_model)
    assert v.b_Q.shape == v.b_V.shape == (c.n_layers, c.n_heads, c.d_head)
    assert v.b_O.shape == (c.n_layers, c.d_model)
    assert isinstance(v.OV, FactoredMatrix) and v.OV.shape == (c.n_layers, c.n_heads, c.d_model, c.d_model)
    torch.testing.assert_close(v.OV[1, 2].AB, v.W_V[1, 2] @ v.W_O[1, 2])
    assert tiny.text.cfg.d_vocab == 99 and tiny.vision.cfg.d_vocab == 0


def test_cache_shapes_and_shorthand(tiny, pixels):
    c = tiny.vision.cfg
    out, cache = tiny.vision.run_with_cache(pixels)
    assert isinstance(cache, ActivationCache)
    assert out.shape == (3, c.d_proj)
    assert cache["pattern", 0].shape == (3, c.n_heads, c.n_ctx, c.n_ctx)
    assert cache["z", -1].shape == (3, c.n_ctx, c.n_heads, c.d_head)
    assert cache["q", 1].shape == (3, c.n_ctx, c.n_heads, c.d_head)
    assert cache["resid_post", 2].shape == (3, c.n_ctx, c.d_model)
    assert cache["ln_final.hook_scale"].shape == (3, c.n_ctx, 1)
    torch.testing.assert_close(cache["pattern", 0].sum(-1), torch.ones(3, c.n_heads, c.n_ctx))


def test_z_and_result_recomputed_by_hand(tiny, pixels):
    tiny.vision.set_use_attn_result(True)
    try:
        _, cache = tiny.vision.run_with_cache(pixels)
    finally:
        tiny.vision.set_use_attn_result(False)
    for layer, block in enumerate(tiny.vision.blocks):
        attn = block.attn
        x = cache[f"blocks.{layer}.ln1.hook_normalized"]
        v = einops.einsum(x, attn.W_V, "b k d, h d e -> b k h e") + attn.b_V
        z = einops.einsum(cache["pattern", layer], v, "b h q k, b k h e -> b q h e")
        torch.testing.assert_close(z, cache["z", layer], rtol=1e-5, atol=1e-5)
        result = einops.einsum(cache["z", layer], attn.W_O, "b p h e, h e d -> b p h d")
        torch.testing.assert_close(result, cache["result", layer], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(result.sum(-2) + attn.b_O, cache["attn_out", layer], rtol=1e-5, atol=1e-5)


def test_result_is_off_by_default_and_cache_can_compute_it(tiny, pixels):
    _, cache = tiny.vision.run_with_cache(pixels)
    assert "blocks.0.attn.hook_result" not in cache.cache_dict
    cache.compute_head_results()
    assert cache["result", 0].shape == (3, tiny.vision.cfg.n_ctx, tiny.vision.cfg.n_heads, tiny.vision.cfg.d_model)


def _direct_contributions(tower, cache, stack, pooled_pos):
    """Apply ln_final (cached scale), its weight and the projection to each component."""
    stack = cache.apply_ln_to_stack(stack, layer=-1)[:, :, pooled_pos]  # [components, batch, d_model]
    return (stack * tower.ln_final.w) @ tower.W_proj, tower.ln_final.b @ tower.W_proj


def test_decompose_resid_sums_to_image_embedding(tiny, pixels):
    embeds, cache = tiny.vision.run_with_cache(pixels)
    stack, labels = cache.decompose_resid(return_labels=True)
    assert labels[0] == "embed" and len(labels) == 1 + 2 * tiny.vision.cfg.n_layers
    contributions, bias = _direct_contributions(tiny.vision, cache, stack, 0)
    torch.testing.assert_close(contributions.sum(0) + bias, embeds, rtol=1e-4, atol=1e-4)


def test_stack_head_results_with_remainder_sums_to_image_embedding(tiny, pixels):
    embeds, cache = tiny.vision.run_with_cache(pixels)
    stack, labels = cache.stack_head_results(return_labels=True, incl_remainder=True)
    assert labels[:2] == ["L0H0", "L0H1"] and labels[-1] == "remainder"
    contributions, bias = _direct_contributions(tiny.vision, cache, stack, 0)
    torch.testing.assert_close(contributions.sum(0) + bias, embeds, rtol=1e-4, atol=1e-4)


def test_text_decomposition_sums_to_text_embedding(tiny, token_batch):
    ids, mask = token_batch
    embeds, cache = tiny.text.run_with_cache(ids, attention_mask=mask)
    stack, labels = cache.decompose_resid(return_labels=True)
    assert labels[:2] == ["embed", "pos_embed"]
    pooled = cache.apply_ln_to_stack(stack, layer=-1)[:, torch.arange(3), tiny.text.pool_positions(ids)]
    total = (pooled * tiny.text.ln_final.w).sum(0) + tiny.text.ln_final.b
    torch.testing.assert_close(total @ tiny.text.W_proj, embeds, rtol=1e-4, atol=1e-4)


def test_zero_ablating_one_head_changes_the_output(tiny, pixels):
    clean = tiny.vision(pixels)

    def ablate(z, hook):
        z[:, :, 1] = 0.0
        return z

    ablated = tiny.vision.run_with_hooks(pixels, fwd_hooks=[("blocks.1.attn.hook_z", ablate)])
    assert (ablated - clean).abs().max() > 1e-4
    torch.testing.assert_close(tiny.vision(pixels), clean)  # hooks were removed afterwards


@pytest.mark.parametrize("name", ["blocks.0.attn.hook_pattern", "blocks.1.hook_resid_mid", "hook_embed", "blocks.2.mlp.hook_post"])
def test_patching_a_hook_with_its_own_cached_value_is_a_no_op(tiny, pixels, name):
    clean, cache = tiny.vision.run_with_cache(pixels)
    patched = tiny.vision.run_with_hooks(pixels, fwd_hooks=[(name, lambda act, hook: cache[name])])
    torch.testing.assert_close(patched, clean, rtol=1e-5, atol=1e-6)


def test_activation_patching_between_inputs(tiny, pixels):
    """Patching the whole residual stream from another image gives that image's output."""
    source = pixels.flip(0)
    target_out, cache = tiny.vision.run_with_cache(source)
    name = "blocks.2.hook_resid_pre"
    patched = tiny.vision.run_with_hooks(pixels, fwd_hooks=[(name, lambda act, hook: cache[name])])
    torch.testing.assert_close(patched, target_out, rtol=1e-5, atol=1e-6)


def test_pattern_hook_edits_take_effect(tiny, pixels):
    """With a hook on the pattern the explicit path runs; a uniform pattern changes the output."""
    clean = tiny.vision(pixels)

    def uniform(pattern, hook):
        return torch.full_like(pattern, 1.0 / pattern.shape[-1])

    edited = tiny.vision.run_with_hooks(pixels, fwd_hooks=[("blocks.0.attn.hook_pattern", uniform)])
    assert (edited - clean).abs().max() > 1e-4


def test_backward_hooks_and_gradients_flow(tiny, pixels):
    grads = {}

    def save_grad(grad, hook):
        grads[hook.name] = grad

    tiny.vision.add_hook("blocks.1.attn.hook_z", save_grad, dir="bwd")
    try:
        tiny.vision(pixels).sum().backward()
    finally:
        tiny.vision.reset_hooks()
        tiny.vision.zero_grad(set_to_none=True)
    assert grads["blocks.1.attn.hook_z"].shape == (3, tiny.vision.cfg.n_ctx, 4, 16)


def test_text_mask_matches_padding_semantics(tiny, token_batch):
    """Changing padding tokens never changes the pooled text embedding."""
    ids, mask = token_batch
    out = tiny.text(ids, attention_mask=mask)
    other = ids.clone()
    other[mask == 0] = 42
    torch.testing.assert_close(tiny.text(other, attention_mask=mask), out)


def test_tokens_return_type_projects_every_position(tiny, pixels):
    tokens = tiny.vision(pixels, return_type="tokens")
    assert tokens.shape == (3, tiny.vision.cfg.n_ctx, tiny.vision.cfg.d_proj)
    torch.testing.assert_close(tokens[:, 0], tiny.vision(pixels))
    assert tiny.vision(pixels, return_type=None) is None


def test_names_filter_and_accumulated_resid_logit_lens(tiny, pixels):
    """A filtered cache holds only what was asked; accumulated_resid(apply_ln=True) runs each
    stream through ln_final's centring and scaling, so the last one, read out with W_joint and
    b_joint, reproduces every token's joint-space output."""
    keep = ("hook_resid_pre", "hook_resid_post", "ln_final.hook_scale")
    _, cache = tiny.vision.run_with_cache(pixels, names_filter=lambda name: name.endswith(keep))
    assert cache.keys() and all(k.endswith(keep) for k in cache.keys())
    acc, labels = cache.accumulated_resid(apply_ln=True, return_labels=True)
    assert acc.shape[0] == tiny.vision.cfg.n_layers + 1 and labels[-1] == "final_post"
    lens = acc[-1] @ tiny.vision.W_joint + tiny.vision.b_joint  # ln_final's gain and bias live in the read-out
    torch.testing.assert_close(lens, tiny.vision(pixels, return_type="tokens"), rtol=1e-5, atol=1e-5)


def test_remove_batch_dim_on_a_single_image(tiny, pixels):
    _, cache = tiny.vision.run_with_cache(pixels[:1], remove_batch_dim=True)
    assert cache["pattern", 0].shape == (4, tiny.vision.cfg.n_ctx, tiny.vision.cfg.n_ctx)
