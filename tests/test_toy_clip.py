"""The toy CLIP: the training script, the shipped checkpoint and the "toy" vocabulary."""

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import sith_lens as sl
from sith_lens.toyworld import ATTRIBUTES, ToyWorld
from recipes.toy_clip import main as train_main
from sith_lens.toyworld.vocab import DISTRACTORS
from sith_lens.vocabularies import load_vocabulary


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy CLIP trained for 20 steps by the real training script: (checkpoint dir, summary line)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("toy") / "ckpt"
    args = ["--out", str(out), "--steps", "20", "--batch-size", "8", "--eval-every", "10", "--eval-pairs", "16"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert train_main([*args, "--retrieval-pairs", "16", "--quiet"]) == 0
    return out, json.loads(buf.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def toy(trained):
    return sl.load_clip(str(trained[0]))


def test_training_script_runs_and_saves_a_loadable_checkpoint(trained, toy):
    out, summary = trained
    assert set(summary["zero_shot"]) == {*ATTRIBUTES, "background"}
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "README.md"} <= files
    assert {"image_mean.safetensors", "training.json"} <= files
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    record = json.loads((out / "training.json").read_text())
    assert [e["step"] for e in record["log"]] == [10, 20]
    assert record["command"].startswith("python -m recipes.toy_clip --out")
    assert "20" in (out / "README.md").read_text()
    assert toy.vision.cfg.n_layers == 6 and toy.vision.cfg.n_heads == 8
    emb = toy.encode_text(["a red striped circle at the top left"])
    assert emb.shape == (1, 128) and torch.isfinite(emb).all()


def test_pair_batch_layout_fills_the_batch_and_the_card_states_it(trained):
    from recipes.toy_clip import pair_batch_layout

    for batch_size in (16, 255, 256):
        for share in (0.0, 0.3, 0.5, 0.7):
            n_pairs, n_prompts = pair_batch_layout(batch_size, share)
            assert batch_size - 1 <= 2 * n_pairs + n_prompts <= batch_size
            assert abs(n_prompts - share * batch_size) <= 0.5
    out, _ = trained
    record = json.loads((out / "training.json").read_text())
    n_pairs, n_prompts = pair_batch_layout(record["config"]["batch_size"], record["config"]["prompt_share"])
    assert f"a batch holds {n_prompts} of them and {n_pairs} pairs" in (out / "README.md").read_text()


def test_checkpoint_loads_offline_through_plain_transformers(trained, toy, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer, CLIPModel

    path = trained[0]
    assert sum(f.stat().st_size for f in path.iterdir()) < 20e6
    hf = CLIPModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    text = "a large red striped circle at the top left"
    enc = tok([text], return_tensors="pt")
    batch = ToyWorld(seed=3).batch(0, 2)
    with torch.no_grad():
        ref_text = hf.get_text_features(**enc).pooler_output
        ref_image = hf.get_image_features(pixel_values=batch.pixels).pooler_output
    assert torch.allclose(toy.encode_text([text]), ref_text, atol=1e-5, rtol=1e-4)
    assert torch.allclose(toy.encode_image(batch.pixels), ref_image, atol=1e-5, rtol=1e-4)


def test_toy_preprocessing_matches_the_world_pixels(toy):
    batch = ToyWorld(seed=3).batch(0, 2)
    pixels = toy.preprocess([Image.fromarray(im) for im in batch.images])
    assert torch.allclose(pixels, batch.pixels, atol=1e-6)


def test_toy_vocabulary_has_attributes_phrases_and_distractors(toy):
    concepts = load_vocabulary("toy")
    assert {"red", "circle", "striped", "large", "top left", "striped circle", "red square"} <= set(concepts)
    assert set(DISTRACTORS) <= set(concepts) and len(set(concepts)) == len(concepts)
    unk = toy.tokenizer.convert_tokens_to_ids("<unk>")
    ids = toy.tokenize(concepts).input_ids
    assert not (ids == unk).any()  # every concept word, distractors included, has its own token


def test_vocabulary_sources_and_errors(tmp_path, caplog):
    f = tmp_path / "concepts.txt"
    f.write_text("red\n\nblue\nred\n  green  \n")
    with caplog.at_level(logging.WARNING):
        assert load_vocabulary(f) == ["red", "blue", "green"]
    assert "dropped 1 blank and 1 duplicate" in caplog.text
    f.write_bytes("red\nblue\n".encode("utf-8-sig"))  # Windows editors save a byte-order mark
    assert load_vocabulary(f) == ["red", "blue"]
    assert load_vocabulary(["a dog", "a cat"]) == ["a dog", "a cat"]
    with pytest.raises(ValueError, match="unknown vocabulary 'nope'"):
        load_vocabulary("nope")
    with pytest.raises(ValueError, match="vocabulary is empty"):
        load_vocabulary(["", "  "])
    with pytest.raises(TypeError, match="entry 1 is int"):
        load_vocabulary(["red", 3])
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_vocabulary(bad)


def test_missing_toy_checkpoint_names_the_rebuild_command(tmp_path, monkeypatch):
    import importlib.resources

    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path)
    with pytest.raises(sl.ModelNotAvailableError, match="make toy-clip-base toy-clip"):
        sl.load_clip("toy")


def test_cli_toyworld_writes_a_contact_sheet(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "sheet.png"
    proc = subprocess.run(
        [sys.executable, "-m", "sith_lens.cli", "toyworld", "--n", "6", "--columns", "3", "--out", str(out)],
        capture_output=True, text=True, check=True,
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 7 and lines[0].startswith("[row 0, col 0] ") and lines[-1] == f"wrote {out}"
    assert lines[1:-1] == [f"[row {i // 3}, col {i % 3}] {t}" for i, t in enumerate(ToyWorld(seed=0).batch(0, 6).texts)][1:]
    sheet = np.asarray(Image.open(out))
    assert sheet.shape == (2 * 192 + 2, 3 * 192 + 4, 3) and sheet.std() > 10
    bad = subprocess.run(
        [sys.executable, "-m", "sith_lens.cli", "toyworld", "--out", str(tmp_path / "x.jpg")],
        capture_output=True, text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("sith-lens: error: argument --out: must name a .png file")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_training_settings_are_checked_before_training():
    from recipes.toy_clip import TrainConfig, parse_weights, train

    with pytest.raises(ValueError, match=r"batches must be one of \('groups', 'pairs', 'scenes'\)"):
        train(TrainConfig(steps=1, batch_size=4, batches="triples"))
    with pytest.raises(ValueError, match="group weights must look like 'shape=3,color=1'"):
        parse_weights("shape:3")
    with pytest.raises(ValueError, match="weights must map attributes"):
        train(TrainConfig(steps=1, batch_size=4, batches="groups", group_weights="colour=1"))
    assert parse_weights("shape=3, position=0.5") == {"shape": 3.0, "position": 0.5}


def test_group_batches_train_end_to_end():
    from recipes.toy_clip import TrainConfig, train

    model, tokenizer, log = train(TrainConfig(steps=2, batch_size=8, batches="groups", eval_every=0), progress=False)
    assert [e["step"] for e in log] == [2] and np.isfinite(log[0]["loss"])


def test_sincos_position_init_is_a_smooth_centred_grid():
    from recipes.toy_clip import init_positions_sincos

    weight = torch.randn(65, 128)
    init_positions_sincos(weight, rms=0.1)
    grid = weight[1:]
    assert torch.equal(weight[0], torch.zeros(128))  # the CLS row
    assert grid.pow(2).mean().sqrt().item() == pytest.approx(0.1, rel=1e-5)
    assert grid.mean(0).abs().max().item() < 1e-6
    sims = F.cosine_similarity(grid[:, None], grid[None], dim=-1)
    assert sims.fill_diagonal_(0).max() < 0.99  # every patch position is distinguishable
    # patch (3, 3) is closer to its neighbour (3, 4) than to the far corner (7, 7)
    assert sims[3 * 8 + 3, 3 * 8 + 4] > sims[3 * 8 + 3, 7 * 8 + 7]
    with pytest.raises(ValueError, match="grid"):
        init_positions_sincos(torch.zeros(51, 128), rms=0.1)


#: Held-out zero-shot accuracy the shipped checkpoint must keep (20 scenes per value, so a few
#: points of noise). See the README's toy CLIP quality table for the figures at 100 scenes per value
#: on seeds 777, 6002 and 9001 (every attribute >= 0.996): 0.90 or more is asserted.
SHIPPED_MINIMUM_ACCURACY = {"color": 0.95, "background": 0.95, "position": 0.9, "size": 0.9, "texture": 0.9, "shape": 0.9}


def test_shipped_toy_clip_loads_offline_and_has_learned_the_world(monkeypatch):
    """The checkpoint in sith_lens/assets/toy_clip: offline, under 20 MB, identical through plain
    transformers, and well above chance on held-out scenes (seed 4242, never used in training)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import CLIPModel

    from sith_lens.adapters.loading import toy_checkpoint_dir
    from sith_lens.toyworld.evaluate import zero_shot_accuracy

    path = toy_checkpoint_dir()
    assert sum(f.stat().st_size for f in path.iterdir()) < 20e6
    model = sl.load_clip("toy")
    world = ToyWorld(seed=4242)
    pixels = world.batch(0, 4).pixels
    with torch.no_grad():
        ours = model.encode_image(pixels)
        theirs = CLIPModel.from_pretrained(path).eval().get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        acc = zero_shot_accuracy(model.encode_image, model.encode_text, world, per_value=20)
    record = json.loads((path / "training.json").read_text())
    stages = [record, *([record["base"]] if "base" in record else [])]
    assert all(stage["train_seconds"] <= 3600 for stage in stages), [s["train_seconds"] for s in stages]
    for attribute, minimum in SHIPPED_MINIMUM_ACCURACY.items():
        assert acc[attribute] >= minimum, (attribute, acc[attribute])


#: The shipped model's own dense pointing (each caption word's cosine with every patch, MaskCLIP-
#: style) on 2-3-object scenes: 0.502 [0.490, 0.516] on 3 x 512 pairs of seeds 777, 6002, 9001
#: (README; word-agnostic map 0.330), 0.538 [0.507, 0.571] on this test's 192 scenes of seed 4242,
#: where checkpoint 3 (stage 1) scores 0.143 with margin -0.136. Asserted well below the measured.
SHIPPED_MINIMUM_DENSE_POINTING = 0.42


def test_shipped_toy_clip_points_with_its_patches_better_than_a_word_agnostic_map():
    """Issue 29's first claim: the shipped model's patches align with the words that name them,
    above chance (a random object of the scene) and above the best map that ignores the word."""
    from sith_lens.lucid.pointing import dense_pointing_maps, pointing_table

    words, heats = dense_pointing_maps(sl.load_clip("toy"), n_pairs=192, seed=4242)
    evidence = pointing_table(words, heats, "dense_cosine", ["background_distance"]).evidence
    assert evidence.value.value >= SHIPPED_MINIMUM_DENSE_POINTING, evidence.value
    assert evidence.value.low > evidence.chance, (evidence.value, evidence.chance)
    assert evidence.margin_against == "background_distance" and evidence.margin.low > 0.05, evidence.margin


def test_mimetic_attention_init_makes_heads_attend_to_similar_tokens():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from recipes.toy_clip import init_attention_mimetic

    model = CLIPVisionModel(CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                             num_attention_heads=4, image_size=16, patch_size=8))
    attention = getattr(model, "vision_model", model).encoder.layers[0].self_attn
    init_attention_mimetic(attention, torch.Generator().manual_seed(0))
    d_head = 16
    with torch.no_grad():
        for h in range(4):
            rows = slice(h * d_head, (h + 1) * d_head)
            qk = attention.q_proj.weight[rows].T @ attention.k_proj.weight[rows]  # x @ qk @ y.T = q . k
            vo = attention.v_proj.weight[rows].T @ attention.out_proj.weight[:, rows].T
            # a random rank-16 map has a diagonal near 0; the mimetic one leans on +I (QK) and -I (VO)
            assert qk.diagonal().mean() > 0.1 and vo.diagonal().mean() < -0.05
            assert torch.linalg.matrix_rank(qk) == d_head


def test_contrastive_loss_scores_images_against_extra_negative_captions():
    from recipes.toy_clip import contrastive_loss

    image = torch.eye(3, 4)
    text = torch.cat([torch.eye(3, 4), torch.tensor([[1.0, 0, 0, 0.1]])])  # a negative close to image 0
    scale = torch.tensor(2.0)
    truth = torch.zeros(3, 4, dtype=torch.bool)
    truth[range(3), range(3)] = True
    with_negative = contrastive_loss(image, text, scale, truth)
    without = contrastive_loss(image, text[:3], scale, truth[:, :3])
    assert with_negative > without  # the hard negative competes with image 0's caption
    truth[1, 3] = True  # a "negative" that is true of image 1 counts as its positive
    assert contrastive_loss(image, text, scale, truth) != with_negative


def test_hard_negative_training_runs_and_checks_its_settings():
    from recipes.toy_clip import TrainConfig, train

    model, tokenizer, log = train(TrainConfig(steps=2, batch_size=8, negatives=2, attention_init="mimetic",
                                              eval_every=0), progress=False)
    assert np.isfinite(log[0]["loss"])
    with pytest.raises(ValueError, match="negatives must be >= 0"):
        train(TrainConfig(steps=1, batch_size=4, negatives=-1))
    with pytest.raises(ValueError, match="swap weights must map attributes"):
        train(TrainConfig(steps=1, batch_size=4, negatives=1, negative_weights="position=1"))
    with pytest.raises(ValueError, match=r"prompt_share must be in \[0, 1\)"):
        train(TrainConfig(steps=1, batch_size=4, prompt_share=1.0))
    with pytest.raises(ValueError, match="weights must map attributes"):
        train(TrainConfig(steps=1, batch_size=4, prompt_weights="colour=1"))
    with pytest.raises(ValueError, match="attention_init must be one of"):
        train(TrainConfig(steps=1, batch_size=4, attention_init="xavier"))


def test_text_delay_holds_the_text_tower_then_warms_it_up():
    from recipes.toy_clip import TrainConfig, _text_factor, train

    cfg = TrainConfig(steps=500, warmup=100, text_delay=300)
    assert [_text_factor(s, cfg) for s in (0, 299, 300, 349, 399, 450)] == [0.0, 0.0, 0.01, 0.5, 1.0, 1.0]
    assert _text_factor(0, TrainConfig(text_delay=0)) == 1.0
    with pytest.raises(ValueError, match="text_delay must be in 0..steps-1"):
        train(TrainConfig(steps=2, batch_size=4, text_delay=2))


def test_token_alignment_loss_prefers_captions_whose_words_match_some_patch():
    """A planted world: image i holds word i's direction in one patch and noise elsewhere."""
    from recipes.toy_clip import token_alignment_loss

    g = torch.Generator().manual_seed(0)
    words = torch.nn.functional.normalize(torch.randn(4, 3, 16, generator=g), dim=-1)
    patches = 0.1 * torch.randn(4, 9, 16, generator=g)
    patches[:, 4] = words[:, 1]  # the caption's middle word sits in the centre patch
    mask = torch.tensor([[False, True, False]] * 4)
    truth = torch.eye(4, dtype=torch.bool)
    right = token_alignment_loss(patches, words, mask, torch.tensor(3.0), truth)
    wrong = token_alignment_loss(patches, words.roll(1, 0), mask, torch.tensor(3.0), truth)
    assert right < 0.5 * wrong
    # padding words do not count: filling them with a perfect match changes nothing
    padded = words.clone()
    padded[:, 0] = patches[:, 0]
    assert torch.isclose(token_alignment_loss(patches, padded, mask, torch.tensor(3.0), truth), right)


def test_crops_keep_the_box_and_paint_the_rest_with_the_border_colour():
    from recipes.toy_clip import crop_consistency_loss, crop_in_place, random_patch_boxes

    pixels = ToyWorld(seed=3).batch(0, 6).pixels
    boxes = random_patch_boxes(6, 8, (2, 4), torch.Generator().manual_seed(1))
    sides = boxes.sum(1).float().sqrt()
    assert torch.equal(sides, sides.round()) and sides.min() >= 2 and sides.max() <= 4
    crops = crop_in_place(pixels, boxes, 8)
    inside = boxes.reshape(6, 8, 8).repeat_interleave(8, 1).repeat_interleave(8, 2)[:, None].expand_as(pixels)
    assert torch.equal(crops[inside], pixels[inside])
    border_median = pixels[:, :, 0].median(-1).values  # the top row is background in the toy world
    outside = crops.masked_fill(inside, float("nan"))
    assert torch.allclose(outside.nanmean((2, 3)), border_median, atol=0.05)
    # the distillation loss is 0 exactly when the box's mean token points where the teacher does
    tokens = torch.randn(6, 64, 5)
    mean = (tokens * boxes[..., None]).sum(1) / boxes.sum(1, keepdim=True)
    assert float(crop_consistency_loss(tokens, boxes, 2 * mean)) == pytest.approx(0, abs=1e-6)
    assert float(crop_consistency_loss(tokens, boxes, -mean)) == pytest.approx(2, abs=1e-5)


def test_word_consistency_pulls_only_attribute_words_towards_their_prompt():
    from recipes.toy_clip import build_tokenizer, word_consistency_loss, word_prompt_table

    tok = build_tokenizer(40)
    index, prompts = word_prompt_table(tok)
    ids = torch.tensor(tok(["a red circle at the top left"])["input_ids"])
    named = [prompts[i] for i in index[ids[0]].tolist() if i >= 0]
    assert named == ["a red object", "a circle"]  # articles, position words and specials have none
    teacher = torch.randn(len(prompts), 16)
    words = torch.randn(1, ids.shape[1], 16)
    red, circle = 2, 3  # <bos> a red circle ...
    words[0, red], words[0, circle] = teacher[index[ids[0, red]]], -teacher[index[ids[0, circle]]]
    # one word on its teacher (0), one opposite (2); the others do not count
    assert float(word_consistency_loss(words, ids, index, teacher)) == pytest.approx(1.0, abs=1e-5)
    assert float(word_consistency_loss(words, torch.zeros_like(ids), index, teacher)) == 0.0


def test_token_and_crop_losses_train_end_to_end_and_are_logged():
    from recipes.toy_clip import TrainConfig, train

    cfg = TrainConfig(steps=2, batch_size=8, eval_every=2, eval_pairs=8, token_loss=1.0, token_items=6,
                      crop_loss=1.0, crop_items=4, word_loss=1.0, token_start=0, token_warmup=0, bf16=False)
    model, _, log = train(cfg, progress=False)
    entry = log[-1]
    assert {"cls_loss", "token_loss", "crop_loss", "word_loss", "dense_pointing"} <= set(entry)
    parts = entry["cls_loss"] + entry["token_loss"] + entry["crop_loss"] + entry["word_loss"]
    assert entry["loss"] == pytest.approx(parts, abs=1e-3)
    assert 0 <= entry["dense_pointing"] <= 1


def test_joint_forward_on_padded_segments_matches_plain_transformers():
    """Short and long captions padded separately give the pooled embeddings transformers gives on one
    padded batch, and word tokens that are the projected last hidden states."""
    from transformers import CLIPModel

    from recipes.toy_clip import TrainConfig, build_tokenizer, joint_forward, padded_segments, toy_clip_config

    cfg = TrainConfig(vision_layers=1, text_layers=1, width=32, projection_dim=16)
    tokenizer = build_tokenizer(cfg.n_ctx)
    torch.manual_seed(0)
    model = CLIPModel(toy_clip_config(cfg, len(tokenizer))).eval()
    texts = ["a red star and a blue circle at the top left", "a star", "a striped object", "a large cross on a black background"]
    segments = padded_segments(tokenizer, texts)
    assert [len(s["input_ids"]) for s in segments] == [1, 2, 1]
    pixels = ToyWorld(seed=0).batch(0, 3).pixels
    with torch.no_grad():
        image, text, patches, words, ids = joint_forward(model, pixels, segments)
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        torch.testing.assert_close(image, model.get_image_features(pixel_values=pixels).pooler_output)
        torch.testing.assert_close(text, model.get_text_features(**enc).pooler_output)
        torch.testing.assert_close(ids, enc["input_ids"])
        hidden = model.text_projection(model.text_model(**enc).last_hidden_state)
        real = enc["attention_mask"].bool()
        torch.testing.assert_close(words[real], hidden[real], rtol=1e-5, atol=1e-5)
    assert patches.shape == (3, 64, 16)


def test_init_from_continues_a_checkpoint_and_refuses_another_architecture(trained, tmp_path):
    from transformers import CLIPModel

    from recipes.toy_clip import TrainConfig, train

    out, _ = trained
    model, _, _ = train(TrainConfig(steps=1, batch_size=8, lr=1e-12, warmup=1, eval_every=0, init_from=str(out)), progress=False)
    start = CLIPModel.from_pretrained(out)
    torch.testing.assert_close(model.visual_projection.weight, start.visual_projection.weight, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="architecture differs"):
        train(TrainConfig(steps=1, batch_size=8, width=64, eval_every=0, init_from=str(out)), progress=False)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        train(TrainConfig(steps=1, batch_size=8, eval_every=0, init_from=str(tmp_path)), progress=False)


def test_a_continued_checkpoint_records_every_stage_and_the_total_time(trained, tmp_path):
    import contextlib
    import io

    out, _ = trained
    child = tmp_path / "child"
    with contextlib.redirect_stdout(io.StringIO()):
        assert train_main(["--out", str(child), "--init-from", str(out), "--steps", "1", "--batch-size", "8",
                           "--eval-every", "0", "--eval-pairs", "8", "--retrieval-pairs", "8", "--quiet"]) == 0
    base = json.loads((out / "training.json").read_text())
    record = json.loads((child / "training.json").read_text())
    assert record["base"]["command"] == base["command"] and record["base"]["train_seconds"] == base["train_seconds"]
    card = (child / "README.md").read_text()
    assert base["command"] in card and record["command"] in card
    total = (base["train_seconds"] + record["train_seconds"]) / 60
    assert f"Training time of all stages: {total:.1f} min." in card
