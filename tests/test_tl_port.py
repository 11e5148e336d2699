"""TransformerLens's own behaviours, ported onto the CLIP and SigLIP towers.

The tests follow TransformerLens's ``tests/unit/test_hooks.py``, ``tests/acceptance/
test_activation_cache.py`` and ``test_patching.py`` (written here, not copied): each runs on four
towers (the toy CLIP's vision and text towers, a random SigLIP's vision and text towers) where
TransformerLens's behaviour applies, and checks the refusal where it cannot (a SigLIP vision tower
has no linear unembed). The zero-shot unembed and the ``apply_ln`` recipe are also checked on a
random-weight ViT-B/32, and the patching helpers on a 224-px ViT-B/32-shaped tower.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformer_lens.utilities import Slice

import sith_lens as sl
from sith_lens.adapters import patching
from sith_lens.adapters.hook_switches import HookSwitchedOffError
from sith_lens.adapters.unembed import NoZeroShotHeadError

from conftest import make_hf_siglip, perturb_

TOWERS = ["clip-vision", "clip-text", "siglip-vision", "siglip-text"]
CLASSES = ["red circle", "blue square", "green triangle", "yellow star"]


@pytest.fixture(scope="module")
def toy_with_head():
    model = sl.load_clip("toy")
    model.attach_zero_shot_head(CLASSES, templates=["a {}"])
    return model


@pytest.fixture(scope="module")
def siglip():
    return sl.load_clip(make_hf_siglip())


@pytest.fixture(scope="module")
def case(request, toy_with_head, siglip):
    """(tower, input, pooled position) for one of TOWERS. Text inputs have no padding, so every
    sequence pools at its last position, as TransformerLens's tests read position -1."""
    torch.manual_seed(0)
    if request.param == "clip-vision":
        from sith_lens.toyworld import ToyWorld

        return toy_with_head.vision, ToyWorld(seed=3).batch(0, 8).pixels, 0
    if request.param == "clip-text":
        ids = toy_with_head.text.to_tokens([f"a {c}" for c in CLASSES] * 2)
        return toy_with_head.text, ids, -1
    if request.param == "siglip-vision":
        size = siglip.vision.cfg.image_size
        return siglip.vision, torch.randn(8, 3, size, size), -1
    ids = torch.randint(2, 97, (8, siglip.text.cfg.n_ctx))
    return siglip.text, ids, -1


def by_tower(test):
    return pytest.mark.parametrize("case", TOWERS, indirect=True)(test)


class Counter:
    def __init__(self):
        self.count = 0

    def inc(self, *args, **kwargs):
        self.count += 1


def embed(name: str) -> bool:
    return name == "hook_embed"


def n_fwd(tower, name="hook_embed") -> int:
    return len(tower.hook_dict[name].fwd_hooks)


# -- test_hooks.py ---------------------------------------------------------------------------------
@by_tower
def test_hook_attaches_normally(case):
    tower, x, _ = case
    c = Counter()
    tower.run_with_hooks(x, fwd_hooks=[(embed, c.inc)])
    assert all(len(hp.fwd_hooks) == 0 for hp in tower.hook_dict.values())
    assert c.count == 1


@by_tower
def test_perma_hook_attaches_normally(case):
    tower, x, _ = case
    c = Counter()
    tower.add_perma_hook(embed, c.inc)
    try:
        assert n_fwd(tower) == 1
        tower.run_with_hooks(x, fwd_hooks=[])
        assert n_fwd(tower) == 1 and c.count == 1
    finally:
        tower.remove_all_hook_fns(including_permanent=True)


@by_tower
def test_nested_hook_context_managers_and_failure(case):
    tower, x, _ = case
    c = Counter()
    with tower.hooks(fwd_hooks=[(embed, c.inc)]):
        tower(x)
        with tower.hooks(fwd_hooks=[(embed, c.inc)]):
            assert n_fwd(tower) == 2
            tower(x)
            assert c.count == 3
        assert n_fwd(tower) == 1

        def fail(act, hook):
            raise RuntimeError("fail")

        with pytest.raises(RuntimeError, match="fail"), tower.hooks(fwd_hooks=[(embed, fail)]):
            tower(x)
        assert n_fwd(tower) == 1
        tower.run_with_cache(x)
        assert n_fwd(tower) == 1 and c.count == 5  # the failing run counted once before failing
    assert n_fwd(tower) == 0


@by_tower
def test_context_manager_with_permanent_hook_and_reset(case):
    tower, x, _ = case
    c = Counter()
    tower.add_perma_hook(embed, c.inc)
    try:
        with tower.hooks(fwd_hooks=[(embed, c.inc)]):
            assert n_fwd(tower) == 2
            tower(x)
            tower.reset_hooks()
            assert n_fwd(tower) == 1  # the permanent hook stays
        assert c.count == 2
        tower.remove_all_hook_fns()
        assert n_fwd(tower) == 1
        tower.remove_all_hook_fns(including_permanent=True)
        assert n_fwd(tower) == 0
        tower(x)
        assert c.count == 2
    finally:
        tower.remove_all_hook_fns(including_permanent=True)


@by_tower
def test_switched_off_hooks_are_refused_and_work_once_on(case):
    """TransformerLens asserts in add_hook; here add_hook, run_with_hooks and a named cache refuse."""
    tower, x, _ = case
    out = tower(x)
    for name, setter in [("blocks.0.attn.hook_result", "set_use_attn_result"),
                         ("blocks.0.hook_q_input", "set_use_split_qkv_input"),
                         ("blocks.0.hook_attn_in", "set_use_attn_in"),
                         ("blocks.0.hook_mlp_in", "set_use_hook_mlp_in")]:
        with pytest.raises(HookSwitchedOffError, match=setter):
            tower.add_hook(name, lambda act, hook: act)
        with pytest.raises(HookSwitchedOffError, match=setter):
            tower.run_with_hooks(x, fwd_hooks=[(name, lambda act, hook: act)])
        with pytest.raises(HookSwitchedOffError, match=setter):
            tower.run_with_cache(x, names_filter=name)
        assert name not in tower.run_with_cache(x)[1].cache_dict  # a full cache skips it
        getattr(tower, setter)(True)
        try:
            got, cache = tower.run_with_cache(x, names_filter=name)
            assert list(cache.keys()) == [name]
            heads = () if name.endswith("mlp_in") else (tower.cfg.n_heads,)
            assert cache[name].shape == (*cache_shape(tower, x), *heads, tower.cfg.d_model)
            torch.testing.assert_close(got, out, rtol=1e-5, atol=1e-5)  # switching on changes nothing
        finally:
            getattr(tower, setter)(False)


def cache_shape(tower, x) -> tuple[int, int]:
    return (x.shape[0], tower.cfg.n_ctx if tower.cfg.modality == "vision" else x.shape[1])


@by_tower
def test_split_value_input_patches_one_head_only(case):
    """Path patching's premise: editing one head's value input changes that head's z, no other."""
    tower, x, _ = case
    tower.set_use_split_qkv_input(True)
    try:
        _, clean = tower.run_with_cache(x, names_filter="blocks.1.attn.hook_z")

        def scramble_head_2(v_in, hook):
            v_in[:, :, 2] = v_in[:, :, 2].flip(0)
            return v_in

        with tower.hooks(fwd_hooks=[("blocks.1.hook_v_input", scramble_head_2)]):
            _, patched = tower.run_with_cache(x, names_filter="blocks.1.attn.hook_z")
    finally:
        tower.set_use_split_qkv_input(False)
    z0, z1 = clean["z", 1], patched["z", 1]
    others = [h for h in range(tower.cfg.n_heads) if h != 2]
    torch.testing.assert_close(z1[:, :, others], z0[:, :, others])
    assert (z1[:, :, 2] - z0[:, :, 2]).abs().max() > 1e-3


@by_tower
def test_prepending_hooks(case):
    """A hook prepended runs first: zeroing the last residual stream then adding noise differs from
    the zeroed run, and adding noise then zeroing equals it."""
    tower, x, _ = case
    name = f"blocks.{tower.cfg.n_layers - 1}.hook_resid_post"

    def zero(act, hook):
        return torch.zeros_like(act)

    def noise(act, hook):
        return act + torch.randn_like(act)

    zeroed = tower.run_with_hooks(x, fwd_hooks=[(name, zero)])
    for zero_first in (True, False):
        tower.reset_hooks()
        for fn in ((zero, noise) if zero_first else (noise, zero)):
            tower.add_hook(name, fn, prepend=True)
        out = tower(x)
        tower.reset_hooks()
        assert torch.allclose(out, zeroed) == zero_first  # the last one added runs first


# -- test_activation_cache.py ----------------------------------------------------------------------
@by_tower
def test_accumulated_resid_variants_and_labels(case):
    tower, x, pos = case
    _, cache = tower.run_with_cache(x)
    acc = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=pos)
    assert torch.equal(acc, cache.accumulated_resid(layer=tower.cfg.n_layers, incl_mid=True, pos_slice=pos))
    assert torch.equal(acc, cache.accumulated_resid(layer=None, incl_mid=True, pos_slice=Slice(pos)))
    _, labels = cache.accumulated_resid(layer=None, incl_mid=True, return_labels=True)
    assert labels == [f"{lab}" for l in range(tower.cfg.n_layers) for lab in (f"{l}_pre", f"{l}_mid")] + ["final_post"]
    stack, labels = cache.accumulated_resid(layer=-1, incl_mid=False, pos_slice=pos, return_labels=True)
    assert len(labels) == len(stack) and not any("mid" in lab for lab in labels)


@by_tower
def test_apply_ln_has_one_meaning(case):
    """Centre and divide by the LayerNorm scale, never ln_final's gain and bias: cached for a
    decomposition, recomputed per stream for the logit lens; both agree with ln_final's own hook."""
    tower, x, pos = case
    _, cache = tower.run_with_cache(x)
    acc = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=pos)
    lens = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=pos, apply_ln=True)
    torch.testing.assert_close(lens, F.layer_norm(acc, (acc.shape[-1],), eps=tower.cfg.eps), rtol=1e-5, atol=1e-5)
    final = cache["ln_final.hook_normalized"][:, pos]
    torch.testing.assert_close(lens[-1], final, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache.apply_ln_to_stack(acc, layer=-1, pos_slice=pos)[-1], final, rtol=1e-5, atol=1e-5)
    decomposed = cache.decompose_resid(layer=None, pos_slice=Slice(pos), apply_ln=True)
    torch.testing.assert_close(decomposed, cache.apply_ln_to_stack(cache.decompose_resid(pos_slice=pos), pos_slice=pos))
    torch.testing.assert_close(decomposed.sum(0), final, rtol=1e-4, atol=1e-5)
    heads = cache.stack_head_results(layer=-1, pos_slice=pos, apply_ln=True, incl_remainder=True)
    torch.testing.assert_close(heads.sum(0), final, rtol=1e-4, atol=1e-5)
    neurons = cache.stack_neuron_results(layer=-1, pos_slice=Slice(pos), apply_ln=True)
    torch.testing.assert_close(neurons, cache.apply_ln_to_stack(cache.stack_neuron_results(layer=-1, pos_slice=pos), pos_slice=pos))


@by_tower
def test_decompose_resid_attention_and_remainders(case):
    tower, x, pos = case
    _, cache = tower.run_with_cache(x)
    attn = cache.decompose_resid(layer=1, pos_slice=Slice(pos), mlp_input=True, incl_embeds=False, mode="attn")
    torch.testing.assert_close(attn, torch.stack([cache["attn_out", l][:, pos] for l in range(2)]))
    heads, labels = cache.stack_head_results(layer=1, pos_slice=pos, incl_remainder=True, return_labels=True)
    torch.testing.assert_close(heads.sum(0), cache["resid_post", 0][:, pos], rtol=1e-5, atol=1e-5)
    assert labels == [f"L0H{h}" for h in range(tower.cfg.n_heads)] + ["remainder"]
    neurons, labels = cache.stack_neuron_results(layer=1, pos_slice=Slice(pos), incl_remainder=True, return_labels=True)
    torch.testing.assert_close(neurons.sum(0), cache["resid_post", 0][:, pos], rtol=1e-4, atol=1e-4)
    assert labels[:-1] == [f"L0N{i}" for i in range(tower.cfg.d_mlp)] and labels[-1] == "remainder"
    _, labels = cache.stack_neuron_results(layer=1, pos_slice=pos, neuron_slice=Slice([0, 1, 2]), return_labels=True)
    assert labels == ["L0N0", "L0N1", "L0N2"]
    empty, labels = cache.stack_head_results(layer=0, pos_slice=pos, return_labels=True)
    assert labels == [] and not empty.abs().any()


@by_tower
def test_full_resid_decomposition_sums_to_the_final_stream(case):
    """Heads, neurons (or MLP layers), embeddings and accumulated_bias add up to ln_final's input."""
    tower, x, pos = case
    _, cache = tower.run_with_cache(x)
    final = cache["ln_final.hook_normalized"][:, pos]
    for expand in (False, True):
        stack, labels = cache.get_full_resid_decomposition(pos_slice=pos, apply_ln=True, expand_neurons=expand, return_labels=True)
        assert len(labels) == len(stack) and labels[-1] == "bias"
        torch.testing.assert_close(stack.sum(0), final, rtol=1e-4, atol=1e-4)
    raw = cache.get_full_resid_decomposition(pos_slice=pos, expand_neurons=False)
    torch.testing.assert_close(raw.sum(0), cache["resid_post", -1][:, pos], rtol=1e-4, atol=1e-4)
    bias = tower.accumulated_bias(tower.cfg.n_layers, include_mlp_biases=False)
    torch.testing.assert_close(bias, tower.b_O.sum(0))
    torch.testing.assert_close(tower.accumulated_bias(1, mlp_input=True), tower.b_O[:2].sum(0) + tower.b_out[0])


@by_tower
def test_cache_containers(case):
    tower, x, _ = case
    _, cache = tower.run_with_cache(x)
    assert torch.equal(cache["scale", 1, "ln1"], cache["blocks.1.ln1.hook_scale"])
    assert torch.equal(cache["k", -1], cache[f"blocks.{tower.cfg.n_layers - 1}.attn.hook_k"])
    assert torch.equal(cache["embed"], cache["hook_embed"])
    assert list(cache.keys()) == list(cache.cache_dict.keys())
    assert all(torch.equal(a, b) for a, b in zip(cache.values(), cache.cache_dict.values()))
    sliced = cache.apply_slice_to_batch_dim(Slice((2, 4)))
    assert all(torch.equal(cache[k][2:4], sliced[k]) for k in cache.cache_dict)
    single = cache.apply_slice_to_batch_dim(2)
    assert not single.has_batch_dim and all(torch.equal(cache[k][2], single[k]) for k in cache.cache_dict)
    stack = cache.stack_activation("scale", -1, "ln1")
    assert all(torch.equal(cache["scale", l, "ln1"], stack[l]) for l in range(tower.cfg.n_layers))
    with pytest.raises(AssertionError):
        cache.remove_batch_dim()
    _, one = tower.run_with_cache(x[:1])
    shapes = {k: v.shape for k, v in one.cache_dict.items()}
    one.remove_batch_dim()
    one.remove_batch_dim()
    assert all(one.cache_dict[k].shape == s[1:] for k, s in shapes.items())
    with torch.no_grad():
        cache.toggle_autodiff(mode=True)
        assert torch.is_grad_enabled()
        cache.toggle_autodiff(mode=False)


@by_tower
def test_head_and_neuron_results(case):
    tower, x, pos = case
    _, cache = tower.run_with_cache(x)
    assert "blocks.0.attn.hook_result" not in cache.cache_dict
    cache.compute_head_results()
    first = cache.cache_dict["blocks.0.attn.hook_result"]
    first[0, 0, 0, 0] = float("inf")
    cache.compute_head_results()  # not recomputed
    assert cache.cache_dict["blocks.0.attn.hook_result"][0, 0, 0, 0] == float("inf")
    W_out = tower.blocks[1].mlp.W_out
    torch.testing.assert_close(cache.get_neuron_results(1, neuron_slice=[0, 1], pos_slice=pos),
                               cache["post", 1][:, pos, :2, None] * W_out[:2])
    torch.testing.assert_close(cache.get_neuron_results(1), cache["post", 1][..., None] * W_out)


@by_tower
def test_apply_ln_components_read_into_the_joint_space_exactly(case):
    """The README recipe: apply_ln=True components @ W_joint, plus b_joint once, give the
    embedding (SigLIP's vision tower, pooled by an attention head, refuses with the reason)."""
    tower, x, pos = case
    with torch.no_grad():
        embeds, cache = tower.run_with_cache(x)
        if tower.cfg.pooling == "map":
            with pytest.raises(AttributeError, match="attention head"):
                tower.W_joint
            return
        stack = cache.decompose_resid(apply_ln=True, pos_slice=pos)
        assert relative(stack.sum(0) @ tower.W_joint + tower.b_joint, embeds) < 1e-5
    if tower.cfg.modality == "text":
        with pytest.raises(AttributeError, match="no unembed"):
            cache.logit_attrs(stack, tokens=torch.zeros(len(x), dtype=torch.long), pos_slice=pos)


# -- the zero-shot unembed: logit_attrs, logit lens, incl_bwd --------------------------------------
def test_logit_attrs_match_reference_code_for_every_token_shape(toy_with_head):
    """TransformerLens's logit_attrs test, with class labels as the tokens."""
    from sith_lens.toyworld import ToyWorld

    tower = toy_with_head.vision
    pixels = ToyWorld(seed=3).batch(0, 8).pixels
    answers = torch.tensor([[i % 4, (i + 1) % 4] for i in range(8)])
    with torch.no_grad():
        _, cache = tower.run_with_cache(pixels)
        acc = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=0)
        dirs = tower.tokens_to_residual_directions(answers)
        assert dirs.shape == (8, 2, tower.cfg.d_model)
        diff_dirs = dirs[:, 0] - dirs[:, 1]
        ref = (cache.apply_ln_to_stack(acc, layer=-1, pos_slice=0) * diff_dirs).sum(-1)
        got = cache.logit_attrs(acc, pos_slice=0, tokens=answers[:, 0], incorrect_tokens=answers[:, 1])
        torch.testing.assert_close(got, ref)
        b = -1
        for tok, bad in [(answers[b, 0], answers[b, 1]), (int(answers[b, 0]), int(answers[b, 1])),
                         (tower.to_string(answers[b, 0]), tower.to_string(answers[b, 1]))]:
            torch.testing.assert_close(cache.logit_attrs(acc, batch_slice=b, pos_slice=0, tokens=tok, incorrect_tokens=bad), ref[:, b])
        torch.testing.assert_close(cache.logit_attrs(acc[:, b], has_batch_dim=False, batch_slice=b, pos_slice=0,
                                                     tokens=answers[b, 0], incorrect_tokens=answers[b, 1]), ref[:, b])
        rows = [2, 5, 7]
        torch.testing.assert_close(cache.logit_attrs(acc, batch_slice=rows, pos_slice=0, tokens=answers[rows, 0],
                                                     incorrect_tokens=answers[rows, 1]), ref[:, rows])
        with pytest.raises(ValueError):
            cache.logit_attrs(acc, pos_slice=0, tokens=answers[:, 0], incorrect_tokens=answers[:1, 1])
    with pytest.raises(ValueError, match="not a class"):
        tower.to_single_token("purple hexagon")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def check_unembed_is_exact(tower, pixels, tol: float = 1e-4) -> None:
    """Every TransformerLens route to the zero-shot logits gives them exactly (add b_U once), and the
    README recipe gives the embedding exactly."""
    with torch.no_grad():
        logits = tower(pixels, return_type="logits")
        embeds, cache = tower.run_with_cache(pixels)
        torch.testing.assert_close(logits, tower.zero_shot_logits(embeds))
        for c in range(logits.shape[1]):
            attrs = cache.logit_attrs(cache.decompose_resid(pos_slice=0), tokens=torch.full((len(pixels),), c), pos_slice=0)
            assert relative(attrs.sum(0) + tower.b_U[c], logits[:, c]) < tol
        full = cache.get_full_resid_decomposition(pos_slice=0, apply_ln=True, expand_neurons=True)
        assert relative(full.sum(0) @ tower.W_U + tower.b_U, logits) < tol
        lens = cache.accumulated_resid(apply_ln=True, pos_slice=0) @ tower.W_U + tower.b_U  # logit lens
        assert relative(lens[-1], logits) < tol
        # the README's apply_ln recipe, into the joint space
        recipe = cache.decompose_resid(apply_ln=True, pos_slice=0).sum(0) @ tower.W_joint + tower.b_joint
        assert relative(recipe, embeds) < 1e-5
        heads = cache.stack_head_results(apply_ln=True, pos_slice=0, incl_remainder=True).sum(0) @ tower.W_joint + tower.b_joint
        assert relative(heads, embeds) < 1e-5
        assert relative(cache.accumulated_resid(apply_ln=True, pos_slice=0)[-1] @ tower.W_joint + tower.b_joint, embeds) < 1e-5


def test_zero_shot_unembed_is_exact_on_the_toy_clip(toy_with_head):
    from sith_lens.toyworld import ToyWorld

    check_unembed_is_exact(toy_with_head.vision, ToyWorld(seed=4).batch(0, 6).pixels)


@pytest.fixture(scope="module")
def vit_b_32():
    """A random-weight ViT-B/32 (224 px, 12 x 12 heads) with perturbed LayerNorms and biases."""
    from sith_lens.adapters.loading import _random_model

    model = sl.load_clip(perturb_(_random_model("vit-b-32"), ("norm", "class_embedding")))
    torch.manual_seed(0)
    model.vision.set_zero_shot_head(torch.randn(5, model.cfg.d_proj))
    return model


def test_zero_shot_unembed_is_exact_on_a_random_vit_b_32(vit_b_32):
    torch.manual_seed(1)
    check_unembed_is_exact(vit_b_32.vision, torch.randn(3, 3, 224, 224))


def test_incl_bwd_runs_with_the_zero_shot_loss_and_is_refused_otherwise(toy_with_head, siglip):
    from sith_lens.toyworld import ToyWorld

    tower = toy_with_head.vision
    pixels = ToyWorld(seed=3).batch(0, 4).pixels
    labels = torch.tensor([0, 1, 2, 3])
    loss, cache = tower.run_with_cache(pixels, return_type="loss", labels=labels, incl_bwd=True)
    assert loss.ndim == 0 and "blocks.0.hook_resid_pre_grad" in cache.cache_dict
    # the gradient at the last residual stream, by hand
    resid = cache["resid_post", -1].clone().requires_grad_(True)
    ln = tower.ln_final
    embeds = ln.affine(ln(resid))[:, 0] @ tower.W_proj
    cosine = F.normalize(embeds, dim=-1) @ tower.zero_shot_classes.T
    F.cross_entropy(tower.zero_shot_logit_scale * cosine, labels).backward()
    torch.testing.assert_close(cache[f"blocks.{tower.cfg.n_layers - 1}.hook_resid_post_grad"], resid.grad)
    tower.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="return_type='loss'"):
        tower.run_with_cache(pixels, incl_bwd=True)
    with pytest.raises(ValueError, match="no scalar output"):
        siglip.text.run_with_cache(torch.randint(2, 97, (2, 5)), incl_bwd=True)
    with pytest.raises(ValueError, match="labels="):
        tower(pixels, return_type="loss")


def test_towers_without_a_linear_unembed_refuse_a_head(siglip, toy_with_head):
    with pytest.raises(ValueError, match="attention head"):
        siglip.vision.set_zero_shot_head(torch.randn(3, siglip.cfg.d_proj))
    with pytest.raises(AttributeError, match="attention head"):
        siglip.vision.W_joint
    bare = sl.load_clip("random:tiny").vision
    assert not hasattr(bare, "W_U")
    with pytest.raises(NoZeroShotHeadError, match="attach_zero_shot_head"):
        bare(torch.randn(1, 3, 32, 32), return_type="logits")
    with pytest.raises(ValueError, match="d_proj"):
        bare.set_zero_shot_head(torch.randn(3, 7))


# -- gaps that TransformerLens code runs into -------------------------------------------------------
def test_config_and_weight_names_transformer_lens_reads(toy_with_head):
    vision, text = toy_with_head.vision, toy_with_head.text
    c = vision.cfg
    assert c.n_key_value_heads is None and not c.causal and text.cfg.causal
    assert vision.W_E.shape == (c.n_channels * c.patch_size**2, c.d_model) and vision.W_pos.shape == (c.n_ctx, c.d_model)
    assert vision.b_in.shape == (c.n_layers, c.d_mlp) and vision.b_out.shape == (c.n_layers, c.d_model)
    assert c.d_vocab_out == len(CLASSES)
    with pytest.raises(ValueError, match="both directions"):
        sl.TowerConfig(modality="vision", n_layers=1, n_heads=1, d_model=4, d_head=4, d_mlp=4, n_ctx=5,
                       d_proj=4, image_size=4, patch_size=2, causal=True)


def test_text_tower_speaks_transformer_lens_tokens(toy_with_head):
    text = toy_with_head.text
    ids = text.to_tokens(["a red circle", "a blue square left of a green triangle"])
    assert ids.shape[0] == 2 and ids.dtype == torch.int64
    assert "red" in text.to_string(ids[0]) and isinstance(text.to_string(ids), list)
    pieces = text.to_str_tokens("a red circle")
    toks = text.tokenize("a red circle")
    assert len(pieces) == int(toks.attention_mask.sum()) and any("red" in p for p in pieces)
    red = text.to_single_token("red")
    assert red in ids[0].tolist()
    with pytest.raises(ValueError, match="not one"):
        text.to_single_token("red circle")
    with pytest.raises(ValueError, match="prepend_bos"):
        text.to_tokens("a", prepend_bos=False)


# -- test_patching.py, on images -------------------------------------------------------------------
@pytest.fixture(scope="module")
def vit_b_32_shaped():
    """224 px, 32-px patches (50 positions), 12 heads: ViT-B/32's shape, two layers deep and with
    8-wide heads so that the thousands of patched runs stay quick."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(projection_dim=512, vision_config=dict(
        hidden_size=96, intermediate_size=384, num_hidden_layers=2, num_attention_heads=12, image_size=224, patch_size=32),
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4))
    model = sl.load_clip(perturb_(CLIPModel(cfg).eval(), ("norm", "class_embedding")))
    model.vision.set_zero_shot_head(torch.randn(3, 512))
    return model.vision


def test_patching_helpers_take_positions_from_the_tower(vit_b_32_shaped):
    tower = vit_b_32_shaped
    torch.manual_seed(2)
    clean_px, corrupt_px = torch.randn(1, 3, 224, 224), torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        _, clean_cache = tower.run_with_cache(clean_px)
        base = tower.zero_shot_logits(tower(corrupt_px))[0, 0]

        def metric(embeds):
            return tower.zero_shot_logits(embeds)[0, 0]

        L, P, H = tower.cfg.n_layers, tower.cfg.n_ctx, tower.cfg.n_heads
        assert P == 50
        resid = patching.get_act_patch_resid_pre(tower, corrupt_px, clean_cache, metric)
        assert resid.shape == (L, P)
        # every patch is patched, the last one too: at layer 0 each patch's clean value moves the
        # metric, while CLS (position 0) enters the same in both images
        assert ((resid[0, 1:] - base).abs() > 1e-6).all()
        torch.testing.assert_close(resid[0, 0], base)
        for layer, pos in [(0, 0), (1, P - 1)]:
            def put(act, hook, pos=pos, layer=layer):
                act[:, pos] = clean_cache["resid_pre", layer][:, pos]
                return act
            by_hand = metric(tower.run_with_hooks(corrupt_px, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", put)]))
            torch.testing.assert_close(resid[layer, pos], by_hand)
        assert patching.get_act_patch_attn_head_out_by_pos(tower, corrupt_px, clean_cache, metric).shape == (L, P, H)
        assert patching.get_act_patch_block_every(tower, corrupt_px, clean_cache, metric).shape == (3, L, P)
        every = patching.get_act_patch_attn_head_all_pos_every(tower, corrupt_px, clean_cache, metric)
        assert every.shape == (5, L, H)
        assert patching.get_act_patch_attn_head_k_by_pos(tower, corrupt_px, clean_cache, metric).shape == (L, P, H)
    with pytest.raises(ValueError, match=r"\[batch, 3, 224, 224\]"):
        patching.get_act_patch_resid_pre(tower, torch.randn(1, 3, 32, 32), clean_cache, metric)


@by_tower
def test_get_act_patch_attn_out_shape(case):
    """TransformerLens's test_patching, on each tower: [n_layers, positions]."""
    tower, x, _ = case
    _, clean_cache = tower.run_with_cache(x[:1])
    scan = patching.get_act_patch_attn_out(tower, x[1:2], clean_cache, lambda out: out[0, 0])
    assert scan.shape == (tower.cfg.n_layers, cache_shape(tower, x)[1])
    assert scan.isfinite().all()
