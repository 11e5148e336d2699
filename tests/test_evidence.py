"""The evaluation toolkit: intervals, baselines, chance and margins on constructed cases whose answer
is known (sith_lens.evidence, sith_lens.lucid.pointing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sith_lens.evidence import bootstrap, compare, format_evidence, label_agreement_scores, mean_estimate


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_items():
    rng = np.random.default_rng(0)
    small = rng.binomial(1, 0.3, 40).astype(float)
    large = rng.binomial(1, 0.3, 4000).astype(float)
    a, b = mean_estimate(small), mean_estimate(large)
    assert a.low <= a.value <= a.high and b.low <= b.value <= b.high
    assert (b.high - b.low) < (a.high - a.low) / 5  # about sqrt(100) = 10 times narrower
    assert b.low < 0.3 < b.high
    # a constant (non-binary) sample has a zero-width interval
    c = mean_estimate(np.full(10, 0.5))
    assert (c.value, c.low, c.high) == (0.5, 0.5, 0.5)


def test_cluster_bootstrap_is_wider_when_items_of_a_cluster_agree():
    # 20 clusters of 10 identical items: really 20 observations, not 200
    per_cluster = np.repeat(np.random.default_rng(1).binomial(1, 0.5, 20).astype(float), 10)
    groups = np.repeat(np.arange(20), 10)
    naive, clustered = mean_estimate(per_cluster), mean_estimate(per_cluster, groups)
    assert clustered.n == 20 and naive.n == 200
    assert (clustered.high - clustered.low) > 2 * (naive.high - naive.low)


def test_bootstrap_of_a_vector_statistic_and_independent_strata():
    x, y = np.zeros(50), np.ones(30)
    est = bootstrap(lambda a, b: np.array([a.mean(), b.mean(), b.mean() - a.mean()]), x, y)
    assert [e.value for e in est] == [0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="one id per item"):
        bootstrap(np.mean, x, groups=[np.arange(3)])


def test_compare_takes_the_margin_against_the_best_of_the_named_baselines():
    hits = np.array([1, 1, 1, 0] * 25, float)
    weak = np.array([1, 0, 0, 0] * 25, float)
    strong = np.array([1, 1, 0, 0] * 25, float)
    ignored = np.ones(100)  # a baseline outside margin_against never sets the margin
    ev = compare({"claim": hits, "weak": weak, "strong": strong, "oracle": ignored}, "claim",
                 margin_against=["weak", "strong"], chance=np.full(100, 0.5), seeds=np.repeat([7, 8], 50))
    assert ev.margin_against == "strong" and ev.margin.value == pytest.approx(0.25)
    assert ev.margin.low > 0  # paired items: the margin's interval excludes 0
    assert ev.chance == 0.5 and ev.value.value == 0.75 and set(ev.per_seed) == {"7", "8"}
    js = ev.to_json()
    assert js["margin"]["against"] == "strong" and set(js["baselines"]) == {"weak", "strong", "oracle"}
    assert "margin vs strong" in format_evidence("t", ev)
    with pytest.raises(ValueError, match="same 100 items"):
        compare({"claim": hits, "other": hits[:10]}, "claim")
    with pytest.raises(ValueError, match="NaN"):
        compare({"claim": np.array([np.nan, 1.0])}, "claim")


def test_label_baselines_constant_gives_the_majority_share_frequency_the_expected_agreement():
    actual = ["shape"] * 6 + ["color"]
    sith = ["shape", "color", "color", "shape", "position", "shape", "color"]
    s = label_agreement_scores(sith, actual)
    assert s["constant"].mean() == pytest.approx(6 / 7)  # labelling every head "shape"
    assert s["labeller"].mean() == pytest.approx(4 / 7)
    # a random labeller with SITH's frequencies (3 shape, 3 colour, 1 position of 7)
    assert s["frequency"].mean() == pytest.approx((6 * 3 / 7 + 3 / 7) / 7)
    # a perfect labeller scores 1, above both baselines
    perfect = label_agreement_scores(actual, actual)
    assert perfect["labeller"].mean() == 1.0 > perfect["frequency"].mean()


# -- pointing game ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_words():
    import sith_lens as sl
    from sith_lens.lucid.collect import collect_toy_activations
    from sith_lens.lucid.pointing import pointing_words

    acts = collect_toy_activations(sl.load_clip("toy"), 96, seed=9, progress=False)
    return acts, pointing_words(acts)


def test_planted_heat_map_always_hits_and_wrong_object_map_never(toy_words):
    from sith_lens.lucid.pointing import score_heatmap

    _, words = toy_words
    planted = (words.patch_labels == words.object[:, None]).float()
    result = score_heatmap(planted, words)
    assert result.hit.all() and result.on_object.all()
    multi = words.n_objects > 1
    wrong = (words.patch_labels == (words.object[:, None] + 1) % words.n_objects[:, None]).float()
    assert not score_heatmap(wrong, words).hit[multi].any()
    # a flat map (an empty code) misses
    assert not score_heatmap(torch.zeros_like(planted), words).hit.any()


def test_word_agnostic_map_scores_the_saliency_rate_and_chance_given_object(toy_words):
    """A map that finds *an* object but ignores the word: it is always on an object, and right among
    those at 1 / objects, the chance rate of a random object."""
    from sith_lens.lucid.pointing import pointing_table

    _, words = toy_words
    # per image: light up one object's patches, the same object for every word of the image
    first_object = (words.patch_labels == 0).float()
    planted = (words.patch_labels == words.object[:, None]).float()
    table = pointing_table(words, {"planted": planted, "salient": first_object}, "planted", ["salient"])
    for k in (2, 3):
        m = words.n_objects == k
        expected = float((words.object[m] == 0).float().mean())
        assert table.given_object["salient"][k].value == pytest.approx(expected)
        assert abs(expected - 1 / k) < 0.2  # words name each object about equally often
        assert table.given_object["chance_random_object"][k].value == pytest.approx(1 / k)
    assert table.rates["salient"]["1_objects"].value == 1.0  # on one-object scenes saliency is grounding
    assert table.evidence.margin_against == "salient"
    assert table.evidence.margin.value == pytest.approx(1 - float((words.object == 0).float().mean()))
    assert 0 < table.rates["random_patch"]["all"].value < 0.3  # objects cover a small share of the patches
    json_table = table.to_json()
    assert set(json_table["rates"]["planted"]) >= {"all", "2_objects", "multi_object_unique_value"}


def test_unique_value_words_have_no_twin_in_their_scene(toy_words):
    acts, words = toy_words
    values = acts.extras["image.values"][words.image]
    for w in torch.nonzero(words.unique_value & (words.n_objects > 1)).flatten()[:50].tolist():
        a, o = int(words.attribute[w]), int(words.object[w])
        named = values[w, o, a]
        assert int((values[w, :, a] == named).sum()) == 1


def test_background_distance_map_peaks_off_the_background(toy_words):
    from sith_lens.lucid.pointing import background_distance_map

    acts, _ = toy_words
    labels = acts.extras["image.patch_labels"].reshape(acts.patches.shape[0], -1)
    heat = background_distance_map(acts.patches.float(), labels)
    peak = labels.gather(1, heat.argmax(1, keepdim=True))[:, 0]
    assert (peak >= 0).float().mean() > 0.5  # objects stand out from the background


def test_edit_selectivity_planted_edit_scores_100_a_uniform_one_0():
    from sith_lens.evidence import edit_selectivity

    rng = np.random.default_rng(0)
    attrs = ("color", "shape", "size")
    base = {a: np.ones(40) for a in attrs}
    edits = {
        "sith": {"color": np.zeros(40), "shape": np.ones(40), "size": np.ones(40)},  # removes only colour
        "random": {a: (rng.random(40) < 0.7).astype(float) for a in attrs},  # hurts everything alike
        "all": {a: np.zeros(40) for a in attrs},  # the ceiling: removes everything
    }
    out = edit_selectivity(base, edits, "color", controls=("random",), ceiling="all")
    assert out["sith"]["selectivity"]["value"] == 100.0 and out["sith"]["off_target_drop_pp"]["value"] == 0.0
    assert abs(out["random"]["selectivity"]["value"]) < 25
    assert out["all"]["selectivity"]["value"] == 0.0 and out["all"]["target_drop_pp"]["value"] == 100.0
    assert out["share_of_ceiling"]["value"] == 1.0
    assert out["margin_vs_random"]["ci95"][0] > 50
    # an edit that hits an off-target attribute harder than the target scores below zero
    edits["sith"] = {"color": np.ones(40), "shape": np.zeros(40), "size": np.ones(40)}
    assert edit_selectivity(base, edits, "color")["sith"]["selectivity"]["value"] == -50.0
    with pytest.raises(ValueError, match="not scored"):
        edit_selectivity(base, {"sith": edits["sith"]}, "color", controls=("random",))


def test_few_agreeing_clusters_get_a_wilson_interval_not_a_zero_width_one():
    from sith_lens.evidence import wilson_interval

    est = mean_estimate(np.ones(6), groups=np.array([0, 1, 0, 1, 0, 1]))  # 2 heads, 3 seeds each, all agree
    lo, hi = wilson_interval(2, 2)
    assert est.value == 1.0 and est.low == pytest.approx(lo) and est.high == 1.0 and est.low < 0.4
    assert [round(x, 2) for x in wilson_interval(4, 7)] == [0.25, 0.84]
    # many clusters: the bootstrap interval is kept as it is
    many = mean_estimate(np.ones(100))
    assert (many.low, many.high) == (1.0, 1.0)


def test_pointing_maps_gives_every_row_of_the_table(toy_words):
    """An SAE whose shared latent o fires on object o's patches and on the words naming object o
    points perfectly; the word-agnostic and dense maps come with it, one map per word."""
    from types import SimpleNamespace

    from sith_lens.lucid.pointing import pointing_maps, pointing_table

    acts, _ = toy_words
    batch = acts.pair_batch(torch.arange(len(acts)))
    labels = acts.extras["image.patch_labels"].reshape(len(acts.patches), -1)[acts.image_index]
    objects = acts.extras["pair.token_objects"][:, : batch.tokens.shape[1]]
    patch_codes = torch.stack([(labels == o).float() for o in range(3)], -1)
    token_codes = torch.stack([(objects == o).float() for o in range(3)], -1)
    sae = SimpleNamespace(cfg=SimpleNamespace(d_sae=3, n_private_vision=0, n_private_text=0),
                          vision=SimpleNamespace(encode=lambda x: patch_codes),
                          text=SimpleNamespace(encode=lambda x: token_codes))
    words, heats = pointing_maps({"planted": sae}, acts, code_norm_of="planted")
    assert set(heats) == {"planted", "planted_code_norm", "background_distance", "dense_cosine"}
    assert all(h.shape == words.patch_labels.shape for h in heats.values())
    table = pointing_table(words, heats, "planted", ["background_distance", "planted_code_norm"])
    assert table.rates["planted"]["all"].value == 1.0
    assert table.evidence.margin.value > 0.3  # a grounded map beats every word-agnostic one
