"""Shared fixtures: tiny CLIP models with random weights, built from configs (no downloads)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch


def make_hf_clip(
    act: str = "quick_gelu",
    n_heads: int = 4,
    d_head: int = 16,
    patch: int = 8,
    image: int = 32,
    text_heads: int = 4,
    text_d_head: int = 12,
    seed: int = 0,
    eos_token_id: int = 2,
):
    """A random transformers CLIPModel with the given shapes, in eval mode."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    cfg = CLIPConfig(
        projection_dim=24,
        vision_config=dict(
            hidden_size=n_heads * d_head, intermediate_size=2 * n_heads * d_head, num_hidden_layers=3,
            num_attention_heads=n_heads, image_size=image, patch_size=patch, hidden_act=act,
        ),
        text_config=dict(
            hidden_size=text_heads * text_d_head, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=text_heads, vocab_size=99, max_position_embeddings=12, hidden_act=act,
            eos_token_id=eos_token_id,
        ),
    )
    return perturb_(CLIPModel(cfg).eval(), ("norm", "class_embedding"))


def perturb_(model, name_parts: tuple[str, ...]):
    """Random init leaves LayerNorms at identity and biases at zero: perturb them (and parameters
    whose name contains one of ``name_parts``) so that parity tests see them. Returns ``model``."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or any(part in name for part in name_parts):
                p.add_(0.1 * torch.randn_like(p))
    return model


def make_hf_siglip(
    n_heads: int = 4,
    d_head: int = 16,
    patch: int = 8,
    image: int = 32,
    text_heads: int = 4,
    text_d_head: int = 12,
    n_ctx: int = 10,
    act: str = "gelu_pytorch_tanh",
    seed: int = 0,
):
    """A random transformers SiglipModel with the given shapes, in eval mode (LayerNorms and biases
    perturbed, as in ``make_hf_clip``)."""
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(seed)
    width = n_heads * d_head
    cfg = SiglipConfig(
        vision_config=dict(
            hidden_size=width, intermediate_size=2 * width, num_hidden_layers=3, num_attention_heads=n_heads,
            image_size=image, patch_size=patch, hidden_act=act,
        ),
        text_config=dict(
            hidden_size=text_heads * text_d_head, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=text_heads, vocab_size=99, max_position_embeddings=n_ctx, hidden_act=act,
            projection_size=width, bos_token_id=97, eos_token_id=98, pad_token_id=1,
        ),
    )
    return perturb_(SiglipModel(cfg).eval(), ("norm", "probe"))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Concept-embedding caches go to a fresh folder per test, never to ~/.cache."""
    monkeypatch.setenv("SITH_LENS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def toy():
    """The shipped toy CLIP (tests that change it work on a copy)."""
    import sith_lens as sl

    return sl.load_clip("toy")


@pytest.fixture(scope="session")
def hf_tiny():
    return make_hf_clip()


@pytest.fixture(scope="session")
def tiny(hf_tiny):
    import sith_lens as sl

    return sl.load_clip(hf_tiny)


@pytest.fixture
def pixels():
    torch.manual_seed(1)
    return torch.randn(3, 3, 32, 32)


@pytest.fixture
def token_batch():
    """Three right-padded sequences that end with the end-of-text token (the highest id, 98)."""
    ids = torch.tensor([[5, 17, 40, 98, 0, 0], [7, 98, 0, 0, 0, 0], [3, 9, 12, 33, 61, 98]])
    mask = (torch.arange(6)[None] <= (ids == 98).int().argmax(-1)[:, None]).long()
    return ids, mask
