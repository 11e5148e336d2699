"""SITH core: folding and centring, factored SVD, read-out, concept dictionary, explain_heads."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
import torch.nn.functional as F

import sith_lens as sl
from sith_lens.concepts import ConceptDictionary, center_atoms, text_fingerprint
from sith_lens.readout import JointReadout
from sith_lens.sith import SITHResult, explain_heads, head_svd, joint_readout, parse_layers, resolve_layers
from sith_lens.svd import factored_svd
from sith_lens.weights import fold_and_center, vo_factors


# -- weights ------------------------------------------------------------------------------------------
def test_folded_and_centred_tower_computes_the_same_function(tiny):
    torch.manual_seed(0)
    pixels = torch.randn(3, 3, 32, 32)
    folded = fold_and_center(tiny.vision)
    with torch.no_grad():
        torch.testing.assert_close(folded(pixels), tiny.vision(pixels), atol=1e-5, rtol=1e-5)
        # every token after ln_final, not only the pooled one
        torch.testing.assert_close(folded(pixels, return_type="tokens"), tiny.vision(pixels, return_type="tokens"),
                                   atol=1e-5, rtol=1e-5)
    # the residual stream itself differs only by a multiple of the all-ones vector per token
    _, c1 = tiny.vision.run_with_cache(pixels)
    _, c2 = folded.run_with_cache(pixels)
    diff = c1["blocks.1.hook_resid_post"] - c2["blocks.1.hook_resid_post"]
    assert diff.abs().max() > 1e-3
    torch.testing.assert_close(diff, diff.mean(-1, keepdim=True).expand_as(diff), atol=1e-5, rtol=0)
    # its W_V / W_O are exactly the factors vo_factors gives, and the input model is untouched
    vo = vo_factors(tiny.vision.W_V, tiny.vision.W_O, torch.stack([b.ln1.w for b in tiny.vision.blocks]))
    torch.testing.assert_close(folded.W_V, vo.W_V)
    torch.testing.assert_close(folded.W_O, vo.W_O)
    assert not torch.allclose(tiny.vision.blocks[0].ln1.w, torch.ones_like(tiny.vision.blocks[0].ln1.w))


def test_vo_factors_are_centred_and_ignore_biases(tiny):
    vo = vo_factors(tiny.vision.W_V, tiny.vision.W_O, torch.stack([b.ln1.w for b in tiny.vision.blocks]))
    assert vo.W_V.mean(dim=-2).abs().max() < 1e-6  # reads orthogonal to the all-ones vector
    assert vo.W_O.mean(dim=-1).abs().max() < 1e-6  # writes orthogonal to it
    before = head_svd(tiny, [0, 1])
    other = copy.deepcopy(tiny)
    with torch.no_grad():
        for b in other.vision.blocks:
            b.attn.b_V.add_(1.0), b.attn.b_O.add_(1.0), b.ln1.b.add_(1.0)
    after = head_svd(other, [0, 1])
    for x, y in zip(before, after):
        assert torch.equal(x, y)


def test_vo_factors_reject_nan_and_bad_shapes(tiny):
    W_V = tiny.vision.W_V.detach().clone()
    W_V[0, 0, 0, 0] = float("nan")
    ln_w = torch.stack([b.ln1.w for b in tiny.vision.blocks])
    with pytest.raises(ValueError, match="NaN"):
        vo_factors(W_V, tiny.vision.W_O, ln_w)
    with pytest.raises(ValueError, match="W_O must have shape"):
        vo_factors(tiny.vision.W_V, tiny.vision.W_O[:, :2], ln_w)


# -- SVD ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_factored_svd_reconstructs_and_matches_the_full_svd(dtype):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 5, 48, 8, generator=g, dtype=dtype)
    B = torch.randn(3, 5, 8, 48, generator=g, dtype=dtype)
    U, S, Vh = factored_svd(A, B)
    assert U.shape == (3, 5, 48, 8) and S.shape == (3, 5, 8) and Vh.shape == (3, 5, 8, 48) and U.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(U @ torch.diag_embed(S) @ Vh, A @ B, atol=tol, rtol=tol)
    torch.testing.assert_close(S, torch.linalg.svdvals(A @ B)[..., :8], atol=tol, rtol=tol)
    assert (S[..., :-1] >= S[..., 1:]).all()
    eye = torch.eye(8, dtype=dtype).expand(3, 5, 8, 8)
    torch.testing.assert_close(U.transpose(-2, -1) @ U, eye, atol=tol, rtol=0)
    torch.testing.assert_close(Vh @ Vh.transpose(-2, -1), eye, atol=tol, rtol=0)


def test_svd_signs_are_deterministic():
    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(4, 40, 6, generator=g), torch.randn(4, 6, 40, generator=g)
    U, S, Vh = factored_svd(A, B)
    peak = U.gather(-2, U.abs().argmax(-2, keepdim=True))
    assert (peak > 0).all()  # the largest-magnitude entry of every left vector is positive
    # the same product written with other factors gives the same signed vectors
    Q = torch.linalg.qr(torch.randn(6, 6, generator=g))[0]
    U2, S2, Vh2 = factored_svd(-A @ Q, Q.T @ -B)
    torch.testing.assert_close(U2, U, atol=1e-5, rtol=0)
    torch.testing.assert_close(Vh2, Vh, atol=1e-5, rtol=0)
    assert torch.equal(factored_svd(A, B).Vh, Vh)


def test_factored_svd_rejects_mismatched_factors():
    with pytest.raises(ValueError, match="same leading axes"):
        factored_svd(torch.randn(10, 4), torch.randn(3, 10))


# -- read-out -----------------------------------------------------------------------------------------
def test_readout_applies_full_layernorm_projection_and_centring():
    g = torch.Generator().manual_seed(2)
    d, p = 32, 12
    ln_w, ln_b, W = torch.rand(d, generator=g) + 0.5, 0.3 * torch.randn(d, generator=g), torch.randn(d, p, generator=g)
    mean = 0.2 * F.normalize(torch.randn(p, generator=g), dim=0)
    v = torch.randn(5, d, generator=g)
    v = F.normalize(v - v.mean(-1, keepdim=True), dim=-1)  # zero-mean unit vectors, like singular vectors
    by_hand = F.normalize((d**0.5 * v * ln_w + ln_b) @ W, dim=-1)  # LN(v) = sqrt(d) v for such v
    torch.testing.assert_close(JointReadout(ln_w, ln_b, 1e-12, W)(v), by_hand, atol=1e-5, rtol=0)
    centred = JointReadout(ln_w, ln_b, 1e-12, W, image_mean=mean)(v)
    torch.testing.assert_close(centred, F.normalize(by_hand - mean, dim=-1), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="image_mean must have shape"):
        JointReadout(ln_w, ln_b, 1e-5, W, image_mean=torch.zeros(p + 1))


def test_readout_centering_modes(toy, tiny):
    assert toy.image_mean is not None and toy.image_mean.shape == (toy.cfg.d_proj,)
    assert joint_readout(toy).image_mean is not None  # auto: the shipped mean
    assert joint_readout(toy, "none").image_mean is None
    assert tiny.image_mean is None
    assert joint_readout(tiny).image_mean is None  # auto without a mean: data-free
    with pytest.raises(ValueError, match="image_mean=sl.image_mean"):
        joint_readout(tiny, "image")
    mu = sl.image_mean(tiny, torch.randn(5, 3, 32, 32), batch_size=2, progress=False)
    torch.testing.assert_close(joint_readout(tiny, "image", image_mean=mu).image_mean, mu)


def test_image_mean_is_the_mean_of_normalised_embeddings(tiny):
    pixels = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    mu = sl.image_mean(tiny, pixels, batch_size=2, progress=False)
    with torch.no_grad():
        torch.testing.assert_close(mu, tiny.encode_image(pixels, normalize=True).mean(0), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="at least one image"):
        sl.image_mean(tiny, [])


# -- concept dictionary -------------------------------------------------------------------------------
def test_concept_dictionary_centres_and_caches(tiny, tmp_path, monkeypatch):
    calls = []
    original = tiny.encode_text

    def counting(texts, normalize=False):
        calls.append(len(texts))
        return original(texts, normalize=normalize)

    monkeypatch.setattr(tiny, "tokenizer", _WordTokenizer(), raising=False)
    monkeypatch.setattr(tiny, "encode_text", counting)
    words = ["red", "blue", "dog", "cat", "tree"]
    d1 = ConceptDictionary.from_vocab(tiny, words, batch_size=2, progress=False)
    assert sum(calls) == 5 and len(calls) == 3  # batches of 2
    d2 = ConceptDictionary.from_vocab(tiny, words, progress=False)
    assert sum(calls) == 5  # second time from the cache
    torch.testing.assert_close(d1.embeddings, d2.embeddings)
    assert len(list((tmp_path / "cache" / "concepts").glob("*.safetensors"))) == 1
    ConceptDictionary.from_vocab(tiny, words, templates=["a photo of {}."], progress=False)
    assert sum(calls) == 10  # templates change the key
    atoms, mean = center_atoms(d1.embeddings)
    torch.testing.assert_close(d1.atoms, atoms)
    torch.testing.assert_close(d1.atoms.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(F.normalize(d1.embeddings, dim=-1), d1.embeddings)
    assert d1.index("dog") == 2
    with pytest.raises(KeyError, match="not in this dictionary"):
        d1.index("dgo")
    assert not ConceptDictionary.from_vocab(tiny, words, centered=False, progress=False).centered


class _WordTokenizer:
    """A minimal tokenizer for the random tiny model (ids from a hash of each word)."""

    def __len__(self):
        return 99

    def __call__(self, texts, padding=True, truncation=True, max_length=12, return_tensors="pt"):
        ids = [[3 + sum(map(ord, w)) % 90 for w in t.split()][: max_length - 1] + [98] for t in texts]
        n = max(map(len, ids))
        return {
            "input_ids": torch.tensor([i + [0] * (n - len(i)) for i in ids]),
            "attention_mask": torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i in ids]),
        }


def test_concept_cache_is_keyed_by_model(toy, tmp_path):
    d = ConceptDictionary.from_vocab(toy, ["red", "blue"], progress=False)
    other = copy.deepcopy(toy)
    with torch.no_grad():
        other.text.W_proj.mul_(2.0)
    assert text_fingerprint(other) != d.fingerprint
    ConceptDictionary.from_vocab(other, ["red", "blue"], progress=False)
    assert len(list((tmp_path / "cache" / "concepts").glob("*.safetensors"))) == 2


def test_vocabulary_sources(toy, tmp_path, caplog):
    path = tmp_path / "v.txt"
    path.write_text("red\n\nblue\nred\n  dog \n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        d = ConceptDictionary.from_vocab(toy, path, progress=False)
    assert d.concepts == ["red", "blue", "dog"]
    assert "dropped 1 blank and 1 duplicate" in caplog.text
    with pytest.raises(ValueError, match="empty"):
        ConceptDictionary.from_vocab(toy, ["", "  "], progress=False)
    with pytest.raises(ValueError, match="unknown vocabulary"):
        ConceptDictionary.from_vocab(toy, "no-such-vocab", progress=False)
    english = sl.load_vocabulary("english")
    assert len(english) >= 20_000 and len(set(english)) == len(english)
    assert "red car" in english and "water" in english and "the" not in english


def test_dictionary_save_and_load(toy, tmp_path):
    d = ConceptDictionary.from_vocab(toy, "toy", progress=False)
    d.save(tmp_path / "d.safetensors")
    back = ConceptDictionary.load(tmp_path / "d.safetensors")
    assert back.concepts == d.concepts and back.fingerprint == d.fingerprint and back.centered
    torch.testing.assert_close(back.atoms, d.atoms)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read a concept dictionary"):
        ConceptDictionary.load(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="does not exist"):
        d.save(tmp_path / "missing" / "d.safetensors")


def test_concepts_the_tokenizer_does_not_know_are_flagged(toy, caplog):
    with caplog.at_level(logging.WARNING):
        ConceptDictionary.from_vocab(toy, ["red", "zebra", "quasar", "teapot"], progress=False)
    assert "3 of 4 concepts share their embedding" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ConceptDictionary.from_vocab(toy, "toy", progress=False)
    assert "share their embedding" not in caplog.text


def test_bad_templates_are_rejected(toy):
    with pytest.raises(ValueError, match="no '\\{\\}'"):
        ConceptDictionary.from_vocab(toy, ["red"], templates=["a photo"], progress=False)


# -- explain_heads ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_result(toy, tmp_path_factory):
    import os

    os.environ["SITH_LENS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    concepts = ConceptDictionary.from_vocab(toy, "toy", progress=False)
    return concepts, explain_heads(toy, concepts, layers=[-2, -1], k=5, lam=0.3, progress=False)


def test_explain_heads_result(toy, toy_result):
    concepts, r = toy_result
    H, e = toy.vision.cfg.n_heads, toy.vision.cfg.d_head
    assert r.layers == [4, 5] and r.n_heads == H and r.centering == "image"
    assert r.singular_values.shape == (2, H, e) and r.indices.shape == r.coefs.shape == (2, H, e, 5)
    assert (r.coefs >= 0).all() and (r.singular_values[..., :-1] >= r.singular_values[..., 1:]).all()
    # fidelity and cosine are recomputed here from the stored codes, by hand
    _, S, Vh = head_svd(toy, [5])
    torch.testing.assert_close(r.singular_values[1], S[0])
    ro = joint_readout(toy)
    z = ro(Vh[0, 3])  # head 3 of the last layer
    atom = {c: concepts.atoms[concepts.index(c)] for c in r.concepts}
    recon = torch.stack([
        sum(w * atom[r.concepts[j]] for j, w in zip(r.indices[1, 3, i].tolist(), r.coefs[1, 3, i].tolist()))
        for i in range(e)
    ])
    recon = F.normalize(recon, dim=-1)
    torch.testing.assert_close(r.cosine[1, 3], (recon * z).sum(-1), atol=1e-5, rtol=0)
    back = F.normalize(F.normalize(recon + toy.image_mean, dim=-1) @ torch.linalg.pinv(toy.vision.W_proj.detach()),
                       dim=-1)
    torch.testing.assert_close(r.fidelity[1, 3], (back * Vh[0, 3]).sum(-1), atol=1e-4, rtol=0)
    head = r.head(-1, 3)
    assert head.layer == 5 and len(head.vectors) == e
    assert all(c in concepts.concepts and w > 0 for c, w in head.vectors[0].concepts)
    assert "L5 H3" in str(head)


def test_find_and_heads_for(toy_result):
    _, r = toy_result
    concept = r.concepts[int(r.indices[0, 0, 0, 0])]
    hits = r.find(concept)
    assert hits and all(r.head(h.layer, h.head).vectors[h.index].concepts for h in hits)
    assert [h.coef for h in hits] == sorted((h.coef for h in hits), reverse=True)
    assert (4, 0) in [(layer, head) for layer, head, _ in r.heads_for(concept, top=100)]
    assert r.find("no such concept") == []


def test_json_round_trip_and_dataframe(toy_result, tmp_path):
    _, r = toy_result
    path = tmp_path / "r.json"
    r.to_json(path)
    back = SITHResult.from_json(path)
    assert back.layers == r.layers and back.concepts == r.concepts and back.method == "comp"
    assert torch.equal(back.indices, r.indices)
    torch.testing.assert_close(back.coefs, r.coefs)
    assert str(back.head(5, 2)) == str(r.head(5, 2))
    df = r.to_dataframe()
    assert len(df) == r.indices.numel()
    row = df[(df["layer"] == 5) & (df["head"] == 2) & (df["vector"] == 0) & (df["pick"] == 0)].iloc[0]
    assert row.concept == r.concepts[int(r.indices[1, 2, 0, 0])]
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a SITH result"):
        SITHResult.from_json(tmp_path / "bad.json")


def _damaged(d, key, value):
    d = copy.deepcopy(d)
    if value is KeyError:
        del d[key]
    else:
        d[key] = value
    return d


@pytest.mark.parametrize("key, value, message", [
    (None, [], "not a SITH result .*a JSON list"),
    ("coefs", KeyError, r"lacks \['coefs'\]"),
    ("indices", "many", "'indices' is not a rectangular array"),
    ("coefs", [[1.0], [2.0, 3.0]], "'coefs' is not a rectangular array"),
    ("layers", [0, 99], "layers must be distinct layer numbers in 0..5"),
    ("layers", [5], r"singular_values must be \[1 layers"),
    ("k", True, "k must be a positive integer"),
    ("lam", "0.3", "lam must be a finite number"),
    ("concepts", ["red"], "indices must point into the 1 concepts"),
    ("fidelity", [[1.0]], r"fidelity must have shape \[2, 8, 16\]"),
])
def test_a_damaged_result_file_is_refused_naming_the_field(toy_result, tmp_path, key, value, message):
    """from_json used to check only the format tag: lists, missing keys, bad shapes and indices
    gave tracebacks deep inside torch, or were used for edits."""
    _, r = toy_result
    d = r.to_dict()
    d = [] if key is None else _damaged(d, key, value)
    (tmp_path / "r.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=message):
        SITHResult.from_json(tmp_path / "r.json")


def test_a_result_with_nan_coefficients_is_refused(toy_result, tmp_path):
    _, r = toy_result
    d = r.to_dict()
    d["coefs"][0][0][0][0] = float("nan")
    (tmp_path / "r.json").write_text(json.dumps(d))  # json writes NaN, Python reads it back
    with pytest.raises(ValueError, match="coefs holds NaN or infinite values"):
        SITHResult.from_json(tmp_path / "r.json")


def test_explain_heads_is_deterministic_and_methods_differ(toy, toy_result):
    concepts, r = toy_result
    again = explain_heads(toy, concepts, layers=[4, 5], progress=False)
    assert torch.equal(again.indices, r.indices) and again.concepts == r.concepts
    on_cpu = explain_heads(toy, concepts, layers=[4, 5], device="cpu", progress=False)
    assert torch.equal(on_cpu.indices, r.indices)
    nnomp = explain_heads(toy, concepts, layers=[5], method="nnomp", progress=False)
    assert nnomp.lam == 0.0 and nnomp.method == "nnomp"
    left = explain_heads(toy, concepts, layers=[5], side="left", centering="none", progress=False)
    assert left.side == "left" and left.centering == "none"


def test_explain_heads_rejects_bad_input(toy, toy_result, tiny):
    concepts, _ = toy_result
    with pytest.raises(ValueError, match="out of range"):
        explain_heads(toy, concepts, layers=[6], progress=False)
    with pytest.raises(ValueError, match="larger than the dictionary"):
        explain_heads(toy, concepts, layers=[5], k=len(concepts) + 1, progress=False)
    with pytest.raises(ValueError, match="lam must be"):
        explain_heads(toy, concepts, layers=[5], lam=-1.0, progress=False)
    with pytest.raises(ValueError, match="unknown method"):
        explain_heads(toy, concepts, method="lasso", progress=False)
    with pytest.raises(TypeError, match="ConceptDictionary"):
        explain_heads(toy, ["red"], progress=False)
    with pytest.raises(TypeError, match="HookedCLIP"):
        explain_heads(toy.vision, concepts, progress=False)
    with pytest.raises(ValueError, match="width"):
        explain_heads(tiny, concepts, progress=False)
    broken = copy.deepcopy(toy)
    with torch.no_grad():
        broken.vision.blocks[5].attn.W_V[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        explain_heads(broken, concepts, layers=[5], progress=False)


def test_layer_parsing():
    assert resolve_layers(None, 4) == [0, 1, 2, 3]
    assert resolve_layers([-1, 0, 3], 4) == [0, 3]
    assert parse_layers("-4:", 12) == [8, 9, 10, 11]
    assert parse_layers("0,3,-1", 12) == [0, 3, 11]
    assert parse_layers("all", 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="bad layers"):
        parse_layers("x:y", 12)
    with pytest.raises(ValueError, match="out of range"):
        parse_layers("12", 12)


# -- command line and report --------------------------------------------------------------------------
def test_cli_explain_writes_json_and_report(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "SITH_LENS_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "sith_lens.cli", "explain", "--layers", "-1:", "--k", "3", "--out", str(out)],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "explaining heads" in proc.stderr  # progress bar
    assert "L5  H0" in proc.stdout and "mean fidelity" in proc.stdout
    result = SITHResult.from_json(out / "sith.json")
    assert result.layers == [5] and result.k == 3 and result.vocabulary_size == len(sl.load_vocabulary("toy"))
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Plotly.newPlot" in html and "L5 H7" in html and "<script src=" not in html  # self-contained
    top = result.head(5, 0).vectors[0].concepts[0][0]
    assert top in html
    bad = subprocess.run([sys.executable, "-m", "sith_lens.cli", "explain", "--layers", "9", "--out", str(out)],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "sith-lens: error: layer 9 is out of range" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_report_rejects_bad_arguments(toy_result, tmp_path):
    from sith_lens.report import write_html_report

    _, r = toy_result
    with pytest.raises(ValueError, match="top_vectors"):
        write_html_report(r, tmp_path / "r.html", top_vectors=0)
    with pytest.raises(ValueError, match="does not exist"):
        write_html_report(r, tmp_path / "missing" / "r.html")
    path = write_html_report(r, tmp_path / "r.html", top_vectors=2)
    assert path.stat().st_size > 100_000 and oct(path.stat().st_mode & 0o777) != "0o600"
