"""Base vs fine-tuned comparison, zero-shot group robustness, the toy spurious task and fine-tuning,
and the `edit` / `compare` commands."""

from __future__ import annotations

import copy

import pytest
import torch

import sith_lens as sl
from sith_lens.cli import main
from sith_lens.compare import Comparison, compare, match_vectors, principal_angles
from sith_lens.concepts import ConceptDictionary
from recipes.finetune_toy import FinetuneConfig, finetune, rename_words, save_finetuned, shifted_world
from sith_lens.toyworld.spurious import spurious_task, write_group_folder
from sith_lens.zeroshot import group_accuracy, group_robustness, read_groups_csv, zero_shot_weights


@pytest.fixture(scope="module")
def tiny_concepts(tiny):
    g = torch.Generator().manual_seed(3)
    words = ["red", "blue", "green", "circle", "square", "dog", "cat", "tree"]
    return ConceptDictionary.from_embeddings(words, torch.randn(len(words), tiny.cfg.d_proj, generator=g))


# -- compare --------------------------------------------------------------------------------------------
def test_principal_angles_of_known_subspaces():
    e = torch.eye(4)
    assert torch.equal(principal_angles(e[:2], e[:2]), torch.zeros(2, dtype=torch.float64))
    rot = torch.stack([e[0], (e[1] + e[2]) / 2**0.5])  # shares e0, 45 degrees from e1
    torch.testing.assert_close(principal_angles(e[:2], rot), torch.tensor([0.0, 45.0], dtype=torch.float64),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(principal_angles(e[:2], e[2:]), torch.tensor([90.0, 90.0], dtype=torch.float64))
    idx, cos = match_vectors(e[:2], -e[[1, 0, 3]])
    assert idx.tolist() == [1, 0] and cos.tolist() == [1.0, 1.0]


def test_compare_of_a_model_with_itself(tiny, tiny_concepts):
    cmp = compare(tiny, copy.deepcopy(tiny), tiny_concepts, top=4, progress=False)
    assert cmp.angles.shape == (3, 4, 4)
    assert cmp.angles.abs().max() < 1e-4  # degrees
    torch.testing.assert_close(cmp.sv_ratio, torch.ones_like(cmp.sv_ratio))
    assert torch.equal(cmp.matched, torch.arange(4).expand(3, 4, 4))
    assert cmp.relative_change.abs().max() < 1e-6


def test_compare_sees_a_suppression_and_round_trips(tiny, tiny_concepts, tmp_path):
    result = sl.explain_heads(tiny, tiny_concepts, layers=[2], k=3, progress=False)
    edited = sl.edit_heads(tiny, result, {(2, 1, 0): 0.0})  # remove head 1's top singular vector
    cmp = compare(tiny, edited, tiny_concepts, top=4, delta_vectors=2, progress=False)
    change = cmp.relative_change
    assert change[2, 1] > 0.1 and change[[0, 1]].abs().max() < 1e-5
    others = [h for h in range(4) if h != 1]
    assert change[2, others].abs().max() < 1e-5
    # the update is exactly that singular vector: delta's sv0 has its singular value
    S = sl.sith.head_svd(tiny, [2])[1][0, 1]
    assert cmp.delta.singular_values[2, 1, 0].item() == pytest.approx(S[0].item(), rel=1e-4)
    assert cmp.angles[2, 1].max() > 10  # the top-4 subspace lost a direction
    cmp.to_json(tmp_path / "cmp.json")
    again = Comparison.from_json(tmp_path / "cmp.json")
    torch.testing.assert_close(again.angles, cmp.angles)
    assert again.delta.head(2, 1).vectors[0].concepts == cmp.delta.head(2, 1).vectors[0].concepts


def test_compare_rejects_different_shapes_and_bad_arguments(tiny, tiny_concepts):
    with pytest.raises(ValueError, match="the models differ in shape"):
        compare(tiny, sl.load_clip("random:tiny"), tiny_concepts)
    with pytest.raises(ValueError, match="top must be in 1..16"):
        compare(tiny, tiny, top=17)


# -- zero-shot and group robustness ----------------------------------------------------------------------
def test_group_accuracy_counts_per_group():
    acc = group_accuracy(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]), ["a", "a", "b", "b"])
    assert acc.overall == 0.75 and acc.worst_group == 0.5 and acc.worst_group_name == "b"
    assert acc.groups == {"a": (1.0, 2), "b": (0.5, 2)}
    with pytest.raises(ValueError, match="same non-zero length"):
        group_accuracy(torch.tensor([0]), torch.tensor([0, 1]), ["a"])


def test_zero_shot_weights_average_templates(toy):
    W = zero_shot_weights(toy, ["red", "blue"], templates=["a {} object", "a {} circle"])
    assert W.shape == (2, toy.cfg.d_proj)
    torch.testing.assert_close(W.norm(dim=-1), torch.ones(2))
    with torch.no_grad():
        want = torch.nn.functional.normalize(toy.encode_text(["a red object", "a red circle"], normalize=True).mean(0), dim=0)
    torch.testing.assert_close(W[0], want)
    with pytest.raises(ValueError, match="at least two classes"):
        zero_shot_weights(toy, ["red"])
    with pytest.raises(ValueError, match="templates must be strings with a"):
        zero_shot_weights(toy, ["red", "blue"], templates=["no slot"])


def test_spurious_task_and_image_folder_give_the_same_figures(toy, tmp_path):
    task = spurious_task(per_group=6)
    assert len(task.labels) == 24 and sorted(set(task.groups)) == ["large/black", "large/white", "small/black", "small/white"]
    direct = group_robustness(toy, task.pixels, task.labels, task.groups, task.class_prompts)
    csv_path = write_group_folder(task, tmp_path / "groups")
    data = read_groups_csv(csv_path, task.classes)
    assert len(data.paths) == 24 and data.labels == task.labels
    from_files = group_robustness(toy, data.paths, data.labels, data.groups, task.class_prompts)
    assert from_files == direct
    assert direct.worst_group <= direct.overall
    # the confound is real: the groups whose background belongs to the other class do worse
    minority = min(direct.groups["large/black"][0], direct.groups["small/white"][0])
    majority = min(direct.groups["large/white"][0], direct.groups["small/black"][0])
    assert minority < majority
    assert task.class_prompts == [["a small object on a black background"], ["a large object on a white background"]]
    mild = spurious_task(per_group=6, plain_prompt=True)
    assert mild.class_prompts[0] == ["a small object", "a small object on a black background"]
    assert torch.equal(mild.pixels, task.pixels)
    softened = group_robustness(toy, mild.pixels, mild.labels, mild.groups, mild.class_prompts)
    assert softened.worst_group > direct.worst_group


def test_bad_group_csv_is_rejected(tmp_path):
    (tmp_path / "g.csv").write_text("image,label\nx.png,cat\n")
    with pytest.raises(ValueError, match="image,label,group"):
        read_groups_csv(tmp_path / "g.csv")
    (tmp_path / "g.csv").write_text("image,label,group\nmissing.png,cat,a\n")
    with pytest.raises(ValueError, match="do not exist"):
        read_groups_csv(tmp_path / "g.csv")
    with pytest.raises(ValueError, match="not among the classes"):
        read_groups_csv(tmp_path / "g.csv", classes=["dog", "bird"])
    with pytest.raises(ValueError, match="is not a size of the toy world"):
        spurious_task(classes=("tiny", "large"))


# -- fine-tuning ------------------------------------------------------------------------------------------
def test_shifted_world_recolours_only_the_named_colour():
    cfg = FinetuneConfig()
    plain, shifted = sl.ToyWorld(seed=5), shifted_world(cfg, seed=5)
    a, b = plain.attribute_set("color", 2), shifted.attribute_set("color", 2)
    purple = a.labels == 4
    assert (a.batch.images[~purple] == b.batch.images[~purple]).all()
    assert (a.batch.images[purple] != b.batch.images[purple]).any()
    assert rename_words(["a purple star and a purple circle", "purpled"], {"purple": "magenta"}) == [
        "a magenta star and a magenta circle", "purpled"]
    with pytest.raises(ValueError, match="palette entries"):
        sl.ToyWorld(palette=(("violet", (1, 2, 3)),))


def test_finetune_runs_and_saves_a_loadable_checkpoint(tmp_path, toy):
    cfg = FinetuneConfig(steps=2, batch_size=8, train="vo")
    model, tokenizer, log = finetune(cfg, progress=False)
    out = save_finetuned(model, tokenizer, cfg, tmp_path / "ft", {"config": "test"})
    ft = sl.load_clip(out)
    assert ft.image_mean is not None and ft.tokenizer is not None
    # only the vision attention's value/output projections moved
    torch.testing.assert_close(ft.text.W_E, toy.text.W_E)
    torch.testing.assert_close(ft.vision.W_Q, toy.vision.W_Q)
    assert not torch.allclose(ft.vision.W_V, toy.vision.W_V)
    with pytest.raises(ValueError, match="train must be one of"):
        finetune(FinetuneConfig(steps=1, batch_size=2, train="mlp"), progress=False)


# -- commands -----------------------------------------------------------------------------------------------
def test_edit_and_compare_commands(tmp_path, capsys, toy):
    out = tmp_path / "no-red"
    assert main(["edit", "--model", "toy", "--suppress", "red", "--layers", "-2:", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "singular vectors in" in text and "wrote" in text
    edited = sl.load_clip(out)
    pixels = sl.ToyWorld(seed=3).batch(0, 4).pixels
    with torch.no_grad():
        assert not torch.allclose(edited.encode_image(pixels), toy.encode_image(pixels), atol=1e-4)
    assert main(["compare", "toy", str(out), "--layers", "-2:", "--out", str(tmp_path / "cmp.json")]) == 0
    text = capsys.readouterr().out
    assert "mean angle" in text and (tmp_path / "cmp.json").is_file()
    cmp = Comparison.from_json(tmp_path / "cmp.json")
    assert cmp.layers == [4, 5] and cmp.relative_change.max() > 0.01
    assert main(["edit", "--model", "toy", "--suppress", "rde", "--out", str(tmp_path / "x")]) == 2
    assert "did you mean 'red'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["edit", "--model", "toy", "--out", str(tmp_path / "x")]) == 2
    assert "nothing to edit" in capsys.readouterr().err
    # reuse a saved explanation; one that does not cover the layers is refused
    assert main(["explain", "--layers", "-1", "--out", str(tmp_path / "sith")]) == 0
    capsys.readouterr()
    assert main(["edit", "--amplify", "striped", "--factor", "3", "--threshold", "0.2", "--layers", "-1",
                 "--result", str(tmp_path / "sith" / "sith.json"), "--out", str(tmp_path / "amp")]) == 0
    assert "singular vectors in" in capsys.readouterr().out
    assert main(["edit", "--suppress", "red", "--layers", "-2:", "--result", str(tmp_path / "sith" / "sith.json"),
                 "--out", str(tmp_path / "y")]) == 2
    assert "does not cover layers [4]" in capsys.readouterr().err
    assert main(["edit", "--boost-classes", "solid,striped,dotted", "--layers", "-1", "--out", str(tmp_path / "b")]) == 0
    assert "boosted" in capsys.readouterr().out and (tmp_path / "b" / "model.safetensors").is_file()
    assert main(["edit", "--boost-classes", "solid,striped", "--suppress", "red", "--out", str(tmp_path / "z")]) == 2
    assert "without --suppress/--amplify" in capsys.readouterr().err


@pytest.mark.parametrize("first", ["attribute", "module"])
def test_sl_compare_is_callable_and_the_module_in_either_import_order(first):
    """`sl.compare(...)` and `sith_lens.compare.check_same_shape` both work, whether the package
    attribute or the submodule is reached first (a fresh interpreter for each order)."""
    import subprocess
    import sys

    reach = "sl.compare" if first == "attribute" else "importlib.import_module('sith_lens.compare')"
    code = (
        "import importlib, sith_lens as sl\n"
        f"{reach}\n"
        "import sith_lens.compare\n"
        "assert callable(sl.compare) and sl.compare is sith_lens.compare\n"
        "assert sith_lens.compare.check_same_shape is sith_lens.compare.__dict__['check_same_shape']\n"
        "m = sl.load_clip('random:tiny')\n"
        "assert sl.compare(m, m, progress=False).layers == [0, 1]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
