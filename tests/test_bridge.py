"""TransformerLens 3 TransformerBridge over CLIP and SigLIP vision towers (adapters/bridge.py):
booting offline, hook and weight parity with our towers, SITH on a bridged model, refusals."""

from __future__ import annotations

import copy
import re
import subprocess
import sys

import pytest
import torch

import sith_lens as sl
from conftest import make_hf_clip, make_hf_siglip
from sith_lens.adapters.bridge import CompatibilityModeRefused, vision_tower
from sith_lens.adapters.loading import toy_checkpoint_dir
from transformer_lens.model_bridge import TransformerBridge

RTOL = 1e-5  # max |bridge - ours| / max |ours| at every compared hook

# Hooks every layer must have compared (the standard TransformerLens names).
PER_LAYER = ["hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "attn.hook_pattern",
             "hook_attn_out", "hook_resid_mid", "ln1.hook_scale", "ln1.hook_out", "ln2.hook_scale", "ln2.hook_out",
             "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post"]


def expected(name: str, ours: dict, kind: str, ln_final_affine) -> torch.Tensor | None:
    """Our activation at the bridge's hook ``name`` (the mapping in adapters/bridge.py), or None
    where the bridge hook has no counterpart to compare. ``kind``: "clip" or "siglip" (vision
    towers) or "text"."""
    if name in ("embed.hook_out", "hook_embed"):
        if kind == "text":
            return ours["blocks.0.hook_resid_pre"]  # token + position embeddings
        return ours["embed.hook_patches"] + ours["embed.hook_pos"]
    if name == "ln_pre.hook_out":
        return ours["hook_embed"]
    if re.fullmatch(r"blocks\.\d+\.ln[12]\.hook_out", name):  # ours are after the affine, as TL's
        return ours[name.replace("hook_out", "hook_normalized")]
    if name in ("ln_final.hook_normalized", "ln_final.hook_scale", "ln_final.hook_out"):
        normalized = ours[name.replace("hook_out", "hook_normalized")]
        normalized = normalized[:, 0] if kind == "clip" else normalized  # CLIP reads out the CLS token alone
        return ln_final_affine(normalized) if name.endswith("hook_out") else normalized
    if re.search(r"hook_attn_scores|\.hook_in$|ln[12]?\w*\.hook_normalized|ln_pre\.hook_normalized|^proj\.", name):
        return None  # the pattern again (see the module); inputs of other hooks; pre-affine LN; read-outs
    return ours.get(name)


def check_parity(bridge, tower, inputs, kind):
    _, cache = bridge.run_with_cache(inputs)
    _, ours = tower.run_with_cache(inputs)
    ours = dict(ours.items())
    compared = []
    for name in cache.keys():
        want = expected(name, ours, kind, tower.ln_final.affine)
        if want is None:
            continue
        got = cache[name]
        assert got.shape == want.shape, f"{name}: {tuple(got.shape)} vs ours {tuple(want.shape)}"
        err = ((got - want).abs().max() / want.abs().max()).item()
        assert err < RTOL, f"{name}: relative error {err:.2e}"
        compared.append(name)
    needed = [f"blocks.{l}.{h}" for l in range(tower.cfg.n_layers) for h in PER_LAYER]
    assert not set(needed) - set(compared), sorted(set(needed) - set(compared))[:5]
    for w in ("W_Q", "W_K", "W_V", "W_O"):
        torch.testing.assert_close(getattr(bridge, w), getattr(tower, w), rtol=0, atol=1e-6)
    torch.testing.assert_close(bridge.OV.AB, tower.OV.AB, rtol=1e-5, atol=1e-6)
    return compared


@pytest.fixture(scope="module")
def toy_bridge():
    return TransformerBridge.boot_transformers(str(toy_checkpoint_dir()), device="cpu")


def test_boot_toy_folder_offline_and_parity(toy_bridge, toy):
    assert type(toy_bridge.original_model).__name__ == "CLIPVisionModelWithProjection"
    cfg = toy.vision.cfg
    assert (toy_bridge.cfg.n_layers, toy_bridge.cfg.n_heads, toy_bridge.cfg.d_head) == (cfg.n_layers, cfg.n_heads, cfg.d_head)
    pixels = sl.ToyWorld(seed=3).batch(0, 4).pixels
    compared = check_parity(toy_bridge, toy.vision, pixels, "clip")
    assert {"ln_pre.hook_out", "hook_embed", "ln_final.hook_normalized", "ln_final.hook_out"} <= set(compared)
    _, cache = toy_bridge.run_with_cache(pixels, names_filter="proj.hook_out")
    torch.testing.assert_close(cache["proj.hook_out"], toy.vision(pixels), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_odd_clip_instance(act):
    clip = make_hf_clip(act=act, n_heads=6, d_head=16, patch=12, image=36, seed=2)
    bridge = TransformerBridge.boot_transformers("odd-clip", hf_model=vision_tower(clip), device="cpu")
    ours = sl.load_clip(clip)  # vision_tower copied: the bridge's rewiring left clip as it was
    check_parity(bridge, ours.vision, torch.randn(3, 3, 36, 36), "clip")
    # the bare vision tower (no projection) boots too
    bare = TransformerBridge.boot_transformers("odd-clip", hf_model=copy.deepcopy(clip.vision_model), device="cpu")
    assert bare.cfg.n_heads == 6 and not hasattr(bare, "proj")


def test_odd_siglip_instance():
    siglip = make_hf_siglip(n_heads=6, d_head=16, patch=12, image=36, seed=3)
    bridge = TransformerBridge.boot_transformers("odd-siglip", hf_model=vision_tower(siglip), device="cpu")
    ours = sl.load_clip(siglip)
    pixels = torch.randn(3, 3, 36, 36)
    check_parity(bridge, ours.vision, pixels, "siglip")
    _, cache = bridge.run_with_cache(pixels)
    torch.testing.assert_close(cache["pool.hook_out"], ours.vision(pixels, return_type="embed"), rtol=1e-5, atol=1e-5)


def test_siglip_folder(tmp_path):
    siglip = make_hf_siglip(seed=4)
    siglip.save_pretrained(tmp_path)
    bridge = TransformerBridge.boot_transformers(str(tmp_path), device="cpu")
    assert type(bridge.original_model).__name__ == "SiglipVisionModel"
    check_parity(bridge, sl.load_clip(siglip).vision, torch.randn(2, 3, 32, 32), "siglip")


def test_clip_vision_tower_folder(tmp_path):
    """A bare CLIPVisionModel checkpoint boots as itself (no projection to initialise at random)."""
    clip = make_hf_clip(seed=5)
    copy.deepcopy(clip.vision_model).save_pretrained(tmp_path)
    bridge = TransformerBridge.boot_transformers(str(tmp_path), device="cpu")
    assert type(bridge.original_model).__name__ == "CLIPVisionModel" and not hasattr(bridge, "proj")
    check_parity(bridge, sl.load_clip(clip).vision, torch.randn(2, 3, 32, 32), "clip")


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_text_tower(family, tmp_path):
    """Text towers: booted from an instance (with a tokenizer) and, for the toy CLIP's tokenizer, a
    text-tower folder; the same activations as our text tower on unpadded sequences."""
    from sith_lens.adapters.bridge import text_tower

    hf = make_hf_clip(n_heads=6, d_head=16, seed=6) if family == "clip" else make_hf_siglip(seed=6)
    ours = sl.load_clip(hf).text
    tokenizer = sl.load_clip("toy").tokenizer
    bridge = TransformerBridge.boot_transformers("odd-text", hf_model=text_tower(hf), tokenizer=tokenizer, device="cpu")
    torch.manual_seed(0)
    n = ours.cfg.n_ctx
    ids = torch.randint(3, 90, (3, n))
    ids[:, -1] = 98  # the end-of-text id (the highest), where CLIP pools
    check_parity(bridge, ours, ids, "text")
    with pytest.raises(CompatibilityModeRefused, match="text tower"):
        bridge.enable_compatibility_mode()
    with pytest.raises(TypeError, match="vision tower"):
        sl.load_clip(bridge)
    if family == "clip":  # a text-tower folder boots on its own, tokenizer included
        text_tower(hf).save_pretrained(tmp_path)
        tokenizer.save_pretrained(tmp_path)
        folder = TransformerBridge.boot_transformers(str(tmp_path), device="cpu")
        assert type(folder.original_model).__name__ == "CLIPTextModelWithProjection"
        torch.testing.assert_close(folder.W_V, ours.W_V)


def test_explain_heads_on_bridge_matches_load_clip(toy_bridge, toy):
    bridged = sl.load_clip(toy_bridge)
    concepts = sl.ConceptDictionary.from_vocab(toy, "toy")
    a = sl.explain_heads(bridged, concepts, layers=[-1], progress=False)
    b = sl.explain_heads(toy, concepts, layers=[-1], progress=False)
    for head in range(toy.vision.cfg.n_heads):
        assert str(a.head(-1, head)) == str(b.head(-1, head))  # concepts, weights, sigmas, fidelities
    # the bridge's own weights are what is read: an edit on the bridge shows up
    with torch.no_grad():
        toy_bridge.blocks[5].attn.v.weight.mul_(2.0)
    try:
        doubled = sl.load_clip(toy_bridge).vision.W_V[5]
        torch.testing.assert_close(doubled, 2 * toy.vision.W_V[5])
    finally:
        with torch.no_grad():
            toy_bridge.blocks[5].attn.v.weight.div_(2.0)


def test_explain_heads_names_the_conversion(toy_bridge, toy):
    concepts = sl.ConceptDictionary.from_vocab(toy, "toy")
    with pytest.raises(TypeError, match=r"sl.load_clip\(bridge\)"):
        sl.explain_heads(toy_bridge, concepts)


def test_compatibility_mode_and_processing_refused():
    bridge = TransformerBridge.boot_transformers("tiny", hf_model=vision_tower(make_hf_clip()), device="cpu")
    with pytest.raises(CompatibilityModeRefused, match="ln_pre"):
        bridge.enable_compatibility_mode()
    with pytest.raises(CompatibilityModeRefused, match="load_clip"):
        bridge.process_weights()
    siglip = TransformerBridge.boot_transformers("tiny", hf_model=vision_tower(make_hf_siglip()), device="cpu")
    with pytest.raises(CompatibilityModeRefused, match="attention-pooling"):
        siglip.enable_compatibility_mode()


def test_whole_dual_encoder_instance_refused():
    with pytest.raises(ValueError, match="vision_tower"):
        TransformerBridge.boot_transformers("tiny", hf_model=make_hf_clip(), device="cpu")
    with pytest.raises(TypeError, match="CLIPModel or SiglipModel"):
        vision_tower(torch.nn.Linear(2, 2))


def test_from_bridge_without_text_source_says_what_to_pass():
    bridge = TransformerBridge.boot_transformers("nowhere", hf_model=vision_tower(make_hf_clip()), device="cpu")
    with pytest.raises(ValueError, match="text_from="):
        sl.load_clip(bridge)
    from sith_lens.adapters.bridge import from_bridge

    clip = make_hf_clip()
    model = from_bridge(TransformerBridge.boot_transformers("x", hf_model=vision_tower(clip), device="cpu"), text_from=clip)
    torch.testing.assert_close(model.vision.W_V, sl.load_clip(clip).vision.W_V)


def test_other_architectures_untouched():
    """The lookup only adds CLIP and SigLIP: what TransformerLens resolves itself, or refuses, is
    unchanged."""
    from transformers import BertConfig, ViTConfig

    from transformer_lens.model_bridge.sources.transformers import determine_architecture_from_hf_config

    assert determine_architecture_from_hf_config(BertConfig()) == "BertForMaskedLM"
    vit = ViTConfig()
    vit.architectures = ["ViTForImageClassification"]
    assert determine_architecture_from_hf_config(vit) == "ViTForImageClassification"
    with pytest.raises(ValueError, match="Could not determine"):
        determine_architecture_from_hf_config(ViTConfig())


@pytest.mark.parametrize("first", ["nothing", "sith_lens", "transformer_lens"])
def test_boot_in_a_fresh_process(first):
    """In a fresh interpreter, code that never imports sith_lens boots a CLIP folder: the adapter
    comes from the installed entry points, the lookup from the import hook that the installed
    ``sith_lens-tl3.pth`` arms at start-up. Importing sith_lens before or after TransformerLens
    changes nothing."""
    imports = ["import sith_lens", "from transformer_lens.model_bridge import TransformerBridge"]
    if first == "nothing":
        imports = imports[1:]
    elif first == "transformer_lens":
        imports = imports[::-1]
    code = "\n".join([
        "import os; os.environ['HF_HUB_OFFLINE'] = '1'",
        *imports,
        f"b = TransformerBridge.boot_transformers({str(toy_checkpoint_dir())!r}, device='cpu')",
        "print(type(b.adapter).__module__, type(b.adapter).__name__)",
    ])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "sith_lens.adapters.bridge CLIPVisionArchitectureAdapter" in out.stdout


def test_without_the_start_up_file_tl_cannot_boot_clip():
    """The negative control: site-packages on the path but its start-up files (the .pth) not run,
    and no import of sith_lens: TransformerLens 3.9 refuses the CLIP folder."""
    import sysconfig

    code = "\n".join([
        f"import sys; sys.path.append({sysconfig.get_paths()['purelib']!r})",
        "import os; os.environ['HF_HUB_OFFLINE'] = '1'",
        "from transformer_lens.model_bridge import TransformerBridge",
        f"TransformerBridge.boot_transformers({str(toy_checkpoint_dir())!r}, device='cpu')",
    ])
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "Could not determine supported architecture" in out.stderr, out.stderr[-2000:]
