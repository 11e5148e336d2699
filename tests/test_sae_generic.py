"""One list of generic SAE behaviours, run over SAELens's own "standard" and "topk" SAEs and over
each LUCID view, so that a view is held to exactly what SAELens's SAEs do; then what the
two-modality parent does with each of them (passes with a documented choice, or refuses with a
message naming the view).

The behaviours follow SAELens's own tests (``tests/saes/test_sae.py``, ``test_standard_sae.py``,
``test_topk_sae.py``, ``tests/analysis/test_hooked_sae_transformer.py``): shapes and dtypes of
encode/decode/forward, the linear decoder, ``.to(dtype/device)``, ``fold_W_dec_norm``, save/load
and ``from_dict`` round trips, the error term and its hook, the hook points, metadata and
``get_name``, splicing into a model at ``cfg.metadata.hook_name``, and the pretrained directory.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

import sith_lens
from sith_lens.lucid.sae import LucidModalityError, LucidSAE, LucidSAEConfig, LucidView

D_IN, D_SAE = 128, 256  # the toy CLIP's joint space, where every SAE here reads
HOOK = "hook_joint_tokens"
SAE_HOOKS = {"hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_output", "hook_sae_recons",
             "hook_sae_error"}


def _perturb(sae: Any, seed: int) -> Any:
    """Random, non-trivial weights: biases away from zero, decoder rows of uneven norm."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        for view in getattr(sae, "_modules", {}).values():
            if isinstance(view, LucidView):
                view.W_enc[:, _other_private(view)] = 0  # a view's other-modality block stays unused
    return sae


def _other_private(view: LucidView) -> slice:
    cfg = view.cfg
    start = cfg.n_shared + (cfg.n_private_vision if view.modality == "vision" else 0)
    size = cfg.n_private_text if view.modality == "vision" else cfg.n_private_vision
    return slice(start, start + size)


def _metadata(**extra: Any) -> SAEMetadata:
    return SAEMetadata(model_name="toy", **extra)


def make_standard() -> SAE:
    return _perturb(StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=_metadata(hook_name=HOOK))), 0)


def make_topk() -> SAE:
    return _perturb(TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=10, metadata=_metadata(hook_name=HOOK))), 1)


def make_lucid() -> LucidSAE:
    cfg = LucidSAEConfig(d_in=D_IN, d_sae=D_SAE, n_private_vision=32, n_private_text=16, k_shared=8, k_private=2,
                         metadata=_metadata(hook_name_vision=HOOK, hook_name_text=HOOK))
    return _perturb(LucidSAE(cfg), 2)


def make_release_view(modality: str) -> Callable[[], SAE]:
    return lambda: SAE.from_pretrained("sith-lens-toy-lucid", f"final/{modality}")


#: name -> (factory, the towers the SAE reads, whether fold_W_dec_norm may fold: SAELens's TopK SAE
#: refuses when folding would change which latents win Top-K, and so does a LUCID view whose rows
#: have uneven norms within a block, as the randomised ones here do; a trained view folds)
SAES: dict[str, tuple[Callable[[], SAE], tuple[str, ...], bool]] = {
    "standard": (make_standard, ("vision", "text"), True),
    "topk": (make_topk, ("vision", "text"), False),
    "lucid.vision": (lambda: make_lucid().vision, ("vision",), False),
    "lucid.text": (lambda: make_lucid().text, ("text",), False),
    "release.vision": (make_release_view("vision"), ("vision",), True),
    "release.text": (make_release_view("text"), ("text",), True),
}


def _x(seed: int = 0, shape: tuple[int, ...] = (3, 5)) -> torch.Tensor:
    return 2.0 * torch.randn(*shape, D_IN, generator=torch.Generator().manual_seed(seed))


# -- the behaviours ---------------------------------------------------------------------------------------
def encode_decode_forward_shapes_and_dtypes(sae: SAE, ctx: Any) -> None:
    x = _x()
    codes = sae.encode(x)
    assert codes.shape == (3, 5, sae.cfg.d_sae) and codes.dtype == sae.dtype
    assert (codes != 0).any() and (codes >= 0).all()
    recon = sae.decode(codes)
    assert recon.shape == x.shape and recon.dtype == sae.dtype
    torch.testing.assert_close(sae(x), recon)


def decoder_is_affine_in_raw_units(sae: SAE, ctx: Any) -> None:
    codes = sae.encode(_x(1))
    torch.testing.assert_close(sae.decode(codes), codes @ sae.W_dec + sae.b_dec)
    assert sae.W_enc.shape == (D_IN, sae.cfg.d_sae) and sae.W_dec.shape == (sae.cfg.d_sae, D_IN)
    assert sae.b_enc.shape == (sae.cfg.d_sae,) and sae.b_dec.shape == (D_IN,)


def pre_activations_follow_the_encoder(sae: SAE, ctx: Any) -> None:
    x = _x(2)
    _, cache = sae.run_with_cache(x)
    torch.testing.assert_close(cache["hook_sae_acts_pre"], (x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    torch.testing.assert_close(cache["hook_sae_acts_post"], sae.encode(x))


def has_the_standard_hook_points(sae: SAE, ctx: Any) -> None:
    assert SAE_HOOKS <= set(sae.hook_dict)


def to_dtype_moves_weights_and_config(sae: SAE, ctx: Any) -> None:
    sae.to(torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in sae.parameters())
    assert sae.cfg.dtype == "bfloat16" and sae.dtype == torch.bfloat16
    assert sae.encode(_x()).dtype == torch.bfloat16
    assert sae.decode(sae.encode(_x())).dtype == torch.bfloat16


def to_device_moves_weights_and_config(sae: SAE, ctx: Any) -> None:
    sae.to("meta")
    assert all(p.device.type == "meta" for p in sae.parameters())
    assert sae.cfg.device == "meta" and sae.device == torch.device("meta")


def fold_W_dec_norm_keeps_outputs_and_normalises_rows(sae: SAE, ctx: Any) -> None:
    x = _x(3)
    before, weights = sae(x), {k: v.clone() for k, v in sae.state_dict().items()}
    assert not torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(sae.cfg.d_sae), atol=1e-3)
    if not ctx["may_fold"]:  # refused, as SAELens's TopK SAE refuses, and nothing changed
        with pytest.raises(NotImplementedError, match="not safe"):
            sae.fold_W_dec_norm()
        assert all(torch.equal(v, weights[k]) for k, v in sae.state_dict().items())
        return
    norms, codes = sae.W_dec.norm(dim=-1), sae.encode(x)
    folded = copy.deepcopy(sae)
    folded.fold_W_dec_norm()
    torch.testing.assert_close(folded.W_dec.norm(dim=-1), torch.ones(sae.cfg.d_sae))
    folded_codes = folded.encode(x)
    assert torch.equal(folded_codes.nonzero(), codes.nonzero())  # the same latents fire ...
    torch.testing.assert_close(folded_codes, codes * norms, rtol=1e-4, atol=1e-4)  # ... scaled by their norms
    torch.testing.assert_close(folded(x), before, rtol=1e-4, atol=1e-4)


def fold_activation_norm_scaling_factor_takes_unscaled_inputs(sae: SAE, ctx: Any) -> None:
    x, factor = _x(7), 3.0
    folded = copy.deepcopy(sae)
    folded.fold_activation_norm_scaling_factor(factor)
    assert folded.cfg.normalize_activations == "none"
    torch.testing.assert_close(folded.encode(x / factor), sae.encode(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(factor * folded(x / factor), sae(x), rtol=1e-4, atol=1e-4)


def disabled_hooks_cache_nothing(sae: SAE, ctx: Any) -> None:
    from sae_lens.saes.sae import _disable_hooks

    x = _x(8)
    out, cache = sae.run_with_cache(x)
    with _disable_hooks(sae):
        disabled_out, disabled_cache = sae.run_with_cache(x)
    torch.testing.assert_close(disabled_out, out)
    assert not disabled_cache.keys() and SAE_HOOKS - {"hook_sae_error"} <= set(cache.keys())


def save_and_load_round_trip(sae: SAE, ctx: Any) -> None:
    folder = ctx["tmp_path"] / "saved"
    sae.save_model(folder)
    loaded = SAE.load_from_disk(folder)
    assert type(loaded) is type(sae)
    assert loaded.cfg.to_dict() == sae.cfg.to_dict()
    assert loaded.state_dict().keys() == sae.state_dict().keys()
    for name, tensor in sae.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)
    torch.testing.assert_close(loaded(_x(4)), sae(_x(4)))
    fresh = SAE.from_dict(sae.cfg.to_dict())
    assert type(fresh) is type(sae) and fresh.cfg.to_dict() == sae.cfg.to_dict()


def error_term_restores_the_input_and_is_hooked(sae: SAE, ctx: Any) -> None:
    x = _x(5)
    recon = sae.decode(sae.encode(x))
    sae.use_error_term = True
    out, cache = sae.run_with_cache(x)
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache["hook_sae_error"], x - recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache["hook_sae_recons"], recon)

    def ablate(acts: torch.Tensor, hook: Any) -> torch.Tensor:
        return torch.full_like(acts, 20.0)

    with sae.hooks(fwd_hooks=[("hook_sae_acts_post", ablate)]):
        ablated, ablated_cache = sae.run_with_cache(x)
    assert not torch.allclose(ablated, out, rtol=1e-2) and (ablated_cache["hook_sae_acts_post"] == 20).all()
    torch.testing.assert_close(ablated_cache["hook_sae_error"], cache["hook_sae_error"])  # the error is the clean one


def metadata_names_its_hook(sae: SAE, ctx: Any) -> None:
    meta = sae.cfg.metadata
    assert meta.hook_name == HOOK and meta.model_name == "toy"
    name = sae.get_name()
    assert HOOK in name and "toy" in name and str(sae.cfg.d_sae) in name and "None" not in name


def splices_into_its_towers(sae: SAE, ctx: Any) -> None:
    toy = ctx["toy"]
    inputs = {"vision": ((ctx["pixels"],), {}), "text": ((ctx["tokens"].input_ids,),
                                                      {"attention_mask": ctx["tokens"].attention_mask})}
    for modality in ctx["towers"]:
        tower = getattr(toy, modality)
        args, kwargs = inputs[modality]
        clean, clean_cache = tower.run_with_cache(*args, return_type="tokens", **kwargs)
        tower.add_sae(sae, use_error_term=True)
        try:
            out, cache = tower.run_with_cache(*args, return_type="tokens", **kwargs)
        finally:
            tower.reset_saes()
        torch.testing.assert_close(out, clean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cache[f"{HOOK}.hook_sae_acts_post"], sae.encode(clean_cache[HOOK]),
                                   rtol=1e-4, atol=1e-4)
        assert f"{HOOK}.hook_sae_acts_post" not in tower.hook_dict


BEHAVIOURS = [
    encode_decode_forward_shapes_and_dtypes, decoder_is_affine_in_raw_units, pre_activations_follow_the_encoder,
    has_the_standard_hook_points, to_dtype_moves_weights_and_config, to_device_moves_weights_and_config,
    fold_W_dec_norm_keeps_outputs_and_normalises_rows, fold_activation_norm_scaling_factor_takes_unscaled_inputs,
    disabled_hooks_cache_nothing, save_and_load_round_trip,
    error_term_restores_the_input_and_is_hooked, metadata_names_its_hook, splices_into_its_towers,
]


@pytest.fixture(scope="module")
def inputs(toy):
    pixels = toy.preprocess(torch.randint(0, 255, (2, 64, 64, 3), dtype=torch.uint8).numpy())
    return {"toy": toy, "pixels": pixels, "tokens": toy.tokenize(["a red circle", "a small blue striped square"])}


@pytest.mark.parametrize("name", list(SAES))
@pytest.mark.parametrize("behaviour", BEHAVIOURS, ids=lambda f: f.__name__)
def test_generic_behaviour(behaviour, name, inputs, tmp_path):
    make, towers, may_fold = SAES[name]
    sae = make()
    with torch.no_grad():
        behaviour(sae, {**inputs, "towers": towers, "may_fold": may_fold, "tmp_path": tmp_path})


@pytest.mark.parametrize("sae_id", ["final", "final/vision", "final/text"])
def test_directory_lists_the_release_with_measured_figures(sae_id):
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    entry = get_pretrained_saes_directory()["sith-lens-toy-lucid"]
    assert entry.model == "toy" and sae_id in entry.saes_map
    sae, cfg_dict, sparsity = SAE.from_pretrained_with_cfg_and_sparsity("sith-lens-toy-lucid", sae_id)
    meta = sae.cfg.metadata
    figures = {m: (meta.get(f"variance_explained_{m}"), meta.get(f"l0_{m}")) for m in ("vision", "text")}
    if sae_id == "final":
        assert isinstance(sae, LucidSAE)
        expected = [sum(f[i] for f in figures.values()) / 2 for i in (0, 1)]
    else:
        assert isinstance(sae, LucidView) and sae.cfg.metadata.hook_name == HOOK
        expected = list(figures[sae.modality])
        assert meta.variance_explained == expected[0]
    # measured, not a filled-in default
    assert 0.5 < entry.expected_var_explained[sae_id] < 1 and entry.expected_var_explained[sae_id] == pytest.approx(expected[0], abs=1e-3)
    assert 1 < entry.expected_l0[sae_id] <= 10 and entry.expected_l0[sae_id] == pytest.approx(expected[1], abs=1e-2)
    # log10 firing densities, one per latent; the codes' mean L0 is their total density
    assert sparsity is not None and sparsity.shape == (sae.cfg.d_sae,) and (sparsity <= 0).all()
    if sae_id != "final":
        assert float((10 ** sparsity).sum()) == pytest.approx(expected[1], rel=0.01)
    folded = SAE.from_pretrained("sith-lens-toy-lucid", sae_id, fold_W_dec_norm=True)  # a trained SAE folds
    for view in ([folded.vision, folded.text] if sae_id == "final" else [folded]):
        torch.testing.assert_close(view.W_dec.norm(dim=-1), torch.ones(view.cfg.d_sae))


def test_directory_keeps_the_release_after_cache_clear():
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    get_pretrained_saes_directory.cache_clear()
    assert "sith-lens-toy-lucid" in get_pretrained_saes_directory()
    assert isinstance(SAE.from_pretrained("sith-lens-toy-lucid", "final/text"), LucidView)


def test_a_plain_sae_lens_script_needs_no_import(tmp_path):
    """What a SAELens user writes, with and without `import sith_lens`: both load LUCID, the second
    because the installed sith_lens-tl3.pth imports sith_lens at interpreter start."""
    import subprocess
    import sys
    import sysconfig

    code = (
        "import sith_lens\n"
        "from sae_lens import SAE\n"
        "sae = SAE.from_pretrained('sith-lens-toy-lucid', 'final')\n"
        "view = SAE.from_pretrained('sith-lens-toy-lucid', 'final/vision')\n"
        "sae.save_model(r'%s')\n"
        "print(type(SAE.load_from_disk(r'%s')).__name__, type(view).__name__, view.cfg.metadata.hook_name)\n"
    ) % (tmp_path, tmp_path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["LucidSAE", "LucidView", HOOK]
    without = subprocess.run([sys.executable, "-c", "import sys; assert 'sith_lens' in sys.modules  # the .pth\n"
                              "from sae_lens import SAE\nprint(type(SAE.from_pretrained('sith-lens-toy-lucid', "
                              "'final')).__name__)"], capture_output=True, text=True)
    assert without.returncode == 0, without.stderr[-2000:]
    assert without.stdout.split() == ["LucidSAE"]
    # the negative control: the same script with site-packages on the path but its start-up files
    # (the .pth) not run; SAELens then knows no LUCID release
    site_dir = sysconfig.get_paths()["purelib"]
    bare = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.append({site_dir!r})\n"
                           "from sae_lens import SAE\nSAE.from_pretrained('sith-lens-toy-lucid', 'final')"],
                          capture_output=True, text=True)
    assert bare.returncode != 0 and "sith-lens-toy-lucid not found" in bare.stderr, bare.stderr[-2000:]


# -- the two-modality parent ---------------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda s: s.encode(_x()), lambda s: s.decode(torch.zeros(2, D_SAE)), lambda s: s(_x()),
    lambda s: s.W_enc, lambda s: s.b_enc, lambda s: s.W_dec, lambda s: s.b_dec,
    lambda s: s.cfg.metadata.hook_name, lambda s: s.get_W_dec_norm(), lambda s: s.fold_and_get_W_dec_norm(),
    lambda s: s.fold_activation_norm_scaling_factor(2.0),
], ids=["encode", "decode", "forward", "W_enc", "b_enc", "W_dec", "b_dec", "metadata.hook_name",
        "get_W_dec_norm", "fold_and_get_W_dec_norm", "fold_activation_norm_scaling_factor"])
def test_parent_refuses_one_modality_operations_naming_the_views(call):
    with pytest.raises(LucidModalityError, match=r"sae\.vision.* or sae\.text"):
        call(make_lucid())


def test_parent_runs_each_view_with_modality_and_moves_folds_and_saves_both(tmp_path):
    sae = make_lucid()
    x = _x(6)
    for modality in ("vision", "text"):
        view = sae.view(modality)
        torch.testing.assert_close(sae.encode(x, modality=modality), view.encode(x))
        torch.testing.assert_close(sae(x, modality=modality), view(x))
    with pytest.raises(NotImplementedError, match="not safe"):  # uneven row norms: neither view changes
        sae.fold_W_dec_norm()
    with torch.no_grad():  # a trained SAE's rows: unit directions times the modality's scale
        for m, scale in (("vision", 3.0), ("text", 0.5)):
            rows = sae.view(m).W_dec
            rows.copy_(scale * rows / rows.norm(dim=-1, keepdim=True))
    before = {m: sae(x, modality=m) for m in ("vision", "text")}
    sae.fold_W_dec_norm()
    for m in ("vision", "text"):
        torch.testing.assert_close(sae.view(m).W_dec.norm(dim=-1), torch.ones(D_SAE))
        torch.testing.assert_close(sae(x, modality=m), before[m], rtol=1e-4, atol=1e-4)
    sae.use_error_term = True
    assert sae.vision.use_error_term and sae.text.use_error_term
    torch.testing.assert_close(sae(x, modality="text"), x, rtol=1e-5, atol=1e-5)
    sae.use_error_term = False
    sae.save_model(tmp_path / "pair")
    loaded = SAE.load_from_disk(tmp_path / "pair")
    assert type(loaded) is LucidSAE and loaded.cfg.to_dict() == sae.cfg.to_dict()
    torch.testing.assert_close(loaded.text.encode(x), sae.text.encode(x))
    view = sith_lens.load_lucid(tmp_path / "pair", modality="text")
    assert type(view) is LucidView and view.cfg.metadata.hook_name == HOOK
    torch.testing.assert_close(view.encode(x), sae.text.encode(x))
    sae.to(torch.bfloat16)
    for view in (sae.vision, sae.text):  # views made before the move report the truth
        assert view.cfg.dtype == "bfloat16" and view.W_enc.dtype == torch.bfloat16
    assert "None" not in sae.get_name() and HOOK in sae.get_name()


def test_parent_metadata_reaches_the_views():
    import copy

    sae = copy.deepcopy(make_lucid())  # a copy keeps its views in step too
    sae.cfg.metadata.hook_name_text = "blocks.1.hook_resid_post"
    sae.cfg.metadata.model_name = "other"
    assert sae.text.cfg.metadata.hook_name == "blocks.1.hook_resid_post" and sae.vision.cfg.metadata.hook_name == HOOK
    assert sae.text.cfg.metadata.model_name == "other"
    assert "hook_name" not in sae.cfg.to_dict()["metadata"]
    view = copy.deepcopy(sae.text)
    assert type(view) is LucidView and view.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    torch.testing.assert_close(view.encode(_x()), sae.text.encode(_x()))


def test_parent_splices_the_towers_view_and_refuses_a_language_model(inputs):
    from sae_lens import HookedSAETransformer
    from transformer_lens import HookedTransformerConfig

    sae = make_lucid()
    toy = inputs["toy"]
    for modality, args in (("vision", (inputs["pixels"],)), ("text", (inputs["tokens"].input_ids,))):
        tower = getattr(toy, modality)
        _, cache = tower.run_with_cache_with_saes(*args, saes=sae, use_error_term=True, return_type="tokens")
        _, clean = tower.run_with_cache(*args, return_type="tokens")
        torch.testing.assert_close(cache[f"{HOOK}.hook_sae_acts_post"], sae.view(modality).encode(clean[HOOK]),
                                   rtol=1e-4, atol=1e-4)
    lm = HookedSAETransformer(HookedTransformerConfig(n_layers=1, d_model=D_IN, n_ctx=8, d_head=16, n_heads=8,
                                                      d_vocab=20, act_fn="relu", d_mlp=64))
    with pytest.raises(LucidModalityError, match="hook"):
        lm.add_sae(sae)
    # a view, given a hook of the language model, is an ordinary SAE there
    view = sae.text
    view.cfg.metadata.hook_name = "blocks.0.hook_resid_post"
    tokens = torch.randint(0, 20, (2, 6))
    clean_logits = lm(tokens)
    lm.add_sae(view, use_error_term=True)
    logits, cache = lm.run_with_cache(tokens)
    torch.testing.assert_close(logits, clean_logits, rtol=1e-4, atol=1e-4)
    assert cache["blocks.0.hook_resid_post.hook_sae_acts_post"].shape == (2, 6, D_SAE)
