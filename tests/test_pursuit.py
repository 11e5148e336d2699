"""COMP and its baselines against simple per-vector references written here, and NNLS vs scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import nnls as scipy_nnls

from sith_lens import pursuit
from sith_lens.pursuit import METHODS, SparseCodes, comp, mp, nnls_gram, nnomp, omp, pursue, topk


def unit(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1).to(dtype)


def targets_near(atoms, n, seed=1):
    """Targets that are mixtures of a few atoms plus noise, so pursuits have something to find."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, atoms.shape[0], (n, 3), generator=g)
    w = torch.rand(n, 3, generator=g, dtype=torch.float64).to(atoms.dtype)
    noise = 0.05 * torch.randn(n, atoms.shape[1], generator=g, dtype=torch.float64).to(atoms.dtype)
    return F.normalize(torch.einsum("nk,nkd->nd", w, atoms[idx]) + noise, dim=-1)


def reference_comp(z: np.ndarray, A: np.ndarray, k: int, lam: float):
    """COMP for one vector, straight from sith_spec §3.2, with scipy's NNLS."""
    S: list[int] = []
    c = np.zeros(0)
    r = z.copy()
    for _ in range(k):
        score = A @ r
        if S:
            score = score + lam * (A @ A[S].mean(0))
        score[S] = -np.inf
        S.append(int(np.argmax(score)))
        c, _ = scipy_nnls(A[S].T.astype(np.float64), z.astype(np.float64))
        r = z - A[S].T @ c
    return S, c


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_batched_comp_equals_per_vector_reference(dtype, lam):
    atoms = unit(300, 32, dtype=dtype)
    Z = targets_near(atoms, 40)
    codes = comp(Z, atoms, k=6, lam=lam)
    assert codes.indices.dtype == torch.long and codes.coefs.dtype == dtype
    assert codes.indices.shape == codes.coefs.shape == (40, 6)
    for b in range(40):
        S, c = reference_comp(Z[b].double().numpy(), atoms.double().numpy(), 6, lam)
        assert codes.indices[b].tolist() == S
        np.testing.assert_allclose(codes.coefs[b].double().numpy(), c, atol=1e-5)


@pytest.fixture
def force_bf16(monkeypatch):
    """Take the bfloat16 scoring path whatever the CPU (it is only slower where bf16 is not native)."""
    monkeypatch.setattr(pursuit, "_use_bf16", lambda x, precision: precision == "auto" and x.dtype == torch.float32)


def clustered_atoms(n_clusters, per_cluster, dim, spread, seed):
    """Tight clusters of atoms: many near-ties, so the bfloat16 path must escalate and fall back."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g).repeat_interleave(per_cluster, 0)
    return F.normalize(centres + spread * torch.randn(centres.shape, generator=g), dim=-1)


def test_fast_scoring_gives_the_exact_answer(force_bf16):
    """The bfloat16 scoring path (used for float32 where it is fast) must not change any pick."""
    for atoms in (unit(5000, 64, seed=3), clustered_atoms(100, 50, 64, 0.02, seed=4)):
        Z = targets_near(atoms, 300, seed=4)
        fast = comp(Z, atoms, k=5, lam=0.3, precision="auto")
        exact = comp(Z, atoms, k=5, lam=0.3, precision="exact")
        assert torch.equal(fast.indices, exact.indices)
        torch.testing.assert_close(fast.coefs, exact.coefs)
        assert torch.equal(omp(Z, atoms, k=4).indices, omp(Z, atoms, k=4, precision="exact").indices)


def test_scorer_certifies_escalates_and_falls_back(force_bf16):
    atoms = clustered_atoms(40, 100, 32, 0.002, seed=5)  # near-duplicates: bfloat16 cannot separate them
    scorer = pursuit._Scorer(atoms, "auto")
    assert scorer.low is not None
    g = torch.Generator().manual_seed(6)
    q = targets_near(atoms, 500, seed=7)
    exclude = torch.randint(0, 4000, (500, 3), generator=g)
    got = scorer.best(q, exclude)
    want = (q @ atoms.T).scatter(1, exclude, -torch.inf).argmax(1)
    assert torch.equal(got, want)
    assert scorer.escalated_rows > 0 and scorer.fallback_rows > 0
    assert not (got[:, None] == exclude).any()


def test_scorer_stops_using_bf16_once_it_no_longer_pays_and_picks_stay_exact(force_bf16):
    """Near-duplicate atoms (synonyms): most rows fall back, so after the probe block the scorer
    scores exactly instead of paying for a bfloat16 pass and a re-check on every row."""
    atoms = clustered_atoms(40, 100, 32, 0.002, seed=5)
    scorer = pursuit._Scorer(atoms, "auto", block=64)
    q = targets_near(atoms, 400, seed=7)
    no_exclusion = torch.zeros(400, 0, dtype=torch.long)
    got = scorer.best(q, no_exclusion)
    assert torch.equal(got, (q @ atoms.T).argmax(1))
    assert scorer.rows_seen == 64 and scorer.fallback_rows > 32  # probed one block, then gave up
    scorer.best(q, no_exclusion)
    assert scorer.rows_seen == 64
    # a dictionary where the shortcut works keeps using it
    easy = pursuit._Scorer(unit(5000, 64, seed=3), "auto", block=64)
    easy.best(targets_near(easy.atoms, 400, seed=4), no_exclusion)
    assert easy.rows_seen == 400 and easy.fallback_rows < 40


def test_near_ties_within_float32_round_off_are_left_to_the_exact_path(force_bf16):
    """Winners that beat the runner-up by less than float32 round-off would depend on the order of
    the sums; the fast path must hand those to the exact product so that the picks are identical."""
    g = torch.Generator().manual_seed(11)
    centres = F.normalize(torch.randn(400, 128, generator=g), dim=-1).repeat_interleave(10, 0)
    atoms = F.normalize(centres + 0.05 * F.normalize(torch.randn(centres.shape, generator=g), dim=-1), dim=-1)
    Z = targets_near(atoms, 1000, seed=12)
    fast, exact = comp(Z, atoms, k=5, precision="auto"), comp(Z, atoms, k=5, precision="exact")
    assert torch.equal(fast.indices, exact.indices)


def test_lambda_zero_is_nnomp_and_coherence_changes_picks():
    atoms = unit(400, 24, seed=5)
    Z = targets_near(atoms, 50, seed=6)
    a, b = comp(Z, atoms, k=5, lam=0.0), nnomp(Z, atoms, k=5)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.coefs, b.coefs)
    assert not torch.equal(comp(Z, atoms, k=5, lam=2.0).indices, a.indices)
    # the first pick is the same for every lam (the coherence term starts at the second pick)
    assert torch.equal(comp(Z, atoms, k=5, lam=2.0).indices[:, 0], a.indices[:, 0])


def test_exactly_k_distinct_picks_and_non_negative_codes():
    atoms = unit(50, 8, seed=7)
    Z = targets_near(atoms, 30, seed=8)
    codes = comp(Z, atoms, k=8, lam=0.3)
    assert all(len(set(row)) == 8 for row in codes.indices.tolist())
    assert (codes.coefs >= 0).all()
    assert (codes.coefs == 0).any()  # with 8 picks in 8 dims some atoms end at exactly zero


@pytest.mark.parametrize("seed", range(5))
def test_nnls_matches_scipy(seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(64, 7, 20, generator=g, dtype=torch.float64)  # 64 problems, 7 atoms, D = 20
    z = torch.randn(64, 20, generator=g, dtype=torch.float64)
    c = nnls_gram(A @ A.transpose(1, 2), torch.einsum("bsd,bd->bs", A, z))
    for i in range(64):
        ref, _ = scipy_nnls(A[i].T.numpy(), z[i].numpy())
        np.testing.assert_allclose(c[i].numpy(), ref, atol=1e-9)


def test_nnls_warm_start_gives_the_same_optimum():
    g = torch.Generator().manual_seed(11)
    A = torch.randn(32, 5, 12, generator=g, dtype=torch.float64)
    z = torch.randn(32, 12, generator=g, dtype=torch.float64)
    G, b = A @ A.transpose(1, 2), torch.einsum("bsd,bd->bs", A, z)
    smaller = nnls_gram(G[:, :4, :4], b[:, :4])
    warm = nnls_gram(G, b, init=torch.cat([smaller, torch.zeros(32, 1, dtype=torch.float64)], 1))
    torch.testing.assert_close(warm, nnls_gram(G, b))


def reference_omp(z, A, k):
    S = []
    for _ in range(k):
        r = z - (A[S].T @ np.linalg.lstsq(A[S].T, z, rcond=None)[0] if S else 0)
        score = np.abs(A @ r)
        score[S] = -np.inf
        S.append(int(np.argmax(score)))
    return S, np.linalg.lstsq(A[S].T, z, rcond=None)[0]


def test_baselines_match_their_definitions():
    atoms = unit(200, 16, seed=9, dtype=torch.float64)
    Z = targets_near(atoms, 20, seed=10)
    A = atoms.numpy()
    o, m, t = omp(Z, atoms, k=4), mp(Z, atoms, k=4), topk(Z, atoms, k=4)
    for b in range(20):
        z = Z[b].numpy()
        S, c = reference_omp(z, A, 4)
        assert o.indices[b].tolist() == S
        np.testing.assert_allclose(o.coefs[b].numpy(), c, atol=1e-8)
        # matching pursuit: correlation as coefficient, deflation, no refit, repeats allowed
        r, picks, coefs = z.copy(), [], []
        for _ in range(4):
            j = int(np.argmax(A @ r))
            cj = max(float(A[j] @ r), 0.0) if float(A[j] @ r) > 1e-6 else 0.0
            picks.append(j), coefs.append(cj)
            r = r - cj * A[j]
        assert m.indices[b].tolist() == picks
        np.testing.assert_allclose(m.coefs[b].numpy(), coefs, atol=1e-10)
        best = np.argsort(-(A @ z))[:4]
        assert t.indices[b].tolist() == best.tolist()
        np.testing.assert_allclose(t.coefs[b].numpy(), scipy_nnls(A[best].T, z)[0], atol=1e-8)


def test_sparse_codes_dense_and_reconstruction():
    atoms = unit(10, 4, seed=12)
    codes = SparseCodes(torch.tensor([[1, 3, 1]]), torch.tensor([[0.5, 0.2, 0.25]]))
    dense = codes.to_dense(10)
    assert dense[0, 1].item() == pytest.approx(0.75) and dense[0, 3].item() == pytest.approx(0.2)
    torch.testing.assert_close(codes.reconstruct(atoms), dense @ atoms)


def test_pursue_dispatches_every_method():
    atoms = unit(100, 8, seed=13)
    Z = targets_near(atoms, 5)
    assert set(METHODS) == {"comp", "nnomp", "omp", "mp", "topk"}
    for name in METHODS:
        assert pursue(Z, atoms, name, k=3).indices.shape == (5, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(k=101), "larger than the dictionary"),
        (dict(k=0), "positive integer"),
        (dict(k=True), "positive integer"),
        (dict(k=2.0), "positive integer"),
        (dict(lam=-0.1), "lam must be"),
        (dict(lam=float("nan")), "lam must be"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    atoms = unit(100, 8)
    with pytest.raises(ValueError, match=message):
        comp(atoms[:2], atoms, **{"k": 5, "lam": 0.3, **kwargs})


def test_no_targets_give_empty_codes():
    atoms = unit(100, 8)
    for name in METHODS:
        codes = pursue(atoms[:0], atoms, name, k=3)
        assert codes.indices.shape == codes.coefs.shape == (0, 3)


def test_bad_tensors_are_rejected():
    atoms = unit(100, 8)
    bad = atoms[:2].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        comp(bad, atoms)
    with pytest.raises(ValueError, match="same D"):
        comp(unit(2, 7), atoms)
    with pytest.raises(ValueError, match="dtype"):
        comp(atoms[:2].double(), atoms)
    with pytest.raises(ValueError, match="unknown method"):
        pursue(atoms[:2], atoms, "lasso")
    for name in METHODS:  # scores compare cosines: atoms of other lengths would silently bias the picks
        with pytest.raises(ValueError, match=r"atoms must be unit vectors.*from 1 to 3.*normalize\(atoms, dim=-1\)"):
            pursue(atoms[:2], torch.cat([atoms[:50], 3 * atoms[50:]]), name, k=2)
