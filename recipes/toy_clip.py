"""Train the toy CLIP contrastively on the toy world and save it as a Hugging Face checkpoint.

    python -m recipes.toy_clip --out sith_lens/assets/toy_clip --seed 0

The result is a standard ``CLIPModel`` directory (config.json, model.safetensors), a word-level
tokenizer in standard HF files (``AutoTokenizer`` loads it), a preprocessor_config.json, the SITH
image-embedding mean (image_mean.safetensors), training.json and a model card (README.md).

Loss: symmetric InfoNCE with a learned temperature on the pooled embeddings, where every caption
that is *true* of an image counts as a positive for it (the toy world's semantics say which), so a
short caption such as "a red object" is not pushed away from the other red-object scenes of its
batch. 70 % of each batch is one-object scenes captioned by one attribute, weighted towards shape
("a star"); the rest is hard-negative pairs (a scene and a copy with one value changed, both
captions naming it). The vision position embeddings start as a 2-D sine-cosine grid and the vision
attention heads mimetically (W_Q W_K^T near +I, W_V W_O near -I).

Two label-free token-level losses can be added (off by default; the shipped checkpoint has
neither): FILIP-style late interaction between patch tokens and word tokens
(``token_alignment_loss``, ``--token-loss``) and CLIPSelf-style crop consistency
(``crop_consistency_loss``, ``--crop-loss``), which give the patch tokens the dense alignment with
words that real CLIPs have. ``--init-from DIR`` continues from a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sith_lens.toyworld.captions import Caption, caption_truth, swap_weights, swapped_caption
from sith_lens.toyworld.data import PIXEL_MEAN, PIXEL_STD, ToyBatch, ToyWorld, group_probabilities
from sith_lens.toyworld.evaluate import caption_retrieval, zero_shot_accuracy
from sith_lens.toyworld.vocab import SPECIAL_TOKENS, tokenizer_words

#: Seed of the world used for the validation figures written to the model card.
VALIDATION_SEED = 1
#: Zero-shot accuracy every attribute should reach (the model card flags those below it).
QUALITY_TARGET = 0.90
#: The ways of building a batch (TrainConfig.batches).
BATCH_DESCRIPTIONS = {
    "groups": "groups of a scene and its variants that differ in one value (weights {group_weights})",
    "pairs": "hard-negative pairs (a scene and a copy with one value changed, both captions naming it)",
    "scenes": "independent scenes",
}
BATCH_KINDS = tuple(BATCH_DESCRIPTIONS)
#: The ways of initialising the vision attention heads (TrainConfig.attention_init).
ATTENTION_INITS = ("default", "mimetic")


@dataclass
class TrainConfig:
    """Everything that determines a training run."""

    #: Optimisation steps (one fresh batch each).
    steps: int = 1500
    batch_size: int = 256
    #: Peak learning rate of AdamW (linear warm-up, then cosine decay to 10%).
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.05
    #: Seeds the weights and the training world.
    seed: int = 0
    #: Vision tower: layers, heads, width. Text tower likewise.
    vision_layers: int = 6
    vision_heads: int = 8
    text_layers: int = 4
    text_heads: int = 4
    width: int = 128
    projection_dim: int = 128
    image_size: int = 64
    patch_size: int = 8
    #: Text context: the longest caption is 36 words plus <bos> and <eos>.
    n_ctx: int = 40
    #: How batches are built: "groups" (ToyWorld.group_batch: a scene and its variants that differ
    #: in one value), "pairs" (ToyWorld.contrastive_batch: a scene and one such variant) or
    #: "scenes" (independent scenes).
    batches: str = "pairs"
    #: For "pairs": the share of each batch given to one-object scenes captioned by one attribute
    #: ("a star"), and how often each attribute is the one named (ToyWorld.contrastive_batch).
    prompt_share: float = 0.7
    prompt_weights: str = "shape=6,texture=2,size=1,position=1,color=0.5,background=0.5"
    #: For "groups": how often each attribute is the varied one ("name=weight,...").
    group_weights: str = "shape=3,position=2,texture=2,size=1,color=1,background=1"
    #: Initialise the vision position embeddings as a 2-D sine-cosine grid with this RMS (0: keep
    #: transformers' N(0, 0.02) init, under which position barely reaches the CLS token at first).
    position_init: float = 0.1
    #: Hard-negative captions per image: its caption with one attribute word swapped ("a red
    #: star" -> "a red circle"), scored against the image with the batch's captions (NegCLIP-style).
    negatives: int = 0
    #: How often each attribute is the swapped one ("name=weight,..."; see captions.swapped_caption).
    negative_weights: str = "shape=3,texture=3,size=1,color=1,background=1"
    #: Hold the text tower at its random init for this many steps (learning rate 0), so the image
    #: tower first learns to match the captions' random but word-specific embeddings; a text tower
    #: trained from the start learns to ignore the words the image tower cannot yet see.
    text_delay: int = 0
    #: Initialise every vision attention head "mimetically" (Trockman & Kolter, 2023): W_Q W_K^T
    #: near +I and W_V W_O near -I, so heads start out attending to similar (nearby) patches, as
    #: the heads of trained ViTs do. "default" keeps transformers' random init.
    attention_init: str = "mimetic"
    #: bfloat16 autocast: faster on CPUs with AVX-512 BF16, where the shipped checkpoint was trained,
    #: but 5-20x *slower* on CPUs without it (measured: forward 5x, backward 22x; pass --no-bf16 there).
    bf16: bool = True
    #: Score zero-shot accuracy every this many steps (0: only at the end).
    eval_every: int = 200
    #: Weight of the token-level (FILIP-style late-interaction) loss next to the CLS loss: every
    #: patch token and every caption word token, each through its tower's final LayerNorm and
    #: projection, are matched by their best partner (see ``token_alignment_loss``). No masks or
    #: word-to-object labels are used. 0 turns it off (the earlier toy CLIPs).
    token_loss: float = 0.0
    #: How many items of each batch (the first ones: for "pairs", the hard-negative pairs with full
    #: captions, then one-word prompts) the token loss scores, all against all.
    token_items: int = 96
    #: Weight of the crop-consistency loss (``crop_consistency_loss``): the mean patch token of a
    #: random box must match the model's own image embedding of that box alone. 0 turns it off.
    crop_loss: float = 0.0
    #: How many images of each batch get a crop (the first ones), and the box sides in patches.
    crop_items: int = 64
    crop_sizes: str = "2,4"
    #: Weight of the word-consistency loss (``word_consistency_loss``): every caption word that is
    #: an attribute value must point where the model's own embedding of that value's zero-shot
    #: prompt ("a red object") points. 0 turns it off.
    word_loss: float = 0.0
    #: The token and crop losses start at this step and their weights then grow linearly to their
    #: value over ``token_warmup`` steps, so they act on embeddings the CLS loss has already made
    #: discriminative (the crop loss's teacher is the model itself: on a model that cannot yet
    #: tell images apart it is met by making every embedding alike; and the steps before cost less).
    token_start: int = 700
    token_warmup: int = 200
    #: Start from this checkpoint directory's weights (a toy CLIP with the same architecture)
    #: instead of a fresh init; "" trains from scratch.
    init_from: str = ""
    #: Scenes of 2-3 objects scored by the dense pointing game at each evaluation.
    eval_pairs: int = 256


def toy_clip_config(cfg: TrainConfig, vocab_size: int):
    """The transformers CLIPConfig of the toy CLIP."""
    from transformers import CLIPConfig

    special = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    text = dict(
        vocab_size=vocab_size,
        hidden_size=cfg.width,
        intermediate_size=4 * cfg.width,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.n_ctx,
        hidden_act="quick_gelu",
        pad_token_id=special["<pad>"],
        bos_token_id=special["<bos>"],
        eos_token_id=special["<eos>"],
    )
    vision = dict(
        hidden_size=cfg.width,
        intermediate_size=4 * cfg.width,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_act="quick_gelu",
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.projection_dim)


def build_tokenizer(n_ctx: int):
    """The toy world's word-level tokenizer: lower-cases, splits on whitespace and punctuation, and
    wraps every text in <bos> ... <eos>.

    Example:
        >>> tok = build_tokenizer(40)
        >>> tok("a red circle")["input_ids"]        # [2, 37, 10, 4, 3]
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(tokenizer_words())}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=n_ctx,
    )


def contrastive_loss(
    image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, truth: torch.Tensor
) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE.

    Args:
        image: [B, D] image embeddings (any norm).
        text: [C, D] caption embeddings, C >= B: the B paired captions first, then any extra
            captions (hard negatives).
        logit_scale: scalar, log of the inverse temperature.
        truth: bool [B, C], truth[i, j] = caption j is true of image i (truth[i, i] is True).

    Each image is scored against all C captions; each caption that is true of some image in the
    batch is scored against the B images.
    """
    image = F.normalize(image.float(), dim=-1)
    text = F.normalize(text.float(), dim=-1)
    logits = logit_scale.exp() * image @ text.T
    return multi_positive_nce(logits, logits, truth)


def multi_positive_nce(image_logits: torch.Tensor, text_logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean of the image->caption loss (each image's row of ``image_logits`` [B, C], every true
    caption a positive) and the caption->image loss (each column of ``text_logits`` [B, C] of a
    caption true of some image, every image it is true of a positive)."""
    target = truth.float()
    loss_i = -(target / target.sum(1, keepdim=True) * F.log_softmax(image_logits, dim=1)).sum(1).mean()
    scored = truth.any(0)
    target_t, logits_t = target.T[scored], text_logits.T[scored]
    loss_t = -(target_t / target_t.sum(1, keepdim=True) * F.log_softmax(logits_t, dim=1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def token_alignment_loss(
    patches: torch.Tensor,
    words: torch.Tensor,
    word_mask: torch.Tensor,
    logit_scale: torch.Tensor,
    truth: torch.Tensor,
) -> torch.Tensor:
    """FILIP-style late-interaction contrastive loss (Yao et al., 2022), label-free.

    Args:
        patches: [B, N, D] patch tokens of B images (CLS excluded), in the joint space.
        words: [C, L, D] token embeddings of C captions, in the joint space.
        word_mask: bool [C, L], True at the captions' real words (no special tokens or padding).
        logit_scale: scalar, log of the inverse temperature.
        truth: bool [B, C] as in ``contrastive_loss``.

    The image-to-caption score is the mean over the image's patches of each patch's best cosine
    with a word of the caption; the caption-to-image score is the mean over the caption's words of
    each word's best cosine with a patch of the image. Both enter a symmetric multi-positive
    InfoNCE, so a word is pulled towards the patch that best explains it in the images it is true
    of, and pushed from every patch of the images it is not: the pull ends up on the patches of
    the object the word names, since only those differ between matching and non-matching scenes.

    Example:
        >>> p, w = torch.randn(4, 16, 8), torch.randn(4, 5, 8)
        >>> loss = token_alignment_loss(p, w, torch.ones(4, 5, dtype=torch.bool), torch.tensor(2.0), torch.eye(4, dtype=torch.bool))
        >>> bool(loss > 0)
        True
    """
    patches = F.normalize(patches.float(), dim=-1)
    words = F.normalize(words.float(), dim=-1)
    sim = torch.einsum("bnd,cld->bcnl", patches, words)  # [B, C, N, L]
    mask = word_mask[None, :, None, :]
    best_word = sim.masked_fill(~mask, -2.0).max(-1).values.mean(-1)  # [B, C]: patches -> words
    n_words = word_mask.sum(1).clamp(min=1)
    best_patch = (sim.max(2).values * word_mask[None]).sum(-1) / n_words  # [B, C]: words -> patches
    scale = logit_scale.exp()
    return multi_positive_nce(scale * best_word, scale * best_patch, truth)


def random_patch_boxes(
    n: int, grid: int, sizes: tuple[int, int], generator: torch.Generator
) -> torch.Tensor:
    """bool [n, grid * grid]: one random square box of patches per image, its side drawn uniformly
    from ``sizes[0]..sizes[1]`` patches, anywhere on the grid.

    Example:
        >>> boxes = random_patch_boxes(4, 8, (2, 4), torch.Generator().manual_seed(0))
        >>> boxes.shape, int(boxes[0].sum()) in (4, 9, 16)
        (torch.Size([4, 64]), True)
    """
    side = torch.randint(sizes[0], sizes[1] + 1, (n,), generator=generator)
    top = (torch.rand(n, generator=generator) * (grid - side + 1)).long()
    left = (torch.rand(n, generator=generator) * (grid - side + 1)).long()
    cells = torch.arange(grid)[None]
    rows = (cells >= top[:, None]) & (cells < (top + side)[:, None])
    cols = (cells >= left[:, None]) & (cells < (left + side)[:, None])
    return (rows[:, :, None] & cols[:, None, :]).reshape(n, grid * grid)


def crop_in_place(pixels: torch.Tensor, boxes: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[n, 3, H, W]: each image with everything outside its box (bool [n, patches]) painted in the
    median colour of its border pixels (a label-free estimate of the background), so the crop keeps
    its place in the frame."""
    n, _, height, width = pixels.shape
    border = torch.cat([pixels[:, :, 0], pixels[:, :, -1], pixels[:, :, :, 0], pixels[:, :, :, -1]], dim=-1)
    fill = border.median(-1).values[:, :, None, None]
    grid = height // patch_size
    inside = boxes.reshape(n, grid, -1).repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)
    return torch.where(inside[:, None], pixels, fill)


def crop_consistency_loss(patches: torch.Tensor, boxes: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """CLIPSelf-style dense distillation (Wu et al., 2024), label-free: the mean joint-space patch
    token of each box of the full image should point where the model's own image embedding of the
    box alone (``crop_in_place``, no gradient) points. A patch that carries the whole scene rather
    than its own region fails this whenever the box leaves some object out.

    Args:
        patches: [n, N, D] patch tokens of the full images.
        boxes: bool [n, N], the patches of each box.
        teacher: [n, D] image embeddings of the crops (detached).

    Example:
        >>> boxes = torch.ones(2, 4, dtype=torch.bool)
        >>> float(crop_consistency_loss(torch.ones(2, 4, 3), boxes, torch.ones(2, 3)))
        0.0
    """
    weights = boxes.float()
    student = (patches.float() * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
    return (1 - F.cosine_similarity(student, teacher.float().detach(), dim=-1)).mean()


def word_prompt_table(tokenizer) -> tuple[torch.Tensor, list[str]]:
    """(index [V], prompts): for each token id, the index of the zero-shot prompt of the attribute
    value it is ("red" -> "a red object"), or -1 for words that are no single-word value of an
    object attribute (articles, position words, backgrounds, special tokens).

    Example:
        >>> index, prompts = word_prompt_table(build_tokenizer(40))
        >>> prompts[int(index[build_tokenizer(40).convert_tokens_to_ids("red")])]
        'a red object'
    """
    from sith_lens.toyworld.attributes import VALUES
    from sith_lens.toyworld.captions import attribute_prompts

    index = torch.full((len(tokenizer),), -1, dtype=torch.long)
    prompts: list[str] = []
    for attribute in ("shape", "color", "size", "texture"):
        for value, prompt in zip(VALUES[attribute], attribute_prompts(attribute)):
            index[tokenizer.convert_tokens_to_ids(value)] = len(prompts)
            prompts.append(prompt)
    return index, prompts


def word_consistency_loss(words: torch.Tensor, word_ids: torch.Tensor, prompt_index: torch.Tensor,
                          teacher: torch.Tensor) -> torch.Tensor:
    """The text side of crop consistency, label-free: each caption word token that names an
    attribute value should point where the model's own pooled embedding of that value's zero-shot
    prompt points (no gradient through the teacher). In a causal text tower a word's token also
    carries the words before it ("blue" in "a red circle and a blue square" has seen "red"); this
    pulls it back to the word's own meaning in the joint space, where the CLS loss has already tied
    it to images of that value, and the crop loss ties patches to the images of their region.

    Args:
        words: [C, L, D] caption token embeddings in the joint space.
        word_ids: [C, L] their token ids.
        prompt_index: long [V], ``word_prompt_table``'s index (-1: no teacher).
        teacher: [P, D] pooled embeddings of the prompts.

    Example:
        >>> ids = torch.tensor([[0, 1]])
        >>> float(word_consistency_loss(torch.ones(1, 2, 3), ids, torch.tensor([-1, 0]), torch.ones(1, 3)))
        0.0
    """
    index = prompt_index[word_ids]
    keep = index >= 0
    if not bool(keep.any()):
        return words.sum() * 0.0
    target = teacher.float().detach()[index[keep]]
    return (1 - F.cosine_similarity(words[keep].float(), target, dim=-1)).mean()


def joint_forward(model, pixels: torch.Tensor, segments: list[dict]) -> tuple[torch.Tensor, ...]:
    """One pass of both towers of a transformers CLIPModel: (image [B, D], text [C, D], patches
    [B, N, D], words [C, L, D], word_ids [C, L]), the tokens through the same final LayerNorm and
    projection as the pooled embeddings (what ``return_type="tokens"`` gives).

    The captions come as ``segments`` (tokenizer outputs, see ``padded_segments``), each padded to
    its own longest caption, so one-word prompts do not pay for the full captions' padding; words
    and ids are padded to the longest segment afterwards (id 0, ``<pad>``)."""
    vision = model.vision_model(pixel_values=pixels).last_hidden_state
    tokens = model.visual_projection(model.vision_model.post_layernorm(vision))
    width = max(seg["input_ids"].shape[1] for seg in segments)
    texts, words, ids = [], [], []
    for seg in segments:
        hidden = model.text_projection(model.text_model(**seg).last_hidden_state)  # final LayerNorm applied
        seg_ids = seg["input_ids"]
        eos = (seg_ids == model.config.text_config.eos_token_id).int().argmax(-1)
        texts.append(hidden[torch.arange(len(seg_ids)), eos])
        pad = width - seg_ids.shape[1]
        words.append(F.pad(hidden, (0, 0, 0, pad)))
        ids.append(F.pad(seg_ids, (0, pad)))
    return tokens[:, 0], torch.cat(texts), tokens[:, 1:], torch.cat(words), torch.cat(ids)


def padded_segments(tokenizer, texts: list[str], short: int = 8) -> list[dict]:
    """Tokenise ``texts`` in contiguous runs of short (at most ``short`` tokens) and long captions,
    each run padded to its own longest: the same outputs as one padded batch, for less work."""
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    runs: list[list[int]] = []
    for i, n in enumerate(lengths):
        if runs and (lengths[runs[-1][0]] <= short) == (n <= short):
            runs[-1].append(i)
        else:
            runs.append([i])
    return [dict(tokenizer([texts[i] for i in run], padding=True, return_tensors="pt")) for run in runs]


def dense_pointing(model, tokenizer, seed: int, n_pairs: int) -> float:
    """Share of caption words in 2-3-object scenes whose most similar patch (joint-space cosine)
    lies on the object they name (``lucid.pointing.dense_pointing_maps`` on the training model)."""
    from sith_lens import load_clip
    from sith_lens.lucid.pointing import dense_pointing_maps, score_heatmap

    words, heats = dense_pointing_maps(load_clip(model, tokenizer=tokenizer), n_pairs=n_pairs, seed=seed)
    return float(score_heatmap(heats["dense_cosine"], words).hit.float().mean())


def _encoders(model, tokenizer, bf16: bool):
    """(encode_image, encode_text) callables for a transformers CLIPModel."""

    def encode_image(pixels):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model.get_image_features(pixel_values=pixels).pooler_output.float()

    def encode_text(texts):
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model.get_text_features(**enc).pooler_output.float()

    return encode_image, encode_text


def pair_batch_layout(batch_size: int, prompt_share: float) -> tuple[int, int]:
    """(n_pairs, n_prompts) of a "pairs" batch: 2 * n_pairs + n_prompts images, which is
    ``batch_size`` or one less (the pairs take what the rounded prompt share leaves, in whole pairs).

    Example:
        >>> pair_batch_layout(256, 0.7)
        (38, 179)
    """
    n_prompts = int(round(batch_size * prompt_share))
    return (batch_size - n_prompts) // 2, n_prompts


def _prepare(world: ToyWorld, step: int, cfg: TrainConfig, tokenizer) -> tuple[ToyBatch, list[dict], torch.Tensor]:
    if cfg.batches == "groups":
        batch = world.group_batch(step, cfg.batch_size, parse_weights(cfg.group_weights))
    elif cfg.batches == "pairs":
        n_pairs, n_prompts = pair_batch_layout(cfg.batch_size, cfg.prompt_share)
        batch = world.contrastive_batch(step, n_pairs, n_prompts, parse_weights(cfg.prompt_weights))
    else:
        batch = world.batch(step, cfg.batch_size)
    captions = list(batch.captions)
    if cfg.negatives:
        rng = np.random.default_rng([cfg.seed, 6, step])
        weights = parse_weights(cfg.negative_weights)
        swapped = (swapped_caption(c, rng, weights) for c in batch.captions for _ in range(cfg.negatives))
        captions += [c for c in swapped if c is not None]
    return batch, padded_segments(tokenizer, [c.text for c in captions]), batch_truth(batch, captions)


def batch_truth(batch: ToyBatch, captions: list[Caption] | None = None) -> torch.Tensor:
    """bool [B, C]: ``truth[i, j]`` = caption j is true of image i (the positives of the contrastive
    loss); ``captions`` defaults to the batch's own (C = B)."""
    captions = batch.captions if captions is None else captions
    mentions = np.stack([c.mentions for c in captions])
    backgrounds = np.array([c.background for c in captions])
    return torch.from_numpy(caption_truth(mentions, backgrounds, batch.values, batch.backgrounds))


@torch.no_grad()
def init_positions_sincos(weight: torch.Tensor, rms: float) -> None:
    """Fill a vision position-embedding table [1 + grid**2, width] in place with a 2-D sine-cosine
    grid with frequencies from 0.3 to 3 radians per patch, centred over positions (the CLS
    row gets zeros), scaled to root-mean-square ``rms``."""
    n, width = weight.shape
    grid = math.isqrt(n - 1)
    if grid * grid != n - 1 or width % 4:
        raise ValueError(f"need [1 + grid**2, width % 4 == 0] position embeddings, got {tuple(weight.shape)}")
    freq = torch.linspace(0.3, 3.0, width // 4, dtype=torch.float64)  # radians per patch
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    parts = [f(c.reshape(-1, 1).double() * freq) for c in (xs, ys) for f in (torch.sin, torch.cos)]
    table = torch.cat(parts, dim=1)
    table = table - table.mean(0)
    table = table / table.pow(2).mean().sqrt() * rms
    weight.zero_()
    weight[1:] = table.to(weight.dtype)


@torch.no_grad()
def init_attention_mimetic(
    attention, generator: torch.Generator, qk: tuple[float, float] = (0.7, 0.7), vo: tuple[float, float] = (0.4, 0.4)
) -> None:
    """Mimetic init of one transformers attention module (q/k/v/out_proj, all [width, width]).

    For each head, the rank-``d_head`` truncation of ``a * Z + b * I`` (Z ~ N(0, 1/width)) is split
    into W_Q^T W_K with ``(a, b) = qk``, and of ``a * Z - b * I`` into W_V^T W_O^T with
    ``(a, b) = vo`` (Trockman & Kolter, "Mimetic Initialization of Self-Attention Layers", 2023).
    Biases are left as they are.

    Example:
        >>> init_attention_mimetic(model.vision_model.encoder.layers[0].self_attn, torch.Generator())
    """
    width, heads = attention.embed_dim, attention.num_heads
    d_head = width // heads
    weights = {name: torch.empty(width, width) for name in ("q", "k", "v", "o")}
    for (first, second), (a, b), sign in ((("q", "k"), qk, 1.0), (("v", "o"), vo, -1.0)):
        for h in range(heads):
            rows = slice(h * d_head, (h + 1) * d_head)
            target = a * torch.randn(width, width, generator=generator) / math.sqrt(width) + sign * b * torch.eye(width)
            u, s, vh = torch.linalg.svd(target)
            left, right = u[:, :d_head] * s[:d_head].sqrt(), vh[:d_head].T * s[:d_head].sqrt()  # target ~ left @ right.T
            weights[first][rows] = left.T  # x @ W_first[rows].T = x @ left
            if second == "k":
                weights[second][rows] = right.T
            else:  # out_proj reads the heads' outputs from its input columns
                weights[second][:, rows] = right
    for name, proj in (("q", attention.q_proj), ("k", attention.k_proj), ("v", attention.v_proj), ("o", attention.out_proj)):
        proj.weight.copy_(weights[name].to(proj.weight.dtype))


def parse_weights(text: str) -> dict[str, float]:
    """"shape=3,color=1" -> {"shape": 3.0, "color": 1.0}."""
    try:
        pairs = [item.split("=") for item in text.split(",") if item.strip()]
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise ValueError(f"group weights must look like 'shape=3,color=1', got {text!r}") from None


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def token_ramp(step: int, cfg: TrainConfig) -> float:
    """Weight factor of the token and crop losses at ``step``: 0 before ``cfg.token_start``, then a
    linear ramp to 1 over ``cfg.token_warmup`` steps.

    Example:
        >>> [token_ramp(s, TrainConfig(token_start=10, token_warmup=4)) for s in (9, 10, 13, 50)]
        [0.0, 0.25, 1.0, 1.0]
    """
    if step < cfg.token_start:
        return 0.0
    return min(1.0, (step - cfg.token_start + 1) / cfg.token_warmup) if cfg.token_warmup else 1.0


def _text_factor(step: int, cfg: TrainConfig) -> float:
    """0 while the text tower is held (``cfg.text_delay``), then a linear warm-up to 1."""
    if step < cfg.text_delay:
        return 0.0
    return min(1.0, (step - cfg.text_delay + 1) / cfg.warmup) if cfg.text_delay else 1.0


def _load_init(model, path: Path):
    """``model`` with the weights of the toy CLIP checkpoint at ``path`` (same architecture)."""
    from transformers import CLIPModel

    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--init-from {path}: no config.json there; give a toy CLIP checkpoint directory")
    start = CLIPModel.from_pretrained(path)
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
            "patch_size", "vocab_size", "max_position_embeddings")

    def shape(config) -> dict:
        return {(tower, k): getattr(getattr(config, tower), k, None) for tower in ("vision_config", "text_config")
                for k in keys} | {"projection_dim": config.projection_dim}

    if shape(start.config) != shape(model.config):
        raise ValueError(f"--init-from {path}: its architecture differs from this run's settings "
                         "(layers, heads, width, image or patch size, vocabulary)")
    return start


def train(cfg: TrainConfig, progress: bool = True):
    """Train a toy CLIP; returns (model, tokenizer, log) where log lists the periodic evaluations.

    Example:
        >>> model, tokenizer, log = train(TrainConfig(steps=20, batch_size=16))
    """
    from transformers import CLIPModel

    if cfg.steps < 1 or cfg.batch_size < 2 or cfg.batch_size % 2:
        raise ValueError(
            f"need steps >= 1 and an even batch_size >= 2, got steps={cfg.steps}, batch_size={cfg.batch_size}"
        )
    if cfg.batches not in BATCH_KINDS:
        raise ValueError(f"batches must be one of {BATCH_KINDS}, got {cfg.batches!r}")
    if cfg.batches == "groups":
        group_probabilities(parse_weights(cfg.group_weights))  # fail now on bad weights
    if not 0 <= cfg.prompt_share < 1:
        raise ValueError(f"prompt_share must be in [0, 1), got {cfg.prompt_share}")
    group_probabilities(parse_weights(cfg.prompt_weights))  # fail now on bad weights
    if cfg.text_delay < 0 or cfg.text_delay >= cfg.steps:
        raise ValueError(f"text_delay must be in 0..steps-1, got {cfg.text_delay} with steps={cfg.steps}")
    if cfg.negatives < 0:
        raise ValueError(f"negatives must be >= 0, got {cfg.negatives}")
    swap_weights(parse_weights(cfg.negative_weights))  # fail now on bad weights
    if min(cfg.token_loss, cfg.crop_loss, cfg.word_loss, cfg.token_start, cfg.token_warmup) < 0 or cfg.token_items < 2 or cfg.crop_items < 1:
        raise ValueError("token_loss, crop_loss, word_loss, token_start and token_warmup must be >= 0, token_items >= 2 "
                         f"and crop_items >= 1; got {cfg.token_loss}, {cfg.crop_loss}, {cfg.word_loss}, {cfg.token_start}, "
                         f"{cfg.token_warmup}, {cfg.token_items}, {cfg.crop_items}")
    if cfg.attention_init not in ATTENTION_INITS:
        raise ValueError(f"attention_init must be one of {ATTENTION_INITS}, got {cfg.attention_init!r}")
    tokenizer = build_tokenizer(cfg.n_ctx)
    torch.manual_seed(cfg.seed)
    model = CLIPModel(toy_clip_config(cfg, len(tokenizer)))
    if cfg.init_from:
        model = _load_init(model, Path(cfg.init_from))
    else:
        if cfg.position_init > 0:
            init_positions_sincos(model.vision_model.embeddings.position_embedding.weight, cfg.position_init)
        if cfg.attention_init == "mimetic":
            generator = torch.Generator().manual_seed(cfg.seed)
            for layer in model.vision_model.encoder.layers:
                init_attention_mimetic(layer.self_attn, generator)
    model.train()
    groups = []
    for text in (False, True):
        for decays in (True, False):
            params = [
                p for n, p in model.named_parameters()
                if n.startswith(("text_model.", "text_projection")) == text
                and (p.ndim >= 2 and "embedding" not in n) == decays
            ]
            groups.append({"params": params, "weight_decay": cfg.weight_decay if decays else 0.0, "text": text})
    # The token loss's own temperature (training only; not part of the saved CLIPModel).
    token_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    groups.append({"params": [token_scale], "weight_decay": 0.0, "text": False})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    crop_sides = tuple(int(x) for x in cfg.crop_sizes.split(","))
    crop_generator = torch.Generator().manual_seed(cfg.seed)
    prompt_index, word_prompts = word_prompt_table(tokenizer)
    prompt_tokens = dict(tokenizer(word_prompts, padding=True, return_tensors="pt"))
    world = ToyWorld(seed=cfg.seed, image_size=cfg.image_size, patch_size=cfg.patch_size)
    val_world = ToyWorld(seed=VALIDATION_SEED, image_size=cfg.image_size, patch_size=cfg.patch_size)
    log = []
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_prepare, world, 0, cfg, tokenizer)
        bar = tqdm(range(cfg.steps), desc="toy CLIP", disable=not progress)
        for step in bar:
            batch, segments, truth = pending.result()
            if step + 1 < cfg.steps:
                pending = pool.submit(_prepare, world, step + 1, cfg, tokenizer)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(step, cfg) * (_text_factor(step, cfg) if group["text"] else 1.0)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                image, text, patches, words, word_ids = joint_forward(model, batch.pixels, segments)
            loss = contrastive_loss(image, text, model.logit_scale, truth)
            loss_parts = {"cls_loss": loss.item()}
            ramp = token_ramp(step, cfg)
            if cfg.token_loss and ramp:
                k = min(cfg.token_items, len(image))
                word_mask = word_ids[:k] >= len(SPECIAL_TOKENS)
                token = token_alignment_loss(patches[:k], words[:k], word_mask, token_scale, truth[:k, :k])
                loss_parts["token_loss"] = token.item()
                loss = loss + cfg.token_loss * ramp * token
            if cfg.crop_loss and ramp:
                k = min(cfg.crop_items, len(image))
                boxes = random_patch_boxes(k, cfg.image_size // cfg.patch_size, crop_sides, crop_generator)
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                    teacher = model.get_image_features(pixel_values=crop_in_place(batch.pixels[:k], boxes, cfg.patch_size)).pooler_output
                crop = crop_consistency_loss(patches[:k], boxes, teacher)
                loss_parts["crop_loss"] = crop.item()
                loss = loss + cfg.crop_loss * ramp * crop
            if cfg.word_loss and ramp:
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                    teacher = model.get_text_features(**prompt_tokens).pooler_output
                word = word_consistency_loss(words, word_ids, prompt_index, teacher)
                loss_parts["word_loss"] = word.item()
                loss = loss + cfg.word_loss * ramp * word
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
                token_scale.clamp_(0, math.log(100))
            bar.set_postfix(loss=f"{loss.item():.3f}", T=f"{model.logit_scale.exp().item():.1f}")
            last = step + 1 == cfg.steps
            if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last:
                model.eval()
                acc = zero_shot_accuracy(*_encoders(model, tokenizer, cfg.bf16), val_world, per_value=20)
                model.train()
                entry = {"step": step + 1, "loss": round(loss.item(), 4), "seconds": round(time.perf_counter() - start, 1)}
                entry.update({name: round(part, 4) for name, part in loss_parts.items()})
                entry.update({k: round(v, 4) for k, v in acc.items()})
                entry["dense_pointing"] = round(dense_pointing(model, tokenizer, VALIDATION_SEED, cfg.eval_pairs), 4)
                log.append(entry)
                tqdm.write(json.dumps(entry))
    model.eval()
    return model, tokenizer, log


@torch.no_grad()
def image_embedding_mean(model, cfg: TrainConfig, n_batches: int = 16, bf16: bool = True) -> torch.Tensor:
    """Mean of the L2-normalised image embeddings of training-distribution scenes: [projection_dim]."""
    world = ToyWorld(seed=cfg.seed, image_size=cfg.image_size, patch_size=cfg.patch_size)
    return world_image_mean(model, world, n_batches, bf16)


@torch.no_grad()
def world_image_mean(model, world: ToyWorld, n_batches: int, bf16: bool) -> torch.Tensor:
    """Mean of the L2-normalised image embeddings of ``n_batches`` x 256 scenes of ``world``
    (batches 10**6 onwards, which training never draws): [projection_dim]."""
    encode_image, _ = _encoders(model, None, bf16)
    embs = [F.normalize(encode_image(world.batch(10**6 + i, 256).pixels), dim=-1) for i in range(n_batches)]
    return torch.cat(embs).mean(0)


def save_checkpoint(model, tokenizer, out: Path, cfg: TrainConfig, record: dict, image_mean: torch.Tensor) -> None:
    """Write the checkpoint directory atomically (a temporary sibling directory, then a rename)."""
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessorPil

    from sith_lens.atomic import atomic_directory

    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        CLIPImageProcessorPil(
            size={"shortest_edge": cfg.image_size},
            crop_size={"height": cfg.image_size, "width": cfg.image_size},
            image_mean=list(PIXEL_MEAN),
            image_std=list(PIXEL_STD),
        ).save_pretrained(tmp)
        save_file({"image_mean": image_mean.contiguous()}, str(tmp / "image_mean.safetensors"))
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(record))
        for f in tmp.iterdir():
            f.chmod(0o644)


def _recipe_extras(cfg: dict) -> str:
    """Model-card lines for the optional recipe settings a run used."""
    lines = []
    if cfg.get("batches") == "pairs" and cfg.get("prompt_share"):
        n_pairs, n_prompts = pair_batch_layout(cfg["batch_size"], cfg["prompt_share"])
        lines.append(f"- Prompt items: {cfg['prompt_share']:.0%} of each batch are one-object scenes captioned by one "
                     f"attribute (\"a star\"), the attribute drawn with weights {cfg['prompt_weights']}; "
                     f"a batch holds {n_prompts} of them and {n_pairs} pairs ({n_prompts + 2 * n_pairs} images).")
    if cfg.get("negatives"):
        lines.append(f"- Hard-negative captions: {cfg['negatives']} per image, one attribute word swapped "
                     f"(weights {cfg['negative_weights']}).")
    if cfg.get("token_loss"):
        lines.append(f"- Token-level loss (weight {cfg['token_loss']}, first {cfg['token_items']} items of each batch): "
                     "FILIP-style late interaction between every patch token and every caption word token, both "
                     "through their tower's final LayerNorm and projection; no masks or word-object labels.")
    if cfg.get("crop_loss"):
        lines.append(f"- Crop consistency (weight {cfg['crop_loss']}, {cfg['crop_items']} images per batch, boxes of "
                     f"{cfg['crop_sizes'].replace(',', '-')} patches a side): the mean patch token of a random box must "
                     "point where the model's own embedding of that box alone (the rest painted in the border colour) "
                     "points (CLIPSelf-style); label-free.")
    if cfg.get("word_loss"):
        lines.append(f"- Word consistency (weight {cfg['word_loss']}): every caption word that is an attribute value "
                     "(\"red\") must point where the model's own embedding of that value's zero-shot prompt "
                     "(\"a red object\") points; no word-object labels.")
    if cfg.get("text_delay"):
        lines.append(f"- The text tower was held at its init for the first {cfg['text_delay']} steps.")
    return "".join(line + "\n" for line in lines)


def _why(cfg: dict) -> str:
    if not (cfg.get("token_loss") or cfg.get("crop_loss") or cfg.get("word_loss")):
        return ""
    return """## Why this recipe

Trained with the CLS loss alone, the earlier toy CLIP read every attribute perfectly but its patches
were not aligned with words: a caption word's most similar patch (joint-space cosine) lay on the
object it names for 0.14 of the words in held-out 2-3-object scenes, below the 0.40 of picking a random
object, because nothing in the loss involved a patch token. Real CLIPs have weak but real dense
alignment (the basis of MaskCLIP-style segmentation). Without it, a method that claims to ground
words in patches (LUCID) cannot be told apart from a word-agnostic saliency map on this model. The
two label-free token-level losses below give the patches that alignment, so such claims can succeed
or fail here. Neither uses masks or says which word names which object.

"""


def _base_record(init_from: str) -> dict | None:
    """What the checkpoint a run continued from says about its own training (None from scratch)."""
    if not init_from:
        return None
    path = Path(init_from) / "training.json"
    if not path.is_file():
        return {"path": init_from}
    base = json.loads(path.read_text())
    return {"path": init_from, **{k: base.get(k) for k in ("command", "train_seconds", "machine", "base")}}


def _stages(record: dict) -> str:
    """Model-card lines on the checkpoints this one continued from, with the total training time."""
    chain, base = [], record.get("base")
    while base:
        chain.append(base)
        base = base.get("base")
    if not chain:
        return ""
    lines = ["This checkpoint continues from another; its stages, first to last:", ""]
    for stage in reversed(chain):
        seconds = stage.get("train_seconds")
        took = f" ({seconds / 60:.1f} min on {stage.get('machine')})" if seconds else ""
        lines.append(f"    {stage.get('command', '(' + stage['path'] + ': no training record)')}{took}")
    lines.append(f"    {record['command']} ({record['train_seconds'] / 60:.1f} min on {record['machine']})")
    total = record["train_seconds"] + sum(s.get("train_seconds") or 0 for s in chain)
    lines += ["", f"Training time of all stages: {total / 60:.1f} min.", ""]
    return "\n".join(lines) + "\n"


def training_curve(log: list[dict]) -> str:
    """The periodic evaluations as a markdown table: step, losses, lowest zero-shot accuracy and
    (when logged) dense pointing."""
    if not log:
        return ""
    losses = [k for k in ("loss", "cls_loss", "token_loss", "crop_loss", "word_loss") if k in log[0]]
    attributes = [k for k in ("shape", "color", "size", "position", "texture", "background") if k in log[0]]
    extra = ["dense_pointing"] if "dense_pointing" in log[0] else []
    header = ["step", *losses, "min zero-shot", *extra]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in log:
        low = min(attributes, key=lambda a: entry[a])
        cells = [str(entry["step"]), *(f"{entry[k]:.3f}" for k in losses), f"{entry[low]:.2f} ({low})",
                 *(f"{entry[k]:.3f}" for k in extra)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def model_card(record: dict) -> str:
    """The checkpoint's README.md, from its training record."""
    cfg = record["config"]
    final = record["final"]
    rows = "\n".join(f"| {k} | {v:.3f} |" for k, v in final["zero_shot"].items())
    low = [f"{k} ({v:.2f})" for k, v in final["zero_shot"].items() if v < QUALITY_TARGET]
    shortfall = (
        f"Below the {QUALITY_TARGET:.2f} target: {', '.join(low)}. Do not read results about "
        "these attributes from this model."
        if low
        else f"Every attribute meets the {QUALITY_TARGET:.2f} target."
    )
    return f"""# sith-lens toy CLIP

A small CLIP (transformers `CLIPModel`) trained from scratch on the sith-lens toy world: 64x64
images of 1-3 objects (shape, colour, size, position, texture) on a coloured background, with
generated captions. It exists so that sith-lens runs, and can be measured against ground truth,
without downloading real weights. Load it with `sith_lens.load_clip("toy")`.

- Vision: {cfg['vision_layers']} layers x {cfg['vision_heads']} heads, width {cfg['width']}, image {cfg['image_size']}px, patch {cfg['patch_size']}px.
- Text: {cfg['text_layers']} layers x {cfg['text_heads']} heads, width {cfg['width']}, context {cfg['n_ctx']}, word-level tokenizer ({record['vocab_size']} words).
- Joint space: {cfg['projection_dim']} dimensions. Parameters: {record['parameters']:,}.

{_why(cfg)}## Training

Command (seeded; the same command rebuilds this checkpoint up to floating-point non-determinism):

    {record['command']}

{_stages(record)}- Steps {cfg['steps']}, batch {cfg['batch_size']}, AdamW lr {cfg['lr']} (warm-up {cfg['warmup']}, cosine to 10%),
  weight decay {cfg['weight_decay']}, bf16 autocast {cfg['bf16']}, seed {cfg['seed']}.
- Loss: symmetric InfoNCE with a learned temperature; every caption true of an image is a positive.
- Batches: {BATCH_DESCRIPTIONS[cfg['batches']].format(**cfg)}.
- Vision position embeddings: {f"2-D sine-cosine init, RMS {cfg['position_init']}" if cfg['position_init'] else "transformers' default init"}.
- Vision attention: {"mimetic init (W_Q W_K^T near +I, W_V W_O near -I; Trockman & Kolter, 2023)" if cfg.get('attention_init') == 'mimetic' else "transformers' default init"}.
{_recipe_extras(cfg)}- Training time: {record['train_seconds'] / 60:.1f} min on {record['machine']}.
- Versions: torch {record['versions']['torch']}, transformers {record['versions']['transformers']}.

## Training curve (validation world, seed {VALIDATION_SEED}: zero-shot on 20 scenes per value; dense pointing on the 2-3-object scenes of {cfg.get('eval_pairs', 256)})

{training_curve(record.get('log', []))}
## Metrics (validation world, seed {VALIDATION_SEED}; not used in training)

Zero-shot accuracy on single-object scenes, one prompt per value ("a red object"):

| attribute | accuracy |
|---|---|
{rows}

{shortfall}

Image -> caption retrieval among {final['retrieval_pairs']} scenes with 2-3 objects and full captions:
R@1 {final['retrieval']['R@1']:.3f}, R@5 {final['retrieval']['R@5']:.3f}.

The held-out benchmark (`python benchmarks/toy_clip_quality.py`) re-measures these on another seed.

## Files

`image_mean.safetensors` holds `image_mean`, the mean L2-normalised image embedding of 4,096
training-distribution scenes, used by SITH's optional image-side centring.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.toy_clip", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    defaults = TrainConfig()
    for field, value in asdict(defaults).items():
        flag = "--" + field.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value)
    parser.add_argument("--retrieval-pairs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(**{f: getattr(args, f) for f in asdict(defaults)})
    start = time.perf_counter()
    model, tokenizer, log = train(cfg, progress=not args.quiet)
    seconds = time.perf_counter() - start
    val = ToyWorld(seed=VALIDATION_SEED, image_size=cfg.image_size, patch_size=cfg.patch_size)
    encoders = _encoders(model, tokenizer, cfg.bf16)
    import transformers

    record = {
        "config": asdict(cfg),
        "command": "python -m recipes.toy_clip " + " ".join(argv if argv is not None else sys.argv[1:]),
        "train_seconds": round(seconds, 1),
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "log": log,
        "base": _base_record(cfg.init_from),
        "final": {
            "zero_shot": zero_shot_accuracy(*encoders, val, per_value=50),
            "retrieval": caption_retrieval(*encoders, val, n_pairs=args.retrieval_pairs),
            "retrieval_pairs": args.retrieval_pairs,
        },
    }
    save_checkpoint(model, tokenizer, Path(args.out), cfg, record, image_embedding_mean(model, cfg, bf16=cfg.bf16))
    print(json.dumps({"out": str(args.out), "train_seconds": record["train_seconds"], **record["final"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
