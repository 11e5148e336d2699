"""OpenCLIP through the same hooked towers: parity with open_clip's own forward (fp32, tiny random
models built from configs in the test, no downloads).

open_clip needs torchvision, which needs a CUDA torch; these tests run in their own environment
(``make test-open-clip``, which CI runs). In the main environment they are skipped with a reason,
unless SITH_LENS_REQUIRE_OPEN_CLIP=1, which turns a missing open_clip into a failure (CI sets it
for the second run, so they cannot be skipped silently there).
"""

from __future__ import annotations

import os

import pytest
import torch

import sith_lens as sl
from conftest import perturb_

if os.environ.get("SITH_LENS_REQUIRE_OPEN_CLIP") == "1":
    import open_clip  # noqa: F401  (a failure here is the point)
else:
    open_clip = pytest.importorskip("open_clip", reason="open_clip is not installed here; run `make test-open-clip`")

RTOL = 1e-5


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def make_open_clip(seed: int = 0, custom_text: bool = False, perturb: bool = True, **overrides):
    """A tiny random open_clip model from a config (LayerNorms and biases perturbed so that parity
    sees them)."""
    from open_clip.model import CLIP, CustomTextCLIP

    vision = dict(image_size=32, patch_size=8, width=64, layers=2, head_width=16, mlp_ratio=2.0)
    text = dict(context_length=12, vocab_size=99, width=48, heads=4, layers=2)
    vision.update(overrides.pop("vision", {}))
    text.update(overrides.pop("text", {}))
    torch.manual_seed(seed)
    cls = CustomTextCLIP if custom_text else CLIP
    model = cls(embed_dim=24, vision_cfg=vision, text_cfg=text, **overrides).eval()
    return perturb_(model, ("ln", "gamma", "class_embedding")) if perturb else model


def token_ids(batch: int, n_ctx: int = 12, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    ids = torch.zeros(batch, n_ctx, dtype=torch.long)
    for i in range(batch):
        n = 3 + i
        ids[i, :n] = torch.randint(1, 97, (n,))
        ids[i, 0], ids[i, n] = 97, 98  # start and end of text (98 is the highest id), then padding 0
    return ids


VARIANTS = {
    "default": dict(),
    "quick-gelu-custom-text": dict(quick_gelu=True, custom_text=True),
    "odd-shape": dict(vision=dict(image_size=30, patch_size=6, width=36, head_width=12),
                      text=dict(width=30, heads=5, context_length=9)),
    "clipa-avg-pool": dict(vision=dict(no_ln_pre=True, pool_type="avg", final_ln_after_pool=True),
                           text=dict(no_causal_mask=True, pool_type="last")),
    "layer-scale-linear-proj": dict(vision=dict(ls_init_value=0.5), text=dict(proj_bias=True, pool_type="eos", eos_id=98),
                                    custom_text=True),
}


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
@pytest.mark.parametrize("batch", [1, 3])
def test_image_and_text_embeddings_match_open_clip(variant, batch):
    kwargs = dict(VARIANTS[variant])
    reference = make_open_clip(**kwargs)
    model = sl.load_clip(reference)
    size = model.vision.cfg.image_size
    torch.manual_seed(batch)
    pixels = torch.randn(batch, 3, size, size)
    ids = token_ids(batch, model.text.cfg.n_ctx, seed=batch)
    with torch.no_grad():
        want_img, want_txt = reference.encode_image(pixels), reference.encode_text(ids)
        got_img, got_txt = model.encode_image(pixels), model.encode_text(ids)
    assert model.cfg.family == "open_clip"
    assert got_img.shape == want_img.shape and got_txt.shape == want_txt.shape
    assert rel_err(got_img, want_img) < RTOL, variant
    assert rel_err(got_txt, want_txt) < RTOL, variant


def test_spec_string_builds_a_seeded_random_model_with_its_tokenizer_and_preprocessing():
    model = sl.load_clip("open_clip:ViT-B-32")
    again = sl.load_clip("open_clip:ViT-B-32")
    torch.testing.assert_close(model.vision.W_proj, again.vision.W_proj, rtol=0, atol=0)
    assert (model.vision.cfg.n_layers, model.vision.cfg.n_heads, model.vision.cfg.patch_size) == (12, 12, 32)
    reference = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    sl.load_clip(reference)  # an instance loads too
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    texts = ["a photo of a cat", "a diagram"]
    toks = model.tokenize(texts)
    torch.testing.assert_close(toks.input_ids, tokenizer(texts))
    assert toks.attention_mask.sum(1).tolist() == [7, 4]  # start + words + end
    from PIL import Image

    image = Image.new("RGB", (300, 200), (200, 30, 30))
    _, _, transform = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    ours = model.preprocess([image])
    theirs = transform(image)[None]
    assert ours.shape == theirs.shape == (1, 3, 224, 224)
    assert (ours - theirs).abs().max() < 0.05  # same statistics; resampling differs by a few levels
    with torch.no_grad():
        want = model.encode_text(texts)
    assert want.shape == (2, 512)


def test_over_long_text_warns_with_the_open_clip_tokenizer():
    model = sl.load_clip("open_clip:ViT-B-32")
    with pytest.warns(UserWarning, match="longer than the 77-token context"):
        toks = model.tokenize(["cat " * 100])
    assert toks.input_ids.shape == (1, 77)


def test_hooks_see_open_clip_internals():
    reference = make_open_clip()
    model = sl.load_clip(reference)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _, cache = model.vision.run_with_cache(pixels)
        embeds = reference.visual._embeds(pixels)  # patches + CLS + positions, then ln_pre
        resid = reference.visual.transformer.resblocks[0](embeds)
    assert rel_err(cache["hook_embed"], embeds) < RTOL
    assert rel_err(cache["resid_post", 0], resid) < RTOL


@pytest.mark.parametrize(
    "spec, error, words",
    [
        ("open_clip:", ValueError, "needs an architecture"),
        ("open_clip:ViT-B-322", ValueError, "did you mean"),
        ("open_clip:ViT-B-32//nonexistent/ckpt.pt", FileNotFoundError, "no OpenCLIP checkpoint file"),
        ("open_clip:coca_ViT-B-32", ValueError, "CoCa"),
        ("open_clip:ViT-B-32/laion_typo", ValueError, "no pretrained weights tagged 'laion_typo'.*laion2b_s34b_b79k"),
        ("open_clip:RN50", ValueError, "ResNet tower"),
        ("open_clip:ViT-B-16-SigLIP", ValueError, "timm tower.*transformers checkpoint"),
    ],
)
def test_unsupported_or_missing_open_clip_models_are_explained(spec, error, words):
    with pytest.raises(error, match=words):
        sl.load_clip(spec)


def test_pretrained_tag_offline_names_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(sl.adapters.loading.ModelNotAvailableError, match="checkpoint file"):
        sl.load_clip("open_clip:ViT-B-32/laion2b_s34b_b79k")


def test_local_checkpoint_file(tmp_path):
    arch_model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path / "vitb32.pt"
    torch.save(arch_model.state_dict(), path)
    model = sl.load_clip(f"open_clip:ViT-B-32/{path}")
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert rel_err(model.encode_image(pixels), arch_model.eval().encode_image(pixels)) < RTOL


def test_corrupt_local_checkpoint_file(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="(?s)cannot read the OpenCLIP checkpoint.*corrupt or belongs to another architecture"):
        sl.load_clip(f"open_clip:ViT-B-32/{path}")


def test_export_is_refused_clearly():
    model = sl.load_clip(make_open_clip())
    with pytest.raises(ValueError, match="'open_clip' model has no transformers layout"):
        model.save_pretrained("never-written")
    assert not os.path.exists("never-written")


def test_sith_explain_and_lucid_collect_run_on_an_open_clip_model(tmp_path, monkeypatch, capsys):
    """Both build a model fingerprint, which must cope with open_clip's tokenizer (it has no len)."""
    from sith_lens.cli import main
    from sith_lens.concepts import model_fingerprint
    from sith_lens.lucid.collect import cached, collect_pairs

    monkeypatch.setenv("SITH_LENS_CACHE", str(tmp_path / "cache"))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("cat\ndog\nred\nstriped\ncar\ntree\n", encoding="utf-8")
    out = tmp_path / "sith-out"
    assert main(["explain", "--model", "open_clip:ViT-B-32", "--vocab", str(vocab), "--layers", "-1",
                 "--k", "2", "--out", str(out)]) == 0
    result = sl.SITHResult.from_json(out / "sith.json")
    assert result.layers == [11] and result.n_heads == 12
    assert {c for c, _ in result.head(11, 0).vectors[0].concepts} <= {"cat", "dog", "red", "striped", "car", "tree"}

    model = sl.load_clip("open_clip:ViT-B-32")
    other = sl.load_clip("open_clip:ViT-B-16")
    assert model_fingerprint(model) == model_fingerprint(sl.load_clip("open_clip:ViT-B-32"))
    assert model_fingerprint(model) != model_fingerprint(other)
    pixels = torch.randn(2, 3, 224, 224)
    build = lambda: collect_pairs(model, [pixels], [["a red cat", "a striped car"]], n_batches=1, progress=False)  # noqa: E731
    acts = cached(model, {"test": 1}, build)
    assert acts.patches.shape[:2] == (2, 49) and acts.captions == ["a red cat", "a striped car"]
    again = cached(model, {"test": 1}, lambda: pytest.fail("the second call must come from the cache"))
    torch.testing.assert_close(again.patches, acts.patches)
