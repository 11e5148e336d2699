"""SITH edits: rebuilding heads from their singular vectors, concept queries, export."""

from __future__ import annotations

import pytest
import torch

import sith_lens as sl
from sith_lens.concepts import ConceptDictionary
from sith_lens.edit import (
    ablate_heads, amplify, as_multipliers, concept_mass, concept_multipliers, edit_heads, identity_multipliers,
    prepare_for_edit, rebuild_head, suppress, task_multipliers,
)
from sith_lens.sith import explain_heads, head_svd


WORDS = ["red", "blue", "green", "circle", "square", "red circle", "blue square", "dog", "cat", "tree",
         "striped", "dotted"]


@pytest.fixture(scope="module")
def tiny_concepts(tiny):
    g = torch.Generator().manual_seed(3)
    return ConceptDictionary.from_embeddings(WORDS, torch.randn(len(WORDS), tiny.cfg.d_proj, generator=g))


@pytest.fixture(scope="module")
def tiny_result(tiny, tiny_concepts):
    return explain_heads(tiny, tiny_concepts, layers=[1, 2], k=3, progress=False)


def _head_outputs(model, pixels, layer):
    """Per-head writes of one layer, [batch, pos, n_heads, d_model] (z @ W_O, no bias)."""
    _, cache = model.vision.run_with_cache(pixels, names_filter=f"blocks.{layer}.attn.hook_z")
    return torch.einsum("bphe,hed->bphd", cache[f"blocks.{layer}.attn.hook_z"], model.vision.W_O[layer])


# -- the edit -------------------------------------------------------------------------------------------
def test_identity_edit_is_exact_and_leaves_the_input_model_untouched(tiny, tiny_result, pixels):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    with torch.no_grad():
        want = tiny.encode_image(pixels)
        same = edit_heads(tiny, tiny_result, identity_multipliers(tiny_result))
        torch.testing.assert_close(same.encode_image(pixels), want, atol=1e-6, rtol=1e-6)
        # force every head of both layers through the rebuild: multipliers 1 + 1 ulp-ish on one vector
        m = identity_multipliers(tiny_result)
        m[:, :, -1] = 1.0 + 1e-7
        rebuilt = edit_heads(tiny, tiny_result, m)
        assert not torch.equal(rebuilt.vision.W_V[2], same.vision.W_V[2])  # the heads really were rebuilt
        torch.testing.assert_close(rebuilt.encode_image(pixels), want, atol=1e-6, rtol=1e-6)
    for k, v in tiny.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_rebuild_head_reproduces_w_vo(tiny):
    U, S, Vh = head_svd(tiny, [1], dtype=torch.float64)
    W_V, W_O = rebuild_head(U[0, 2], S[0, 2], Vh[0, 2], torch.ones(S.shape[-1]))
    torch.testing.assert_close(W_V @ W_O, U[0, 2] @ torch.diag(S[0, 2]) @ Vh[0, 2], atol=1e-12, rtol=1e-10)
    m = torch.tensor([0.0, -1.0, 2.0] + [1.0] * (S.shape[-1] - 3), dtype=torch.float64)
    W_V, W_O = rebuild_head(U[0, 2], S[0, 2], Vh[0, 2], m)
    torch.testing.assert_close(W_V @ W_O, U[0, 2] @ torch.diag(S[0, 2] * m) @ Vh[0, 2], atol=1e-12, rtol=1e-10)


def test_suppressing_a_vector_removes_exactly_its_direction(tiny, tiny_result, pixels):
    layer, head, index = 1, 2, 0
    edited = edit_heads(tiny, tiny_result, {(layer, head, index): 0.0})
    base = prepare_for_edit(tiny)  # the same function in the edited (folded) form
    v = head_svd(tiny, [layer])[2][0, head, index]  # the suppressed written direction, [d_model]
    with torch.no_grad():
        before, after = _head_outputs(base, pixels, layer), _head_outputs(edited, pixels, layer)
    removed = before[:, :, head] - after[:, :, head]
    assert (before[:, :, head] @ v).abs().max() > 1e-2  # the head did write along v
    assert (after[:, :, head] @ v).abs().max() < 1e-5  # ... and no longer does
    # what was removed is exactly the component along v; nothing else changed
    torch.testing.assert_close(removed, (before[:, :, head] @ v)[..., None] * v, atol=1e-5, rtol=1e-5)
    others = [h for h in range(tiny.vision.cfg.n_heads) if h != head]
    torch.testing.assert_close(after[:, :, others], before[:, :, others], atol=1e-6, rtol=1e-6)


def test_flip_and_amplify_scale_the_written_component(tiny, tiny_result, pixels):
    layer, head = 2, 1
    v = head_svd(tiny, [layer])[2][0, head, 0]
    base = prepare_for_edit(tiny)
    with torch.no_grad():
        before = _head_outputs(base, pixels, layer)[:, :, head] @ v
        for factor in (-1.0, 3.0):
            after = _head_outputs(edit_heads(tiny, tiny_result, {(layer, head, 0): factor}), pixels, layer)[:, :, head] @ v
            torch.testing.assert_close(after, factor * before, atol=1e-5, rtol=1e-4)


def test_multipliers_of_the_wrong_shape_or_key_are_rejected(tiny, tiny_result):
    with pytest.raises(ValueError, match=r"multipliers must have shape \(2, 4, 16\)"):
        edit_heads(tiny, tiny_result, torch.ones(2, 4, 15))
    with pytest.raises(ValueError, match="layer 0 was not explained"):
        edit_heads(tiny, tiny_result, {(0, 1): 0.0})
    with pytest.raises(ValueError, match="head 9 is out of range"):
        as_multipliers(tiny_result, {(1, 9): 0.0})
    with pytest.raises(ValueError, match="scalar or 16 values"):
        as_multipliers(tiny_result, {(1, 1): [0.0, 1.0]})
    with pytest.raises(ValueError, match="NaN or infinite values; pass finite multipliers"):
        edit_heads(tiny, tiny_result, {(1, 1, 0): float("nan")})
    for huge in (1e30, -1e3):  # 1e30 used to write a checkpoint whose embeddings were not finite
        with pytest.raises(ValueError, match=r"outside \[-100, 100\].*use a factor within that range"):
            edit_heads(tiny, tiny_result, {(1, 1, 0): huge})
    with pytest.raises(TypeError, match="tensor shaped like result.singular_values or a dict"):
        edit_heads(tiny, tiny_result, [1.0, 2.0])


def test_a_result_from_another_model_is_rejected(tiny, tiny_result):
    other = sl.load_clip("random:tiny")
    with pytest.raises(ValueError, match="describes 3 layers x 4 heads but the model has 2 x 4"):
        edit_heads(other, tiny_result, identity_multipliers(tiny_result))
    edited = edit_heads(tiny, tiny_result, {(1, 0, 0): 0.0})
    with pytest.raises(ValueError, match="not computed on this model"):
        edit_heads(edited, tiny_result, {(1, 0, 1): 0.0})


# -- concept queries ------------------------------------------------------------------------------------
def test_concept_mass_counts_the_query_share_of_each_code(tiny_result):
    r = tiny_result
    p, h, i = 0, 0, 0
    j = int(r.indices[p, h, i, 0])
    concept = r.concepts[j]
    mass = concept_mass(r, [concept], match="exact")
    coefs = r.coefs[p, h, i].abs()
    want = float(coefs[r.indices[p, h, i] == j].sum() / coefs.sum())
    assert mass[p, h, i].item() == pytest.approx(want)
    assert ((mass >= 0) & (mass <= 1 + 1e-6)).all()
    # "word" matching adds the phrases that contain the word
    if "red" in r.concepts and "red circle" in r.concepts:
        assert (concept_mass(r, ["red"]) >= concept_mass(r, ["red"], match="exact")).all()


def test_suppress_and_amplify_edit_the_selected_vectors_only(tiny, tiny_result, pixels):
    concept = tiny_result.concepts[int(tiny_result.indices[1, 0, 0, 0])]
    m = concept_multipliers(tiny_result, [concept], 0.0, threshold=0.3)
    selected = concept_mass(tiny_result, [concept]) >= 0.3
    assert selected.any() and torch.equal(m == 0, selected) and (m[~selected] == 1).all()
    only_last = concept_multipliers(tiny_result, [concept], 0.0, threshold=0.3, layers=[-1])
    assert (only_last[0] == 1).all() and torch.equal(only_last[1] == 0, selected[1])
    with torch.no_grad():
        want = edit_heads(tiny, tiny_result, m).encode_image(pixels)
        torch.testing.assert_close(suppress(tiny, tiny_result, [concept], threshold=0.3).encode_image(pixels), want)
        amp = amplify(tiny, tiny_result, concept, factor=2.0, threshold=0.3).encode_image(pixels)
        assert not torch.allclose(amp, want)


def test_an_unknown_concept_is_rejected_with_suggestions(tiny, tiny_result):
    with pytest.raises(ValueError, match=r"concept 'circel' appears in no explanation.*did you mean 'circle'"):
        suppress(tiny, tiny_result, ["circel"])
    with pytest.raises(ValueError, match="no query concept"):
        suppress(tiny, tiny_result, [" "])
    with pytest.raises(ValueError, match="threshold"):
        suppress(tiny, tiny_result, tiny_result.concepts[:1], threshold=0.0)


def test_task_multipliers_follow_the_spec_rule(tiny_result, tiny_concepts):
    classes = tiny_concepts.embeddings[[WORDS.index("circle"), WORDS.index("square")]]
    m = task_multipliers(tiny_result, tiny_concepts, classes, ["circle", "square"])
    assert m.shape == tiny_result.singular_values.shape
    assert (m >= 0.8 - 1e-6).all() and (m > 1).any()
    capped = task_multipliers(tiny_result, tiny_concepts, classes, ["circle", "square"], cap=1.05, layers=[2])
    assert (capped[0] == 1).all() and (capped[1] <= 1.05 + 1e-6).all()


def test_whole_head_ablation_removes_the_head(tiny, pixels):
    ablated = ablate_heads(tiny, [(1, 2)])
    with torch.no_grad():
        assert _head_outputs(ablated, pixels, 1)[:, :, 2].abs().max() == 0
        mean_ablated = ablate_heads(tiny, [(-2, 2)], images=pixels)
        # mean-ablation keeps the head's average write as a constant: the change has zero mean over the images
        base = prepare_for_edit(tiny)
        z_mean = _head_outputs(base, pixels, 1)[:, :, 2].mean((0, 1))
        torch.testing.assert_close(mean_ablated.vision.blocks[1].attn.b_O - base.vision.blocks[1].attn.b_O, z_mean,
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="head 7 is out of range"):
        ablate_heads(tiny, [(1, 7)])


# -- export -----------------------------------------------------------------------------------------------
def test_exported_edit_reloads_with_the_same_outputs(tiny, tiny_result, pixels, token_batch, tmp_path):
    from transformers import CLIPModel

    edited = suppress(tiny, tiny_result, tiny_result.concepts[:2], threshold=0.2)
    out = edited.save_pretrained(tmp_path / "edited")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    ids, mask = token_batch
    with torch.no_grad():
        want_img, want_txt = edited.encode_image(pixels), edited.encode_text(ids)
        hf = CLIPModel.from_pretrained(out).eval()
        torch.testing.assert_close(hf.get_image_features(pixel_values=pixels).pooler_output, want_img, atol=1e-5, rtol=1e-5)
        reloaded = sl.load_clip(out)
        torch.testing.assert_close(reloaded.encode_image(pixels), want_img, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(reloaded.encode_text(ids), want_txt, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(reloaded.encode_image(pixels), tiny.encode_image(pixels), atol=1e-3)


def test_export_of_the_toy_keeps_tokenizer_processor_and_image_mean(tmp_path):
    toy = sl.load_clip("toy")
    toy.save_pretrained(tmp_path / "toy")
    again = sl.load_clip(tmp_path / "toy")
    assert again.tokenizer is not None and again.image_mean is not None
    torch.testing.assert_close(again.image_mean, toy.image_mean)
    with torch.no_grad():
        torch.testing.assert_close(again.encode_text(["a red circle"]), toy.encode_text(["a red circle"]))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        toy.save_pretrained(tmp_path / "toy", overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        toy.save_pretrained(tmp_path / "file")


def test_boost_classes_encodes_the_names_and_applies_task_multipliers(toy, pixels):
    from sith_lens.edit import boost_classes, class_multipliers

    concepts = sl.ConceptDictionary.from_vocab(toy, "toy", progress=False)
    result = explain_heads(toy, concepts, layers=[-1], progress=False)
    names = ["solid", "striped", "dotted"]
    m = class_multipliers(toy, result, concepts, names)
    with torch.no_grad():
        emb = toy.encode_text(names, normalize=True)
    torch.testing.assert_close(m, task_multipliers(result, concepts, emb, names))
    toy_pixels = sl.ToyWorld(seed=2).batch(0, 4).pixels
    with torch.no_grad():
        torch.testing.assert_close(boost_classes(toy, result, concepts, names).encode_image(toy_pixels),
                                   edit_heads(toy, result, m).encode_image(toy_pixels))
    with pytest.raises(ValueError, match="at least two class names"):
        class_multipliers(toy, result, concepts, ["solid"])
