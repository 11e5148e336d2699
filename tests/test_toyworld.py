"""The toy world generator: determinism, masks, patch labels and caption ground truth."""

import numpy as np
import torch
import pytest

from sith_lens.toyworld import (
    ATTRIBUTES,
    BACKGROUND,
    VALUES,
    Scene,
    ToyWorld,
    attribute_prompts,
    caption_truth,
    make_caption,
    patch_coverage,
    render_scene,
    sample_scene,
)
from sith_lens.toyworld.attributes import COLOR_RGB, MAX_OBJECTS, TEXTURE_SHADE
from recipes.toy_clip import build_tokenizer
from sith_lens.toyworld.vocab import caption_words, tokenizer_words


@pytest.fixture(scope="module")
def batch():
    return ToyWorld(seed=7).batch(3, batch_size=48)


def test_same_seed_same_data_and_new_seed_new_data():
    a, b = ToyWorld(seed=5).batch(2, 16), ToyWorld(seed=5).batch(2, 16)
    assert np.array_equal(a.images, b.images) and a.texts == b.texts
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.patch_labels, b.patch_labels)
    c = ToyWorld(seed=6).batch(2, 16)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.images, ToyWorld(seed=5).batch(3, 16).images)


def test_scene_contents_follow_the_spec(batch):
    for scene in batch.scenes:
        assert 1 <= len(scene.objects) <= MAX_OBJECTS
        positions = [o.position for o in scene.objects]
        assert len(set(positions)) == len(positions)
    counts = {len(s.objects) for s in batch.scenes}
    assert counts == {1, 2, 3}
    assert len(VALUES["shape"]) >= 6 and len(VALUES["color"]) >= 8 and len(VALUES["size"]) == 2
    assert len(VALUES["position"]) >= 5 and len(VALUES["texture"]) >= 3


def test_masks_are_exactly_the_pixels_that_differ_from_the_background(batch):
    for scene, image, masks in zip(batch.scenes, batch.images, batch.masks):
        empty, _ = render_scene(Scene((), scene.background, scene.background_tint))
        differs = (image != empty).any(-1)
        n = len(scene.objects)
        assert np.array_equal(differs, masks[:n].any(0))
        assert not masks[n:].any()
        assert masks[:n].sum(0).max() <= 1  # objects never overlap


def test_object_pixels_carry_the_object_colour(batch):
    for scene, image, masks in zip(batch.scenes, batch.images, batch.masks):
        for obj, mask in zip(scene.objects, masks):
            rgb = np.clip(np.array(COLOR_RGB[obj.word("color")]) + np.array(obj.tint), 0, 255)
            pixels = image[mask].astype(float)
            base = np.abs(pixels - rgb).max(-1) <= 1
            shade = np.abs(pixels - rgb * TEXTURE_SHADE).max(-1) <= 1
            assert (base | shade).all()
            assert shade.any() == (obj.word("texture") != "solid")


def test_patch_labels_point_at_the_object_covering_the_patch(batch):
    for scene, masks, labels in zip(batch.scenes, batch.masks, batch.patch_labels):
        cover = patch_coverage(masks[: len(scene.objects)], 8)
        assert labels.shape == (8, 8)
        for (r, c), lab in np.ndenumerate(labels):
            if lab >= 0:
                assert cover[lab, r, c] >= 0.25 and cover[lab, r, c] == cover[:, r, c].max()
            else:
                assert cover[:, r, c].max() < 0.25
        for i in range(len(scene.objects)):  # every object owns at least one patch
            assert (labels == i).any()


def test_caption_word_labels_name_the_right_object(batch):
    for scene, cap in zip(batch.scenes, batch.captions):
        assert len(cap.words) == len(cap.labels)
        named = set()
        for word, label in zip(cap.words, cap.labels):
            if label is None:
                continue
            index, attribute = label
            if index == BACKGROUND:
                assert word == VALUES["background"][scene.background]
                continue
            assert word in scene.objects[index].word(attribute).split()
            named.add((index, attribute))
        for index, row in enumerate(cap.mentions[: len(scene.objects)]):
            for a, value in zip(ATTRIBUTES, row):
                assert (value >= 0) == ((index, a) in named)
                if value >= 0:
                    assert value == scene.objects[index].value(a)


def test_caption_token_labels_line_up_with_the_tokenizer(batch):
    tok = build_tokenizer(40)
    vocab = tokenizer_words()
    for scene, cap in zip(batch.scenes[:16], batch.captions[:16]):
        ids = tok(cap.text)["input_ids"]
        assert len(ids) == len(cap.words) + 2 and 1 not in ids  # <bos> words <eos>, no <unk>
        for pos, (index, attribute) in cap.token_labels():
            word = vocab[ids[pos]]
            expected = VALUES["background"][scene.background] if index == BACKGROUND else scene.objects[index].word(attribute)
            assert word in expected.split()


def test_captions_use_articles_and_vary_their_word_order():
    rng = np.random.default_rng(0)
    texts = set()
    for _ in range(300):
        scene = sample_scene(rng)
        cap = make_caption(scene, rng)
        texts.add(cap.text)
        for art, nxt in zip(cap.words, cap.words[1:]):
            if art in ("a", "an"):
                assert art == ("an" if nxt[0] in "aeiou" else "a"), cap.text
    firsts = {t.split()[0] for t in texts}
    assert {"a", "an", "at"} <= firsts  # object first, or position first
    assert set(w for t in texts for w in t.split()) <= set(caption_words())


def test_caption_truth_accepts_true_captions_and_rejects_false_ones(batch):
    mentions = np.stack([c.mentions for c in batch.captions])
    bgs = np.array([c.background for c in batch.captions])
    truth = caption_truth(mentions, bgs, batch.values, batch.backgrounds)
    assert truth.diagonal().all()
    # Change one stated attribute of a caption: it is no longer true of its own scene.
    for i, cap in enumerate(batch.captions):
        stated = np.argwhere(cap.mentions >= 0)
        if len(stated):
            m = mentions[i : i + 1].copy()
            s, a = stated[0]
            m[0, s, a] = (m[0, s, a] + 1) % len(VALUES[ATTRIBUTES[a]])
            assert not caption_truth(m, bgs[i : i + 1], batch.values[i : i + 1], batch.backgrounds[i : i + 1])[0, 0]
    # A caption mentioning a different number of objects is false.
    one = np.array([len(s.objects) for s in batch.scenes]) == 1
    three = np.array([len(s.objects) for s in batch.scenes]) == 3
    assert not truth[np.ix_(one, three)].any()


def test_attribute_sets_are_labelled_single_object_scenes():
    world = ToyWorld(seed=2)
    for attribute in (*ATTRIBUTES, "background"):
        data = world.attribute_set(attribute, per_value=3)
        assert len(data.prompts) == len(VALUES[attribute]) == len(set(data.prompts))
        assert len(data.batch) == 3 * len(VALUES[attribute])
        for scene, label in zip(data.batch.scenes, data.labels):
            assert len(scene.objects) == 1
            value = scene.background if attribute == "background" else scene.objects[0].value(attribute)
            assert value == label
    assert attribute_prompts("color")[:2] == ["a red object", "a green object"]
    assert attribute_prompts("position")[2] == "an object in the center"


def test_bad_arguments_are_rejected_clearly():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ToyWorld(image_size=60, patch_size=8)
    with pytest.raises(ValueError, match="unknown attribute 'weight'"):
        ToyWorld().attribute_set("weight", 2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ToyWorld().batch(0, 0)
    with pytest.raises(ValueError, match="objects must be a range"):
        ToyWorld().batch(0, 2, objects=(0, 4))
    with pytest.raises(ValueError, match="cannot fix"):
        sample_scene(np.random.default_rng(0), 1, fixed={"weight": 1})


def test_token_label_arrays_match_the_word_labels(batch):
    objects, attributes = batch.token_label_arrays(40)
    names = (*ATTRIBUTES, "background")
    for b, cap in enumerate(batch.captions):
        labelled = dict(cap.token_labels())
        for pos in range(40):
            if pos in labelled:
                index, attribute = labelled[pos]
                assert objects[b, pos] == index and names[attributes[b, pos]] == attribute
            else:
                assert objects[b, pos] == -2 and attributes[b, pos] == -1
    short_objects, _ = batch.token_label_arrays(5)
    assert np.array_equal(short_objects, objects[:, :5])


def test_contrastive_batches_pair_each_scene_with_a_one_value_change():
    from sith_lens.toyworld import scene_values

    batch = ToyWorld(seed=4).contrastive_batch(0, n_pairs=40)
    assert len(batch) == 80
    mentions = np.stack([c.mentions for c in batch.captions])
    bgs = np.array([c.background for c in batch.captions])
    truth = caption_truth(mentions, bgs, batch.values, batch.backgrounds)
    changed_attributes = set()
    for i in range(40):
        a, b = batch.scenes[i], batch.scenes[40 + i]
        diff = (scene_values(a) != scene_values(b)).sum() + (a.background != b.background)
        assert diff == 1
        # each caption is true of its own scene and false of its twin
        assert truth[i, i] and truth[40 + i, 40 + i] and not truth[40 + i, i] and not truth[i, 40 + i]
        ca, cb = batch.captions[i].words, batch.captions[40 + i].words
        assert sum(x != y for x, y in zip(ca, cb)) >= 1
        changed_attributes |= {ATTRIBUTES[k] for k in np.argwhere(scene_values(a) != scene_values(b))[:, 1]}
    assert changed_attributes == set(ATTRIBUTES)
    with pytest.raises(ValueError, match="n_pairs must be >= 1"):
        ToyWorld().contrastive_batch(0, 0)


def test_group_batches_hold_a_scene_and_its_one_value_variants():
    from sith_lens.toyworld import scene_values

    world = ToyWorld(seed=5)
    batch = world.group_batch(0, batch_size=120, weights={"shape": 1.0, "position": 1.0, "background": 1.0})
    assert len(batch) == 120
    assert world.group_batch(0, 120, {"shape": 1.0, "position": 1.0, "background": 1.0}).texts == batch.texts
    mentions = np.stack([c.mentions for c in batch.captions])
    bgs = np.array([c.background for c in batch.captions])
    truth = caption_truth(mentions, bgs, batch.values, batch.backgrounds)
    # split into groups: a new group starts where an item differs from the previous one in != 1 value
    starts, varied = [0], set()
    for i in range(1, len(batch)):
        a, b = batch.scenes[starts[-1]], batch.scenes[i]
        diff = np.argwhere(scene_values(a) != scene_values(b))
        n_diff = len(diff) + (a.background != b.background)
        if n_diff != 1:
            starts.append(i)
            continue
        varied |= {ATTRIBUTES[k] for k in diff[:, 1]} | ({"background"} if a.background != b.background else set())
        # worded alike except the varied value; each caption is false of the other scene
        assert len(batch.captions[i].words) == len(batch.captions[starts[-1]].words) or "center" in (
            batch.captions[i].text + batch.captions[starts[-1]].text
        )
        assert truth[i, i] and not truth[starts[-1], i] and not truth[i, starts[-1]]
    assert varied == {"shape", "position", "background"}
    assert 12 <= len(starts) <= 40  # groups of 2-6 items (5 positions, 6 shapes, 4 backgrounds)
    for bad in ({"shape": -1.0}, {"colour": 1.0}, {}):
        with pytest.raises(ValueError, match="weights must map attributes"):
            world.group_batch(0, 8, bad)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        world.group_batch(0, 0)


def test_linear_probe_reads_what_an_embedding_holds():
    from sith_lens.toyworld.evaluate import linear_probe_accuracy

    def object_layout(pixels):  # where the object is (8x8 grid of its mask), nothing about the background
        background = pixels.flatten(2).median(-1).values[:, :, None, None]
        mask = ((pixels - background).abs().sum(1, keepdim=True) > 0.2).float()
        return torch.nn.functional.avg_pool2d(mask, 8).flatten(1)

    def constant(pixels):
        return torch.ones(len(pixels), 8)

    fit, test = ToyWorld(seed=1), ToyWorld(seed=2)
    acc = linear_probe_accuracy(object_layout, fit, test, attributes=("position", "size", "background"), per_value=30)
    assert acc["position"] > 0.95 and acc["size"] > 0.8
    assert acc["background"] < 0.5  # chance is 0.25
    blind = linear_probe_accuracy(constant, fit, test, attributes=("color",), per_value=30)
    assert blind["color"] == pytest.approx(1 / 8)


def test_swapped_captions_change_one_attribute_word_and_stay_worded_alike(batch):
    from sith_lens.toyworld.captions import swapped_caption

    rng = np.random.default_rng(0)
    seen = set()
    for caption in batch.captions:
        neg = swapped_caption(caption, rng, {"shape": 1.0, "texture": 1.0})
        named = {lab[1] for lab in caption.labels if lab is not None}
        if neg is None:
            assert not named & {"shape", "texture"}
            continue
        changed = [i for i, (a, b) in enumerate(zip(caption.words, neg.words)) if a != b]
        value_slots = [i for i in changed if caption.labels[i] is not None]
        assert len(value_slots) == 1 and len(neg.words) == len(caption.words)
        index, attribute = caption.labels[value_slots[0]]
        seen.add(attribute)
        assert attribute in ("shape", "texture")
        assert neg.words[value_slots[0]] in VALUES[attribute]
        # only the article in front of the new word may change besides it
        assert all(i == value_slots[0] or neg.words[i] in ("a", "an") for i in changed)
        assert neg.mentions[index, ATTRIBUTES.index(attribute)] == VALUES[attribute].index(neg.words[value_slots[0]])
    assert seen == {"shape", "texture"}
    # with one object, the swapped caption is false of the scene its caption describes
    singles = ToyWorld(seed=3).batch(0, 32, objects=(1, 1))
    negs = [swapped_caption(c, rng) for c in singles.captions]
    kept = [i for i, n in enumerate(negs) if n is not None]
    truth = caption_truth(
        np.stack([negs[i].mentions for i in kept]), np.array([negs[i].background for i in kept]),
        singles.values[kept], singles.backgrounds[kept],
    )
    assert len(kept) > 20 and not truth.diagonal().any()
    with pytest.raises(ValueError, match="swap weights must map attributes"):
        swapped_caption(batch.captions[0], rng, {"position": 1.0})


def test_contrastive_batches_can_add_one_attribute_prompt_items():
    world = ToyWorld(seed=4)
    batch = world.contrastive_batch(0, n_pairs=8, n_prompts=40, prompt_weights={"shape": 1.0, "texture": 1.0})
    assert len(batch) == 56
    plain = world.contrastive_batch(0, n_pairs=8)
    assert plain.texts == batch.texts[:16]  # the pairs do not depend on the prompt items
    named = set()
    for scene, caption in zip(batch.scenes[16:], batch.captions[16:]):
        assert len(scene.objects) == 1
        attributes = {lab[1] for lab in caption.labels if lab is not None}
        assert len(attributes) == 1
        named |= attributes
        assert caption.text in attribute_prompts(next(iter(attributes)))
    assert named == {"shape", "texture"}
    truth = caption_truth(np.stack([c.mentions for c in batch.captions]), np.array([c.background for c in batch.captions]),
                          batch.values, batch.backgrounds)
    assert truth.diagonal().all()
    with pytest.raises(ValueError, match="n_prompts >= 0"):
        world.contrastive_batch(0, 4, n_prompts=-1)
    with pytest.raises(ValueError, match="weights must map attributes"):
        world.contrastive_batch(0, 4, n_prompts=4, prompt_weights={"colour": 1.0})
