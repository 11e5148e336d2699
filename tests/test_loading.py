"""load_clip: specs, saved directories, instances, and clear errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import sith_lens as sl
from conftest import make_hf_clip


def test_local_directory_round_trip_with_tokenizer_and_processor(tmp_path, hf_tiny):
    from transformers import CLIPImageProcessorPil, CLIPTokenizerFast, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<bos>", "a", "red", "circle", "blue", "square"]
    vocab = {w: i for i, w in enumerate(words)} | {"<eot>": 98}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eot>")
    hf_tiny.save_pretrained(tmp_path)
    fast.save_pretrained(tmp_path)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)

    model = sl.load_clip(tmp_path)
    assert model.cfg.model_name == str(tmp_path)
    toks = model.tokenize(["a red circle <eot>", "blue square <eot>"])
    assert toks.input_ids.tolist() == [[2, 3, 4, 98], [5, 6, 98, 0]]
    assert toks.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    with torch.no_grad():
        want = hf_tiny.get_text_features(input_ids=toks.input_ids, attention_mask=toks.attention_mask).pooler_output
        torch.testing.assert_close(model.encode_text(["a red circle <eot>", "blue square <eot>"]), want)


def test_preprocess_handles_grayscale_rgba_and_odd_sizes(tiny):
    from PIL import Image

    images = [
        Image.new("L", (50, 70), 128),
        Image.new("RGBA", (64, 40), (255, 0, 0, 128)),
        Image.new("RGB", (900, 600), (0, 0, 255)),
    ]
    pixels = tiny.preprocess(images)
    assert pixels.shape == (3, 3, 32, 32) and pixels.dtype == torch.float32
    assert tiny.encode_image(pixels, normalize=True).norm(dim=-1).allclose(torch.ones(3))


def test_preprocess_rejects_files_that_are_not_images(tiny, tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    with pytest.raises(ValueError, match="cannot read .*notes.txt.* as an image"):
        tiny.preprocess([text_file])
    with pytest.raises(ValueError, match="as an image"):
        tiny.preprocess(str(tmp_path / "missing.png"))


def test_random_spec_is_seeded():
    a, b = sl.load_clip("random:tiny"), sl.load_clip("random:tiny")
    torch.testing.assert_close(a.vision.W_V, b.vision.W_V)


def test_hooked_clip_passes_through_and_moves_dtype(tiny):
    assert sl.load_clip(tiny) is tiny
    half = sl.load_clip(make_hf_clip(), dtype=torch.float64)
    assert half.vision.W_V.dtype == torch.float64 and half.vision(torch.randn(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64


def test_unknown_id_offline_raises_clear_error():
    with pytest.raises(sl.ModelNotAvailableError) as info:
        sl.load_clip("nobody/no-such-clip-model")
    msg = str(info.value)
    assert "nobody/no-such-clip-model" in msg
    assert "huggingface-cli download" in msg and "offline" in msg


@pytest.mark.parametrize(
    "spec, error, words",
    [
        ("", ValueError, "empty"),
        ("random:huge", ValueError, "random:tiny"),
        (42, TypeError, "CLIPModel"),
    ],
)
def test_bad_specs(spec, error, words):
    with pytest.raises(error, match=words):
        sl.load_clip(spec)


def test_missing_directory_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(sl.ModelNotAvailableError, match="neither an existing directory"):
        sl.load_clip(tmp_path / "missing" / "dir")


def test_directory_without_checkpoint_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        sl.load_clip(tmp_path)


def test_non_clip_checkpoint_is_rejected(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'bert'"):
        sl.load_clip(tmp_path)


def test_bad_inputs_name_the_fix(tiny):
    with pytest.raises(ValueError, match=r"\[batch, 3, 32, 32\].*preprocess"):
        tiny.vision(torch.randn(2, 3, 64, 64))
    with pytest.raises(TypeError, match="preprocess"):
        tiny.vision([[0.0]])
    with pytest.raises(TypeError, match="tokenize"):
        tiny.text(torch.randn(2, 5))
    with pytest.raises(ValueError, match="exceeds the context length"):
        tiny.text(torch.zeros(1, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids must lie"):
        tiny.text(torch.full((1, 4), 500))
    with pytest.raises(ValueError, match="no tokenizer"):
        tiny.encode_text(["a cat"])
    with pytest.raises(ValueError, match="return_type"):
        tiny.vision(torch.randn(1, 3, 32, 32), return_type="logit")


def test_cli_info_prints_summary():
    out = subprocess.run(
        [sys.executable, "-m", "sith_lens.cli", "info", "--model", "random:tiny"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "2 layers x 4 heads" in out and "blocks.{l}" in out and "attn.hook_z" in out and "parameters" in out


def test_cli_reports_errors_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "sith_lens.cli", "info", "--model", "nobody/no-such-clip-model"],
        capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert proc.returncode == 2
    assert "sith-lens: error: cannot load 'nobody/no-such-clip-model'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_saved_directory_matches_transformers(tmp_path, act):
    from transformers import CLIPModel

    make_hf_clip(act=act, seed=3).save_pretrained(tmp_path)
    reference = CLIPModel.from_pretrained(tmp_path).eval()
    model = sl.load_clip(str(tmp_path))
    assert model.vision.cfg.act_fn == act and model.tokenizer is None
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = reference.get_image_features(pixel_values=pixels).pooler_output
        torch.testing.assert_close(model.encode_image(pixels), want, rtol=1e-5, atol=1e-6)


def test_weight_maps_round_trip(hf_tiny, tiny):
    """Converting the hooked weights back gives transformers' state dict exactly (used by exports)."""
    from sith_lens.adapters.hf_clip import text_weight_maps, vision_weight_maps
    from sith_lens.adapters.weight_maps import axis_sizes, to_theirs

    hf_state = hf_tiny.state_dict()
    for tower, maps in ((tiny.vision, vision_weight_maps(tiny.vision.cfg)), (tiny.text, text_weight_maps(tiny.text.cfg))):
        back = to_theirs(tower.state_dict(), maps, axis_sizes(tower.cfg))
        for name, tensor in back.items():
            torch.testing.assert_close(tensor, hf_state[name], rtol=0, atol=0)
