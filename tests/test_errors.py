"""Every way a user can hand load_clip or a tower something wrong gets a message that names the
problem and the fix; these tests check the messages, not only the exception types."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import sith_lens as sl
from conftest import make_hf_clip


@pytest.fixture(scope="module")
def saved_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip")
    make_hf_clip().save_pretrained(path)
    return path


def copy_checkpoint(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


# -- unsupported architectures -------------------------------------------------------------------
@pytest.mark.parametrize(
    "config, words",
    [
        ("Siglip2Config", ["'siglip2'", "SigLIP 2", "SigLIP (v1)"]),
        ("CLIPVisionConfig", ["'clip_vision_model'", "vision tower alone", "full CLIPModel"]),
        ("SiglipTextConfig", ["'siglip_text_model'", "text tower alone", "full SiglipModel"]),
        ("BertConfig", ["'bert'", "not a CLIP-family dual encoder", "'clip', 'siglip'", "docs/models.md"]),
    ],
)
def test_unsupported_architecture_in_config(tmp_path, config, words):
    import transformers

    getattr(transformers, config)().save_pretrained(tmp_path)
    with pytest.raises(ValueError) as err:
        sl.load_clip(tmp_path)
    for w in words:
        assert w in str(err.value)


def test_unsupported_instance_names_the_whole_model():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    tower = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=16, patch_size=8))
    with pytest.raises(ValueError, match="vision tower alone.*full CLIPModel"):
        sl.load_clip(tower)


def test_config_without_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 3}))
    with pytest.raises(ValueError, match="not a transformers model config"):
        sl.load_clip(tmp_path)


# -- missing or corrupt weights ------------------------------------------------------------------
def test_missing_weight_file(tmp_path, saved_clip):
    path = copy_checkpoint(saved_clip, tmp_path / "ckpt")
    (path / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"config.json but no weights \(none of model.safetensors.*save_pretrained"):
        sl.load_clip(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_weight_file(tmp_path, saved_clip, damage):
    path = copy_checkpoint(saved_clip, tmp_path / "ckpt")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read the weights.*truncated or corrupt.*again"):
        sl.load_clip(path)


def test_weight_file_missing_a_tensor_is_not_filled_with_random_values(tmp_path, saved_clip):
    from safetensors.torch import load_file, save_file

    path = copy_checkpoint(saved_clip, tmp_path / "ckpt")
    state = load_file(str(path / "model.safetensors"))
    del state["vision_model.encoder.layers.1.mlp.fc1.weight"]
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"do not fit its config \(missing keys: 1.*fc1.weight.*incomplete"):
        sl.load_clip(path)


def test_config_that_does_not_match_the_weights(tmp_path, saved_clip):
    path = copy_checkpoint(saved_clip, tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())
    config["vision_config"]["intermediate_size"] += 4
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="other shapes than its config.json says.*Restore the config"):
        sl.load_clip(path)


def test_weights_for_more_layers_than_the_config_are_refused(tmp_path, saved_clip):
    """A config of 1 layer over 2 layers of weights used to load silently as 1 layer."""
    path = copy_checkpoint(saved_clip, tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())
    config["vision_config"]["num_hidden_layers"] -= 1
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unexpected keys: \d+.*more layers or parts than config.json.*Restore"):
        sl.load_clip(path)


def test_integer_weights_are_refused(tmp_path, saved_clip):
    """Integer tensors used to load as zeros (or rounded values)."""
    from safetensors.torch import load_file, save_file

    path = copy_checkpoint(saved_clip, tmp_path / "ckpt")
    state = load_file(str(path / "model.safetensors"))
    state["visual_projection.weight"] = state["visual_projection.weight"].round().to(torch.int32)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"1 non-floating tensors.*visual_projection.weight \(I32\).*\.float\(\)"):
        sl.load_clip(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, saved_clip, value):
    from safetensors.torch import load_file, save_file

    path = copy_checkpoint(saved_clip, tmp_path / "ckpt")
    state = load_file(str(path / "model.safetensors"))
    state["text_model.encoder.layers.0.self_attn.v_proj.weight"][2, 3] = value
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"text\.blocks\.0\.attn\.W_V holds 1 NaN or infinite values.*earlier checkpoint"):
        sl.load_clip(path)
    model = make_hf_clip()
    with torch.no_grad():
        model.vision_model.post_layernorm.weight[0] = value
    with pytest.raises(ValueError, match="vision.ln_final.w holds 1 NaN"):
        sl.load_clip(model)


# -- images --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return sl.load_clip("random:tiny")


def test_images_of_the_wrong_shape_dtype_or_range(tiny):
    with pytest.raises(ValueError, match=r"shape \[batch, 3, 32, 32\], got \[3, 32, 32\].*preprocess"):
        tiny.encode_image(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r"got \[2, 32, 32, 3\]"):
        tiny.encode_image(torch.randn(2, 32, 32, 3))  # channels last
    with pytest.raises(TypeError, match=r"floating point, got torch.uint8.*preprocess"):
        tiny.encode_image(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"reach 255.*raw 0-255 values.*preprocess"):
        tiny.encode_image(torch.full((1, 3, 32, 32), 255.0))
    bad = torch.randn(1, 3, 32, 32)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        tiny.encode_image(bad)


def test_token_tensors_of_the_wrong_shape(tiny):
    with pytest.raises(TypeError, match=r"integer tensor \[batch, pos\], got torch.int64 tensor of shape \[5\].*tokenize"):
        tiny.encode_text(torch.ones(5, dtype=torch.long))
    with pytest.raises(TypeError, match=r"got torch.int64 tensor of shape \[1, 2, 5\]"):
        tiny.text(torch.ones(1, 2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask shape \[1, 4\] does not match tokens \[1, 5\]"):
        tiny.text(torch.ones(1, 5, dtype=torch.long), attention_mask=torch.ones(1, 4, dtype=torch.long))


# -- over-long text ------------------------------------------------------------------------------
def test_over_long_text_is_truncated_with_a_warning_or_raises(toy):
    n_ctx = toy.text.cfg.n_ctx
    long = " ".join(["red circle"] * n_ctx)
    with pytest.warns(UserWarning, match=rf"1 of 2 texts are longer than the {n_ctx}-token context.*truncated"):
        toks = toy.tokenize(["a red circle", long])
    assert toks.input_ids.shape[1] == n_ctx
    with pytest.raises(ValueError, match=r"longer than the .*shorten them, or pass truncate=True"):
        toy.tokenize([long], truncate=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # short texts: no warning
        toy.encode_text(["a red circle"])


def test_open_clip_without_the_extra_says_how_to_install():
    import importlib.util

    if importlib.util.find_spec("open_clip") is not None:
        pytest.skip("open_clip is installed here; this checks the main environment, which has no open_clip")
    with pytest.raises(ImportError, match=r"pip install 'sith-lens\[open-clip\]'"):
        sl.load_clip("open_clip:ViT-B-32")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "sith_lens.cli", "info", "--model", "open_clip:ViT-B-32"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "sith-lens: error: OpenCLIP support needs the optional extra" in proc.stderr
