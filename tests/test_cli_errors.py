"""Every `sith-lens` subcommand turns bad input into one `sith-lens: error:` line that names the fix:
no traceback, exit status 2, and nothing written. Flags are checked before any model is loaded."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from sith_lens.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    bad_config = root / "bad-config"
    bad_config.mkdir()
    (bad_config / "config.json").write_text("{not json")
    (bad_config / "model.safetensors").write_bytes(b"")
    empty_config = root / "empty-config"
    empty_config.mkdir()
    (empty_config / "config.json").write_text("{}")
    empty_sae = root / "empty-sae"
    empty_sae.mkdir()
    (empty_sae / "cfg.json").write_text("{}")
    (empty_sae / "sae_weights.safetensors").write_bytes(b"")
    (root / "list.json").write_text("[1, 2, 3]")
    (root / "blank.txt").write_text("\n  \n")
    (root / "a-file").write_text("x")
    Image.new("RGB", (64, 64), (200, 30, 30)).save(root / "red.png")
    return root


# (argv, words the one-line message must contain); "{root}" is the fixture folder
CASES = [
    (["info", "--model", "{root}/bad-config"], "config.json"),
    (["info", "--model", "{root}/empty-config"], "config.json"),
    (["info", "--model", "random:nope"], "random:tiny"),
    (["explain", "--k", "0"], "--k: must be an integer >= 1"),
    (["explain", "--lam", "nan"], "--lam: must be a finite number"),
    (["explain", "--report-vectors", "0"], "--report-vectors: must be an integer >= 1"),
    (["explain", "--vocab", "{root}/missing.txt"], "unknown vocabulary"),
    (["explain", "--vocab", "{root}/blank.txt", "--layers", "-1"], "vocabulary is empty"),
    (["explain", "--layers", "99"], "layer"),
    (["explain", "--layers", "one"], "--layers"),
    (["explain", "--template", "no braces"], "{}"),
    (["explain", "--out", "{root}/a-file"], "is a file"),
    (["edit", "--suppress", "red", "--result", "{root}/list.json", "--out", "{root}/edited"], "not a SITH result"),
    (["edit", "--suppress", "red", "--result", "{root}/missing.json", "--out", "{root}/edited"], "missing.json"),
    (["edit", "--amplify", "red", "--factor", "1e30", "--out", "{root}/edited"], "--factor: must be a finite number in [-100, 100]"),
    (["edit", "--amplify", "red", "--factor", "nan", "--out", "{root}/edited"], "--factor: must be a finite number"),
    (["edit", "--suppress", "red", "--threshold", "0", "--out", "{root}/edited"], "--threshold: must be a number in (0, 1]"),
    (["edit", "--suppress", "red", "--out", "{root}/a-file"], "is a file"),
    (["compare", "toy", "random:tiny"], "differ in shape"),
    (["compare", "toy", "toy", "--top", "0"], "--top: must be an integer >= 1"),
    (["toyworld", "--columns", "0"], "--columns: must be an integer >= 1"),
    (["toyworld", "--n", "0"], "--n: must be an integer >= 1"),
    (["toyworld", "--out", "{root}/x.jpg"], ".png"),
    (["toyworld", "--seed", "-1"], "--seed: must be an integer >= 0"),
    (["demo", "--host", "256.1.1.1"], "--host"),
    (["demo", "--host", "no such host!"], "--host"),
    (["demo", "--port", "70000"], "--port"),
    (["lucid", "train", "--device", "cuda:0", "--out", "{root}/run"], "cuda"),
    (["lucid", "train", "--device", "tpu", "--out", "{root}/run"], "--device"),
    (["lucid", "train", "--steps", "0", "--out", "{root}/run"], "--steps: must be an integer >= 1"),
    (["lucid", "train", "--lr", "nan", "--out", "{root}/run"], "--lr: must be a finite number > 0"),
    (["lucid", "train", "--ot", "-1", "--out", "{root}/run"], "--ot: must be a finite number >= 0"),
    (["lucid", "train", "--batch-size", "1", "--out", "{root}/run"], "--batch-size: must be an integer >= 2"),
    (["lucid", "train", "--acts", "{root}/missing", "--out", "{root}/run"], "holds no LUCID activations"),
    (["lucid", "train", "--resume", "{root}/missing", "--out", "{root}/run"], "--resume"),
    (["lucid", "train", "--out", "{root}/a-file"], "--out: must be a folder, but"),
    (["lucid", "collect", "--toy-pairs", "0", "--out", "{root}/acts"], "--toy-pairs: must be an integer >= 1"),
    (["lucid", "collect", "--shard-images", "100", "--out", "{root}/acts"], "multiple of batch_size (64) (--shard-images"),
    (["lucid", "collect", "--dtype", "int8", "--out", "{root}/acts"], "--dtype: invalid choice"),
    (["lucid", "collect", "--out", "{root}/a-file"], "--out: must be a folder, but"),
    (["lucid", "train", "--shuffle-shards", "-1", "--out", "{root}/run"], "--shuffle-shards: must be an integer >= 0"),
    (["lucid", "label", "--sae", "{root}/missing"], "not a saved SAE"),
    (["lucid", "label", "--sae", "{root}/empty-sae"], "names no architecture, so it is not a saved SAELens SAE"),
    (["lucid", "label", "--min-purity", "2"], "--min-purity"),
    (["lucid", "ground", "--image", "{root}/red.png", "--caption", "a the of"], "no content word"),
    (["lucid", "ground", "--image", "{root}/missing.png", "--caption", "a red circle"], "missing.png"),
    (["lucid", "ground", "--image", "{root}/a-file", "--caption", "a red circle"], "image"),
]


@pytest.mark.parametrize("argv, words", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_ends_in_one_error_line(files, capsys, argv, words):
    before = sorted(p.name for p in files.rglob("*"))
    argv = [a.replace("{root}", str(files)) for a in argv]
    with torch.no_grad():
        rc = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if "Loading weights" not in line]  # transformers' bar
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("sith-lens: error: "), err
    assert words in lines[0], lines[0]
    assert "Traceback" not in err
    assert sorted(p.name for p in files.rglob("*")) == before  # nothing written


def test_unexpected_errors_are_one_line_too(monkeypatch, capsys):
    """A bug still ends in one line (with the way to see the traceback), not a traceback."""
    import sith_lens.cli as cli

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "_cmd_info", broken)
    assert main(["info"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ZeroDivisionError: division by zero" in err[0] and "SITH_LENS_DEBUG=1" in err[0]
    monkeypatch.setenv("SITH_LENS_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["info"])
