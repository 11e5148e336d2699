"""Sparse codes over a concept dictionary: COMP and its baselines, batched (sith_spec §3).

Every method has one interface, ``method(targets [B, D], atoms [M, D], k, ...) -> SparseCodes`` with
``indices [B, k]`` (atoms in selection order) and ``coefs [B, k]`` (zeros allowed). ``pursue``
dispatches by name; ``METHODS`` lists them.

* ``comp``: Coherent OMP. Pick ``argmax_j <r, a_j> + lam * <mean of selected atoms, a_j>`` (the
  second term from the second pick on), never re-pick, refit non-negative least squares on the
  whole support after every pick, exactly ``k`` picks.
* ``nnomp``: COMP with ``lam = 0``.
* ``omp``: classic OMP: largest ``|<r, a_j>|``, unconstrained least-squares refit (signed codes).
* ``mp``: non-negative matching pursuit: coefficient = correlation, residual deflation, no refit;
  an atom may be picked again (its index then repeats; ``to_dense`` sums the repeats).
* ``topk``: the ``k`` atoms most similar to the target, with NNLS coefficients.

Speed. Both COMP terms are linear in the candidate, so each pick scores all atoms with *one*
product ``(r + lam * m) @ atoms.T``. For float32 inputs on hardware with fast bfloat16 matrix
products, that product runs in bfloat16; the best ``n_candidates`` are then re-scored in the input
precision, and a rigorous bound on the bfloat16 error proves that the winner is the exact argmax.
Rows where the bound cannot prove it (or where the winner is within float32 round-off of the
runner-up) are re-scored in full precision. The answer is therefore the one the exact computation
gives; ``precision="exact"`` skips the shortcut. On dictionaries of near-duplicate atoms the bound
fails for most rows; the scorer counts what the shortcut costs and switches to exact scoring once it
stops paying, so ``"auto"`` is never much slower than ``"exact"`` (``benchmarks/comp_speed.py``).
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Literal, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .defaults import EXPLAIN

Precision = Literal["auto", "exact"]
#: How far from 1 an atom's norm may be (round-off of normalised float16/bfloat16 atoms is ~1e-3).
UNIT_TOLERANCE = 1e-2


class SparseCodes(NamedTuple):
    """Sparse codes of ``B`` targets over ``M`` atoms, ``k`` picks each."""

    indices: Int[Tensor, "batch k"]
    """Atom indices in the order they were picked."""
    coefs: Float[Tensor, "batch k"]
    """Coefficient of each pick (non-negative except for ``omp``; a pick may end at exactly 0)."""

    def to_dense(self, n_atoms: int) -> Float[Tensor, "batch n_atoms"]:
        """Dense codes ``[B, M]`` (repeated indices, possible with ``mp``, are summed).

        Example:
            >>> SparseCodes(torch.tensor([[2, 0]]), torch.tensor([[0.5, 0.25]])).to_dense(3).tolist()
            [[0.25, 0.0, 0.5]]
        """
        dense = torch.zeros(self.coefs.shape[0], n_atoms, dtype=self.coefs.dtype, device=self.coefs.device)
        return dense.scatter_add_(1, self.indices, self.coefs)

    def reconstruct(self, atoms: Float[Tensor, "M D"]) -> Float[Tensor, "batch D"]:
        """``sum_k coefs[:, k] * atoms[indices[:, k]]``."""
        return torch.einsum("bk,bkd->bd", self.coefs.to(atoms.dtype), atoms[self.indices])


# --------------------------------------------------------------------------------------------------
# non-negative least squares on small Gram systems
# --------------------------------------------------------------------------------------------------
def _solve_on(G: Tensor, b: Tensor, passive: Tensor) -> Tensor:
    """Least squares restricted to ``passive`` (zeros elsewhere), batched, for SPD ``G``."""
    s = b.shape[-1]
    eye = torch.eye(s, dtype=G.dtype, device=G.device)
    both = passive[:, :, None] & passive[:, None, :]
    Gm = torch.where(both, G, eye) + 1e-12 * eye * G.diagonal(dim1=-2, dim2=-1).amax(-1, keepdim=True)[..., None]
    bm = torch.where(passive, b, torch.zeros_like(b))
    return torch.where(passive, torch.linalg.solve(Gm, bm), torch.zeros_like(b))


def nnls_gram(
    G: Float[Tensor, "batch s s"],
    b: Float[Tensor, "batch s"],
    init: Float[Tensor, "batch s"] | None = None,
) -> Float[Tensor, "batch s"]:
    """``argmin_{c >= 0} c^T G c - 2 b^T c`` for each row: NNLS given ``G = A A^T`` and ``b = A z``.

    Batched Lawson-Hanson active-set method in float64 (exact up to round-off, unlike a fixed number
    of coordinate-descent sweeps). ``init`` may warm-start it with a previous optimum on a smaller
    support (its positive entries become the initial passive set). Returns ``b``'s dtype.

    Example:
        >>> A = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]); z = torch.tensor([[2.0, -1.0]])
        >>> nnls_gram(A @ A.mT, (A @ z[..., None])[..., 0]).tolist()
        [[2.0, 0.0]]
    """
    dtype = b.dtype
    G, b = G.double(), b.double()
    n, s = b.shape
    if init is None:
        x = torch.zeros_like(b)
        passive = torch.zeros(n, s, dtype=torch.bool, device=b.device)
    else:
        passive = init.double() > 0
        x = _solve_on(G, b, passive)
        passive &= x > 0  # a warm start that is no longer feasible restarts those entries at 0
        x = torch.where(passive, x, torch.zeros_like(x))
    tol = 1e-12 * b.abs().amax(-1).clamp_min(1e-300)
    for _ in range(3 * s + 10):
        w = b - (G @ x[..., None])[..., 0]
        w = torch.where(passive, torch.full_like(w, -torch.inf), w)
        w_best, j = w.max(-1)
        active = w_best > tol
        if not active.any():
            break
        passive = passive | (active[:, None] & torch.nn.functional.one_hot(j, s).bool())
        inner = active.clone()
        for _ in range(s + 1):
            z = _solve_on(G, b, passive)
            infeasible = (passive & (z <= 0)).any(-1)
            done = inner & ~infeasible
            x = torch.where(done[:, None], z, x)
            inner = inner & infeasible
            if not inner.any():
                break
            ratio = torch.where(passive & (z <= 0), x / (x - z), torch.full_like(x, torch.inf))
            alpha = ratio.amin(-1, keepdim=True).clamp(0, 1)
            x = torch.where(inner[:, None], x + alpha * (z - x), x)
            passive = passive & ~(inner[:, None] & (x <= 1e-15))
            x = torch.where(passive, x, torch.zeros_like(x))
    return x.to(dtype)


def lstsq_gram(G: Float[Tensor, "batch s s"], b: Float[Tensor, "batch s"]) -> Float[Tensor, "batch s"]:
    """Unconstrained least squares from the Gram form (float64 inside)."""
    passive = torch.ones_like(b, dtype=torch.bool)
    return _solve_on(G.double(), b.double(), passive).to(b.dtype)


# --------------------------------------------------------------------------------------------------
# scoring: exact, or bfloat16 with an exact re-check
# --------------------------------------------------------------------------------------------------
BF16_UNIT_ROUNDOFF = 2.0**-8
#: Cost of one bfloat16 candidate pass relative to one exact score pass (measured about 0.4-0.5 on
#: CPUs with AVX-512 BF16; the value only decides when the scorer gives up on the shortcut).
BF16_PASS_COST = 0.5
#: Score products of fewer rows are padded to this many: BLAS computes a 1-7 row product with
#: kernels that sum in another order, so a row's exact scores (and near-tie winners) would depend
#: on how many rows it was scored with.
MIN_GEMM_ROWS = 8


@functools.lru_cache(maxsize=None)
def _cpu_has_fast_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _use_bf16(x: Tensor, precision: Precision) -> bool:
    if precision == "exact" or x.dtype != torch.float32 or os.environ.get("SITH_LENS_EXACT_SCORES"):
        return False
    if x.device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return x.device.type == "cpu" and _cpu_has_fast_bf16()


class _Scorer:
    """Finds, per row, the atom with the largest ``<q, a>`` (or ``|<q, a>|``) outside an excluded set.

    Scores are computed in row blocks into one reused buffer (large fresh allocations cost more
    than the products themselves on CPU). The low-precision path finds its candidates in two
    steps, which is cheaper than a top-k over every atom: the maxima of groups of ``GROUP`` atoms,
    the best ``n_candidates`` groups, then the best ``n_candidates`` atoms inside them. Those are
    exactly the row's top ``n_candidates`` scores (each of the top scores lies in a group whose
    maximum is at least as large).
    """

    GROUP = 64

    def __init__(self, atoms: Tensor, precision: Precision, n_candidates: int = 6, block: int = 512):
        self.atoms = atoms
        self.n_candidates = n_candidates
        self.block = block
        self.atom_norm = float(atoms.norm(dim=-1).max())
        self.rows_seen = 0  # rows scored through the bfloat16 path
        self.escalated_rows = 0  # of those, rows re-checked with more candidates
        self.escalation_proven = 0  # of those, rows the re-check settled
        self.fallback_rows = 0  # rows that needed a full-precision re-score
        self._buffers: dict = {}
        self.low = None  # bfloat16 atoms, zero-padded to n_groups * GROUP rows
        self.n_groups = 0
        M = atoms.shape[0]
        if _use_bf16(atoms, precision) and M >= 2 * n_candidates * self.GROUP:
            self.n_groups = -(-M // self.GROUP)
            padding = atoms.new_zeros(self.n_groups * self.GROUP - M, atoms.shape[1])
            self.low = torch.cat([atoms, padding]).to(torch.bfloat16)

    def _scores(self, q: Tensor, atoms: Tensor, exclude: Tensor, absval: bool) -> Tensor:
        """``q @ atoms.T`` (``abs``, excluded atoms at -inf) into a reused buffer, valid until the next call."""
        buf = self._buffers.get(atoms.dtype)
        if buf is None or buf.shape[0] < q.shape[0]:
            buf = torch.empty(max(q.shape[0], self.block, MIN_GEMM_ROWS), atoms.shape[0], dtype=atoms.dtype, device=atoms.device)
            self._buffers[atoms.dtype] = buf
        n = q.shape[0]
        if n < MIN_GEMM_ROWS:  # pad: a matrix-vector kernel sums in another order than the blocked product
            q = torch.cat([q, q.new_zeros(MIN_GEMM_ROWS - n, q.shape[1])])
        out = buf[: q.shape[0]]
        torch.matmul(q.to(atoms.dtype), atoms.T, out=out)
        out = out[:n]
        if absval:
            out.abs_()
        out[:, self.atoms.shape[0] :] = -torch.inf  # padding atoms
        if exclude.shape[1]:  # index_put: scatter_ is far slower on CPU here
            out[torch.arange(out.shape[0], device=out.device)[:, None], exclude] = -torch.inf
        return out

    def _exact(self, q: Tensor, exclude: Tensor, absval: bool) -> Tensor:
        return torch.cat([
            self._scores(q[i : i + self.block], self.atoms, exclude[i : i + self.block], absval).argmax(1)
            for i in range(0, q.shape[0], self.block)
        ])

    def _group_maxima(self, s: Tensor) -> Tensor:
        """``[n, n_groups]`` maxima of the strided groups ``{g + i * n_groups : i < GROUP}``, by halving
        the row with elementwise maxima into reused buffers (twice as fast as a grouped ``amax``)."""
        n, width = s.shape
        while width > self.n_groups:
            half = width // 2
            key = (torch.bfloat16, half)
            buf = self._buffers.get(key)
            if buf is None or buf.shape[0] < n:
                buf = self._buffers[key] = torch.empty(max(n, self.block), half, dtype=s.dtype, device=s.device)
            out = buf[:n]
            torch.maximum(s[:, :half], s[:, half:width], out=out)
            s, width = out, half
        return s

    def _candidates(self, q: Tensor, exclude: Tensor, absval: bool, c: int) -> tuple[Tensor, Tensor]:
        """The ``c`` best atoms by bfloat16 score, and those scores, per row."""
        stride = torch.arange(self.GROUP, device=q.device) * self.n_groups
        values, indices = [], []
        for i in range(0, q.shape[0], self.block):
            s = self._scores(q[i : i + self.block], self.low, exclude[i : i + self.block], absval)
            n = s.shape[0]
            groups = self._group_maxima(s).topk(c, dim=1).indices  # [n, c]
            cols = (groups[:, :, None] + stride).reshape(n, c * self.GROUP)
            top = s.gather(1, cols).topk(c, dim=1)
            values.append(top.values.float())
            indices.append(cols.gather(1, top.indices))
        return torch.cat(values), torch.cat(indices)

    def _certified(self, q: Tensor, exclude: Tensor, absval: bool, c: int) -> tuple[Tensor, Tensor]:
        """``(choice, proven)``: the exact best among the ``c`` bfloat16 candidates, and whether the
        error bounds prove that the exact path's float32 argmax is that atom too."""
        M = self.atoms.shape[0]
        low_scores, cand = self._candidates(q, exclude, absval, c)
        exact = torch.einsum("bd,bcd->bc", q, self.atoms[cand])
        if absval:
            exact = exact.abs()
        exact = exact.masked_fill(low_scores == -torch.inf, -torch.inf)  # excluded atoms as candidates
        top2 = exact.topk(2, dim=1).values
        top = top2[:, :1]
        # lowest atom index among exact ties, as the exact path's argmax would give
        choice = torch.where(exact == top, cand, torch.full_like(cand, M)).amin(1)
        # Two float32 dot products of length D differ from the real ones by at most D 2^-24 |q| |a|
        # each, and this path sums in another order than the exact path's matrix product: a winner
        # closer than twice that to the runner-up is left to the exact path (near-duplicate atoms).
        fp32 = 2 * q.shape[1] * 2.0**-24 * q.norm(dim=-1) * self.atom_norm
        # An atom outside the candidates scored <= low_scores[:, -1] in bfloat16; its exact score is
        # at most that plus the bfloat16 error: both inputs rounded (2u + u^2), the fp32 sum
        # (D 2^-24), the output rounded (u |score|); plus the float32 margin above.
        u = BF16_UNIT_ROUNDOFF
        last = low_scores[:, -1]
        bound = (2 * u + u * u + q.shape[1] * 2.0**-24) * q.norm(dim=-1) * self.atom_norm + u * last.abs() + 1e-7
        proven = (top[:, 0] > last + bound + fp32) & (top[:, 0] - top2[:, 1] > fp32)
        return choice, proven

    def _low_precision_pays(self) -> bool:
        """Whether, on the rows seen so far, the bfloat16 path cost less than exact scoring.

        Costs are in exact score passes per row: a bfloat16 pass costs ``BF16_PASS_COST``, an
        escalated row one more such pass, a fallback row one exact pass. On dictionaries of
        near-duplicate atoms most rows fall back and the shortcut only adds work; from then on
        this scorer scores exactly (same answers, no extra cost)."""
        if self.rows_seen == 0:
            return True
        spent = BF16_PASS_COST * (self.rows_seen + self.escalated_rows) + self.fallback_rows
        return spent < self.rows_seen

    def _escalation_pays(self) -> bool:
        """Whether re-checking with more candidates has proven enough rows to beat falling back."""
        return self.escalated_rows < 8 or self.escalation_proven > BF16_PASS_COST * self.escalated_rows

    def best(self, q: Float[Tensor, "B D"], exclude: Int[Tensor, "B t"], absval: bool = False) -> Int[Tensor, " B"]:
        if self.low is None or self.n_candidates + exclude.shape[1] >= self.n_groups or not self._low_precision_pays():
            return self._exact(q, exclude, absval)
        if self.rows_seen == 0 and q.shape[0] > self.block:  # probe one block before committing to the shortcut
            head = self.best(q[: self.block], exclude[: self.block], absval)
            return torch.cat([head, self.best(q[self.block :], exclude[self.block :], absval)])
        self.rows_seen += q.shape[0]
        choice, proven = self._certified(q, exclude, absval, self.n_candidates)
        if proven.all():
            return choice
        rows = (~proven).nonzero()[:, 0]
        c = 8 * self.n_candidates
        if c < self.n_groups and self._escalation_pays():  # near-ties (common in late picks): more candidates
            self.escalated_rows += int(rows.numel())
            choice[rows], proven[rows] = self._certified(q[rows], exclude[rows], absval, c)
            self.escalation_proven += int(proven[rows].sum())
            rows = (~proven).nonzero()[:, 0]
        if rows.numel():  # then full precision
            self.fallback_rows += int(rows.numel())
            choice[rows] = self._exact(q[rows], exclude[rows], absval)
        return choice


# --------------------------------------------------------------------------------------------------
# the methods
# --------------------------------------------------------------------------------------------------
METHODS: dict[str, Callable[..., SparseCodes]] = {}


def register(name: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        METHODS[name] = fn
        return fn

    return deco


def _check(targets: Tensor, atoms: Tensor, k: int, lam: float = 0.0) -> None:
    if not isinstance(targets, Tensor) or not isinstance(atoms, Tensor):
        raise TypeError("targets and atoms must be torch tensors")
    if targets.dim() != 2 or atoms.dim() != 2 or targets.shape[1] != atoms.shape[1]:
        raise ValueError(
            f"expected targets [B, D] and atoms [M, D] with the same D, got {tuple(targets.shape)} and "
            f"{tuple(atoms.shape)}"
        )
    if not targets.is_floating_point() or targets.dtype != atoms.dtype:
        raise ValueError(f"targets and atoms must share one floating dtype, got {targets.dtype} and {atoms.dtype}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > atoms.shape[0]:
        raise ValueError(f"k={k} is larger than the dictionary ({atoms.shape[0]} atoms); use k <= {atoms.shape[0]}")
    if not (lam >= 0) or lam == float("inf"):
        raise ValueError(f"lam must be a finite number >= 0 (the paper uses 0.3), got {lam!r}")
    for name, t in (("targets", targets), ("atoms", atoms)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} hold NaN or infinite values; clean them before the pursuit")
    norms = atoms.norm(dim=-1)
    if atoms.shape[0] and not torch.allclose(norms, torch.ones_like(norms), atol=UNIT_TOLERANCE):
        raise ValueError(
            f"atoms must be unit vectors (the scores compare cosines), but their norms range from {float(norms.min()):.4g} "
            f"to {float(norms.max()):.4g}; normalise them with torch.nn.functional.normalize(atoms, dim=-1)"
        )


def _chunked(fn: Callable[[Tensor], SparseCodes], targets: Tensor, chunk_size: int, k: int) -> SparseCodes:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    parts = [fn(targets[i : i + chunk_size]) for i in range(0, targets.shape[0], chunk_size)]
    if not parts:  # no targets
        return SparseCodes(torch.zeros(0, k, dtype=torch.long, device=targets.device), targets.new_zeros(0, k))
    return SparseCodes(torch.cat([p.indices for p in parts]), torch.cat([p.coefs for p in parts]))


def _greedy(
    Z: Tensor, atoms: Tensor, scorer: _Scorer, k: int, lam: float, nonneg: bool, absval: bool
) -> SparseCodes:
    """OMP-family pursuit with an optional coherence bonus; see the module docstring."""
    B = Z.shape[0]
    idx = torch.zeros(B, k, dtype=torch.long, device=Z.device)
    G = torch.zeros(B, k, k, dtype=torch.float64, device=Z.device)
    b = torch.zeros(B, k, dtype=torch.float64, device=Z.device)
    coefs = torch.zeros(B, 0, dtype=torch.float64, device=Z.device)
    R, selected_sum = Z, torch.zeros_like(Z)
    for t in range(k):
        q = R + (lam / t) * selected_sum if (t and lam) else R
        j = scorer.best(q, idx[:, :t], absval=absval)
        idx[:, t] = j
        a = atoms[j]  # [B, D]
        selected_sum = selected_sum + a
        chosen = atoms[idx[:, : t + 1]]  # [B, t+1, D]
        # Gram entries are dot products of D-vectors in the input dtype; only the small systems are float64
        g = torch.einsum("bd,bsd->bs", a, chosen).double()
        G[:, t, : t + 1] = g
        G[:, : t + 1, t] = g
        b[:, t] = (Z * a).sum(-1).double()
        Gt, bt = G[:, : t + 1, : t + 1], b[:, : t + 1]
        if nonneg:
            warm = torch.cat([coefs, torch.zeros_like(coefs[:, :1])], 1)
            coefs = nnls_gram(Gt, bt, init=warm if t else None)
        else:
            coefs = lstsq_gram(Gt, bt)
        R = Z - torch.einsum("bs,bsd->bd", coefs.to(Z.dtype), chosen)
    return SparseCodes(idx, coefs.to(Z.dtype))


def _run_greedy(targets, atoms, k, lam, precision, chunk_size, nonneg: bool, absval: bool) -> SparseCodes:
    _check(targets, atoms, k, lam)
    scorer = _Scorer(atoms, precision)
    run = lambda Z: _greedy(Z, atoms, scorer, k, float(lam), nonneg=nonneg, absval=absval)  # noqa: E731
    return _chunked(run, targets, chunk_size, k)


@register("comp")
def comp(
    targets: Float[Tensor, "B D"],
    atoms: Float[Tensor, "M D"],
    k: int = EXPLAIN.k,
    lam: float = EXPLAIN.lam,
    *,
    precision: Precision = "auto",
    chunk_size: int = 4096,
) -> SparseCodes:
    """Coherent Orthogonal Matching Pursuit (sith_spec §3.2), batched over targets.

    Args:
        targets: unit vectors to explain, ``[B, D]``.
        atoms: unit dictionary atoms, ``[M, D]`` (same dtype as ``targets``).
        k: number of picks (exactly ``k``; coefficients may end at 0).
        lam: coherence weight (0 gives NNOMP; the paper uses 0.3).
        precision: ``"auto"`` scores in bfloat16 where that is fast and re-checks the winner
            exactly; ``"exact"`` scores in the input dtype.
        chunk_size: targets per chunk (bounds the ``[chunk, M]`` score matrix).

    Example:
        >>> atoms = torch.nn.functional.normalize(torch.randn(1000, 64), dim=-1)
        >>> codes = comp(atoms[:3] + 0.1 * atoms[3:6], atoms, k=5, lam=0.3)
        >>> codes.indices.shape, codes.coefs.shape
        (torch.Size([3, 5]), torch.Size([3, 5]))
    """
    return _run_greedy(targets, atoms, k, lam, precision, chunk_size, nonneg=True, absval=False)


@register("nnomp")
def nnomp(
    targets: Float[Tensor, "B D"], atoms: Float[Tensor, "M D"], k: int = 5, lam: float = 0.0, **kwargs
) -> SparseCodes:
    """Non-negative OMP: ``comp`` with ``lam = 0`` (``lam`` is accepted and ignored).

    Example:
        >>> atoms = torch.nn.functional.normalize(torch.randn(100, 16), dim=-1)
        >>> nnomp(atoms[:3] + atoms[3:6], atoms, k=5).indices.shape     # [B, 5]
        torch.Size([3, 5])
    """
    return comp(targets, atoms, k, 0.0, **kwargs)


@register("omp")
def omp(
    targets: Float[Tensor, "B D"],
    atoms: Float[Tensor, "M D"],
    k: int = 5,
    lam: float = 0.0,
    *,
    precision: Precision = "auto",
    chunk_size: int = 4096,
) -> SparseCodes:
    """Classic (signed) OMP: largest ``|correlation|``, unconstrained refit; codes may be negative.

    Example:
        >>> atoms = torch.nn.functional.normalize(torch.randn(100, 16), dim=-1)
        >>> omp(atoms[:3] - atoms[3:6], atoms, k=5).coefs.shape     # [B, 5], signed coefficients
        torch.Size([3, 5])
    """
    return _run_greedy(targets, atoms, k, 0.0, precision, chunk_size, nonneg=False, absval=True)


@register("mp")
def mp(
    targets: Float[Tensor, "B D"],
    atoms: Float[Tensor, "M D"],
    k: int = 5,
    lam: float = 0.0,
    *,
    tol: float = 1e-6,
    precision: Precision = "auto",
    chunk_size: int = 4096,
) -> SparseCodes:
    """Non-negative matching pursuit: coefficient = correlation, deflate, no refit; stops adding
    weight (coefficient 0) once the best correlation is ``<= tol``.

    Example:
        >>> atoms = torch.nn.functional.normalize(torch.randn(100, 16), dim=-1)
        >>> mp(atoms[:3], atoms, k=5).indices.shape     # [B, 5]; indices may repeat
        torch.Size([3, 5])
    """
    _check(targets, atoms, k)
    scorer = _Scorer(atoms, precision)

    def run(Z: Tensor) -> SparseCodes:
        no_exclusion = torch.zeros(Z.shape[0], 0, dtype=torch.long, device=Z.device)
        idx = torch.zeros(Z.shape[0], k, dtype=torch.long, device=Z.device)
        coefs = torch.zeros(Z.shape[0], k, dtype=Z.dtype, device=Z.device)
        R = Z
        for t in range(k):
            j = scorer.best(R, no_exclusion)
            a = atoms[j]
            c = (R * a).sum(-1)
            c = torch.where(c > tol, c, torch.zeros_like(c))
            idx[:, t], coefs[:, t] = j, c
            R = R - c[:, None] * a
        return SparseCodes(idx, coefs)

    return _chunked(run, targets, chunk_size, k)


@register("topk")
def topk(
    targets: Float[Tensor, "B D"],
    atoms: Float[Tensor, "M D"],
    k: int = 5,
    lam: float = 0.0,
    *,
    precision: Precision = "auto",
    chunk_size: int = 4096,
) -> SparseCodes:
    """The ``k`` atoms with the largest cosine to each target, with NNLS coefficients on them.

    Example:
        >>> atoms = torch.nn.functional.normalize(torch.randn(100, 16), dim=-1)
        >>> topk(atoms[:3], atoms, k=5).indices[:, 0].tolist()     # [B, 5], most similar first
        [0, 1, 2]
    """
    _check(targets, atoms, k)

    def run(Z: Tensor) -> SparseCodes:
        idx = (Z @ atoms.T).topk(k, dim=1).indices
        chosen = atoms[idx].double()
        G = chosen @ chosen.transpose(1, 2)
        b = torch.einsum("bkd,bd->bk", chosen, Z.double())
        return SparseCodes(idx, nnls_gram(G, b).to(Z.dtype))

    return _chunked(run, targets, chunk_size, k)


def pursue(
    targets: Float[Tensor, "B D"],
    atoms: Float[Tensor, "M D"],
    method: str = "comp",
    k: int = 5,
    lam: float = 0.3,
    **kwargs,
) -> SparseCodes:
    """Run the pursuit ``method`` (one of ``METHODS``) with one interface.

    Example:
        >>> atoms = torch.nn.functional.normalize(torch.randn(100, 16), dim=-1)
        >>> pursue(atoms[:3], atoms, "nnomp", k=5).indices.shape     # [B, 5]
        torch.Size([3, 5])
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    return METHODS[method](targets, atoms, k, lam, **kwargs)
