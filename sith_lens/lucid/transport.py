"""GCMT, guided cross-modal transport: entropic optimal transport between the shared codes of an
image's patches and those of its caption's tokens, solved with POT's batched Sinkhorn.

For image i and caption j the cost between patch p and token t is the cosine distance between
their shared codes, ``C[p, t] = 1 - cos(z_p, z_t)``, in [0, 1] since codes are non-negative. The
plan T* solves

    min_T <T, C> + eps * KL(T || G)   with   T 1 = a (patch marginal),  T^T 1 = b (token weights)

where G is the guidance prior (``guidance_prior``), made partial: only ``patch_mass`` of the
patch mass goes to words, the rest to a "no word" column, so that background patches need not be
matched to any word (the dustbin trick; ``patch_mass=1`` is balanced OT). KL(T || G) with fixed marginals differs from
the negative entropy of T only by <T, -log G> plus a constant, so POT's entropic Sinkhorn on the
cost ``C - eps * log G`` gives the same plan. The patch marginal a is uniform in the reference
formulation; with ``patch_saliency`` it follows the prior's saliency, sum_t b_t G[p, t], so that the
words naming an object are not limited to that object's share of the patches (contextual guidance
entering through the marginal). The plan is detached (envelope
theorem): gradients flow through C only. The transport distance is D(i, j) = <T*, C> / patch_mass; the loss
pulls matched pairs together and, with in-batch negatives, contrasts each image against a few other
captions of the batch and each caption against a few other images (InfoNCE on -D / temperature), so
that constant shared codes, which make every distance zero, do not minimise it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from ..checks import check_finite_fields
from .defaults import DEFAULTS
from .distributed import SOLO, ProcessGroup

#: Sinkhorn stops once its marginal update falls below this (the spec asks for errors < 1e-3).
SINKHORN_TOL = 1e-5
#: Row-shifted costs spanning less than this many ``eps`` are solved in the scaling domain:
#: exp(-60) is 1e-26, far above fp32's smallest normal number (1e-38).
SCALING_DOMAIN_RANGE = 60.0


@dataclass(frozen=True)
class GCMTConfig:
    """Settings of the transport loss; defaults from ``sith_lens.lucid.defaults`` (our choices, lucid_spec.md §3.2 [R])."""

    #: Entropic regularisation, on a cost in [0, 1].
    eps: float = DEFAULTS.ot_eps
    #: Sinkhorn iterations (fp32; scaling or log domain, ``sinkhorn_plans``).
    n_iter: int = DEFAULTS.ot_iterations
    #: Share of an image's patch mass that is matched to words (partial transport); the rest goes
    #: to a "no word" column at a constant cost, so background patches need not match any word.
    #: 1 is balanced OT, where every patch must be matched.
    patch_mass: float = DEFAULTS.ot_patch_mass
    #: Contextual guidance: weight of the frozen model's own patch-token similarity in the prior
    #: (0 turns it off; the rest of the prior is uniform over patches).
    context_weight: float = DEFAULTS.ot_context_weight
    #: Temperature of the softmax over patches that turns that similarity into a prior.
    context_temperature: float = DEFAULTS.ot_context_temperature
    #: Structural guidance: width, in patches, of the Gaussian that smooths the prior and the plan
    #: over the patch grid (0 turns it off).
    grid_sigma: float = DEFAULTS.ot_grid_sigma
    #: In-batch negatives: contrast each image with this many of the batch's other captions, and
    #: each caption with as many other images (InfoNCE); 0 turns them off. The shifts are drawn
    #: from torch's global generator, so a seeded run draws the same ones.
    n_negatives: int = DEFAULTS.ot_negatives
    #: Temperature of that InfoNCE over transport distances.
    nce_temperature: float = DEFAULTS.ot_nce_temperature
    #: Share of the patch marginal taken from the frozen model's saliency (each patch's prior mass
    #: summed over the caption's words) instead of spread evenly; 0 is the uniform marginal of the
    #: reference formulation. Only matched pairs use it (a negative's prior is uniform).
    patch_saliency: float = DEFAULTS.ot_patch_saliency
    #: Solve each plan on its cost divided by the cost's spread over the pair (max - min), so that
    #: ``eps`` is relative to how much the costs differ rather than to their [0, 1] range. The loss
    #: still reads the raw cost.
    relative_cost: bool = DEFAULTS.ot_relative_cost

    def __post_init__(self) -> None:
        check_finite_fields(self, "GCMT settings")
        checks = {
            "eps": self.eps > 0,
            "n_iter": self.n_iter >= 1,
            "patch_mass": 0.0 < self.patch_mass <= 1.0,
            "n_negatives": self.n_negatives >= 0,
            "context_weight": 0.0 <= self.context_weight < 1.0,
            "context_temperature": self.context_temperature > 0,
            "grid_sigma": self.grid_sigma >= 0,
            "nce_temperature": self.nce_temperature > 0,
            "patch_saliency": 0.0 <= self.patch_saliency <= 1.0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"invalid GCMT settings {bad}: need eps > 0, n_iter >= 1, 0 < patch_mass <= 1, n_negatives >= 0, 0 <= context_weight < 1, "
                f"context_temperature > 0, grid_sigma >= 0, nce_temperature > 0, 0 <= patch_saliency <= 1; got {self}"
            )


class GCMTOutput(NamedTuple):
    """What ``gcmt_loss`` returns."""

    #: The loss: mean matched transport distance, plus the InfoNCE term when negatives are on.
    loss: Float[Tensor, ""]
    #: Mean transport distance of the matched pairs (differentiable).
    matched_distance: Float[Tensor, ""]
    #: The InfoNCE term (0 without negatives).
    nce: Float[Tensor, ""]
    #: The matched pairs' plans to the words, detached: [pairs, patches, tokens]; each token's
    #: column sums to ``patch_mass`` times its marginal.
    plans: Float[Tensor, "B N L"]
    #: Largest deviation of a plan's marginals from (a, b) before grid smoothing.
    marginal_error: float
    #: Mean share of a matched word's plan mass on its heaviest patch (``plan_peak_share``): near 1
    #: the plan has collapsed onto single patches, near 1/N it is uniform.
    peak_share: float = float("nan")


def unit_rows(codes: Float[Tensor, "... n"]) -> Float[Tensor, "... n"]:
    """Codes scaled to unit norm; an all-zero code stays zero (distance 1 from everything)."""
    return codes / codes.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def cosine_cost(patch_codes: Float[Tensor, "... N n"], token_codes: Float[Tensor, "... L n"]) -> Float[Tensor, "... N L"]:
    """Cosine distance between every patch code and every token code of a pair, 1 - cos, with an
    all-zero code at distance 1 from everything. Leading axes broadcast.

    Example:
        >>> cosine_cost(torch.rand(2, 4, 8), torch.rand(2, 3, 8)).shape
        torch.Size([2, 4, 3])
    """
    return 1.0 - unit_rows(patch_codes) @ unit_rows(token_codes).transpose(-1, -2)


def grid_kernel(grid: int, sigma: float, device: torch.device | str = "cpu") -> Float[Tensor, "N N"]:
    """Gaussian smoothing over a ``grid`` x ``grid`` patch grid, each column summing to 1, so that
    ``K @ plan`` keeps a plan's token marginal. The identity when ``sigma`` is 0.

    Example:
        >>> grid_kernel(3, 1.0).sum(0).allclose(torch.ones(9))          # each column sums to 1
        True
    """
    n = grid * grid
    if sigma == 0:
        return torch.eye(n, device=device)
    rows = torch.arange(n, device=device) // grid
    cols = torch.arange(n, device=device) % grid
    d2 = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    k = torch.exp(-d2.float() / (2 * sigma**2))
    return k / k.sum(0, keepdim=True)


def guidance_prior(
    patch_inputs: Float[Tensor, "B N d"],
    token_inputs: Float[Tensor, "B L d"],
    grid: int,
    cfg: GCMTConfig,
) -> Float[Tensor, "B N L"]:
    """Log of the guidance prior over patches for each token, ``log q[:, p, t]`` (each column of q
    sums to 1).

    q mixes a uniform prior with the contextual one, a softmax over patches of the frozen model's
    own cosine similarity between patch and token inputs, and is smoothed over the patch grid
    (structural guidance). With ``context_weight=0`` and no grid smoothing q is uniform and the
    guidance has no effect.

    Example:
        >>> patch_x, token_x = torch.randn(2, 64, 16), torch.randn(2, 5, 16)     # 2 pairs, an 8 x 8 grid
        >>> log_q = guidance_prior(patch_x, token_x, grid=8, cfg=GCMTConfig())
        >>> log_q.shape, log_q.exp().sum(1).allclose(torch.ones(2, 5))
        (torch.Size([2, 64, 5]), True)
    """
    n = patch_inputs.shape[1]
    if grid * grid != n:
        raise ValueError(f"{n} patches do not form a {grid}x{grid} grid")
    q = torch.full((patch_inputs.shape[0], n, token_inputs.shape[1]), 1.0 / n, device=patch_inputs.device)
    if cfg.context_weight > 0:
        sim = torch.einsum(
            "bnd,bld->bnl", F.normalize(patch_inputs.float(), dim=-1), F.normalize(token_inputs.float(), dim=-1)
        )
        q = (1 - cfg.context_weight) * q + cfg.context_weight * torch.softmax(sim / cfg.context_temperature, dim=1)
    if cfg.grid_sigma > 0:
        q = grid_kernel(grid, cfg.grid_sigma, q.device) @ q
    return q.clamp_min(1e-12).log()


def sinkhorn_plans(
    cost: Float[Tensor, "P N L"],
    a: Float[Tensor, "P N"],
    b: Float[Tensor, "P L"],
    eps: float,
    n_iter: int,
) -> tuple[Float[Tensor, "P N L"], float]:
    """Entropic OT plans of P independent problems, by POT's batched Sinkhorn in fp32, detached.
    Zero entries of ``b`` (padding) receive no mass. Returns the plans and the largest deviation
    of their marginals from ``a`` and ``b``.

    Each row of each cost is first shifted by its minimum (which changes no plan). When the
    shifted costs span less than ``SCALING_DOMAIN_RANGE`` times ``eps``, the kernel exp(-C/eps)
    cannot underflow in fp32 and Sinkhorn runs in the scaling domain (matrix products, about 6
    times faster on CPU, the same plans to 1e-7); otherwise, or if that gives a non-finite plan, in
    the log domain.

    Example:
        >>> cost = torch.rand(4, 6, 3, generator=torch.Generator().manual_seed(0))
        >>> plans, err = sinkhorn_plans(cost, torch.full((4, 6), 1 / 6), torch.full((4, 3), 1 / 3), eps=0.05, n_iter=500)
        >>> err < 1e-3
        True
    """
    import ot.batch  # POT imports in ~1.5 s, so only when a loss is computed

    with torch.no_grad():
        cost = cost.detach().float()
        cost = cost - cost.amin(-1, keepdim=True)
        method = "sinkhorn" if float(cost.amax()) < SCALING_DOMAIN_RANGE * eps else "log_sinkhorn"
        for attempt in (method, "log_sinkhorn"):
            result = ot.batch.solve_batch(
                cost, reg=eps, a=a.float(), b=b.float(),
                max_iter=n_iter, tol=SINKHORN_TOL, method=attempt, grad="detach",
            )
            plans = result.plan
            if bool(torch.isfinite(plans).all()) or attempt == "log_sinkhorn":
                break
        error = max(float((plans.sum(-1) - a).abs().max()), float((plans.sum(-2) - b).abs().max()))
    return plans, error


def token_marginals(token_weights: Float[Tensor, "B L"]) -> Float[Tensor, "B L"]:
    """Token weights normalised to a probability per caption; a caption with no weight at all is
    refused (it has no content token to align)."""
    totals = token_weights.sum(-1, keepdim=True)
    if bool((totals <= 0).any()):
        empty = torch.nonzero(totals.squeeze(-1) <= 0).flatten().tolist()
        raise ValueError(f"captions {empty[:10]} have no weighted token (empty captions?); drop them before training")
    return token_weights / totals


def gcmt_loss(
    patch_codes: Float[Tensor, "B N n"],
    token_codes: Float[Tensor, "B L n"],
    token_weights: Float[Tensor, "B L"],
    log_prior: Float[Tensor, "B N L"],
    grid: int,
    cfg: GCMTConfig,
    generator: torch.Generator | None = None,
    group: ProcessGroup = SOLO,
) -> GCMTOutput:
    """The GCMT loss of a batch of B image-caption pairs (image i goes with caption i).

    Args:
        patch_codes: shared codes of every patch of each image.
        token_codes: shared codes of each caption's token slots (padding included; its weight is 0).
        token_weights: OT mass of each token slot: 0 for padding and special tokens, less for
            function words (``terms.token_weights``).
        log_prior: ``guidance_prior`` of each matched pair. Negatives use the uniform prior, since
            the model's similarity between an image and another image's caption guides nothing.
        grid: patches per side.
        generator: draws the negatives' shifts (torch's global generator when None).
        group: with several processes, each holds its part of the batch (in rank order): it solves
            the problems of its own images, against captions gathered from every process, and the
            loss of the whole batch comes from the gathered distances (``sith_lens.lucid.distributed``).

    Example:
        >>> cfg = GCMTConfig()
        >>> zp = torch.rand(4, 64, 32, requires_grad=True)       # shared codes: 4 images x 64 patches
        >>> zt = torch.rand(4, 5, 32, requires_grad=True)        # and their captions' 5 token slots
        >>> w = torch.full((4, 5), 0.2)
        >>> out = gcmt_loss(zp, zt, w, guidance_prior(torch.randn(4, 64, 16), torch.randn(4, 5, 16), 8, cfg), grid=8, cfg=cfg)
        >>> out.loss.backward()
        >>> zp.grad.shape
        torch.Size([4, 64, 32])
    """
    n_local, n_patches, _ = patch_codes.shape
    n_pairs = n_local * group.world
    patch_codes, token_codes = patch_codes.float(), token_codes.float()
    smooth = grid_kernel(grid, cfg.grid_sigma, patch_codes.device)

    p_hat = unit_rows(patch_codes)
    t_all = group.gather(unit_rows(token_codes))  # every caption of the batch
    b_all = group.gather(token_marginals(token_weights.float()))
    n_neg = min(cfg.n_negatives, n_pairs - 1)
    images = torch.arange(n_pairs, device=patch_codes.device)
    mine = images[group.rank * n_local:(group.rank + 1) * n_local]
    # image i against captions i + s (mod B) for n_neg random shifts s; caption j then meets images
    # j - s, so both directions get n_neg negatives from the same problems. All captions an image
    # meets are stacked along the token axis, so that one product gives every cost. Negatives use
    # the uniform prior.
    shifts = torch.zeros(0, dtype=torch.long, device=patch_codes.device)
    if n_neg > 0:
        shifts = 1 + torch.randperm(n_pairs - 1, generator=generator)[:n_neg].to(patch_codes.device)
    rolls = [0, *shifts.tolist()]
    met = torch.cat([t_all[(mine + sh) % n_pairs] for sh in rolls], 1)  # [b, (1 + S) L, n]
    n_tokens = token_codes.shape[1]
    costs = (1.0 - p_hat @ met.transpose(-1, -2)).unflatten(-1, (len(rolls), n_tokens)).movedim(-2, 0)  # [1 + S, b, N, L]
    marginals = torch.cat([b_all[(mine + sh) % n_pairs] for sh in rolls])
    matched_cost, matched_a = _solver_inputs(costs[0], marginals[:n_local], cfg, log_prior)
    negative_cost, negative_a = _solver_inputs(costs[1:].flatten(0, 1), marginals[n_local:], cfg)
    # one batched Sinkhorn solve for the matched pairs and every negative
    plans, error = _partial_plans(torch.cat([matched_cost, negative_cost]), torch.cat([matched_a, negative_a]),
                                  marginals, cfg)
    words = (smooth @ plans[..., :n_tokens]).reshape(n_neg + 1, n_local, n_patches, n_tokens)
    distance = group.gather(((words * costs).sum((-1, -2)) / cfg.patch_mass).T).T  # [1 + S, B]
    matched = distance[0]
    matched_distance = matched.mean()
    nce = matched_distance.new_zeros(())
    if n_neg > 0:
        negative = distance[1:].T  # [B, S]: image i against caption i + s
        image_to_text = torch.cat([matched[:, None], negative], 1)
        text_to_image = torch.cat([matched[:, None], negative[(images[:, None] - shifts[None]) % n_pairs,
                                                               torch.arange(n_neg, device=images.device)[None]]], 1)
        target = torch.zeros(n_pairs, dtype=torch.long, device=patch_codes.device)
        nce = 0.5 * (F.cross_entropy(-image_to_text / cfg.nce_temperature, target)
                     + F.cross_entropy(-text_to_image / cfg.nce_temperature, target))
    plans = plans[:n_local, :, :n_tokens]
    if not math.isfinite(error):
        raise FloatingPointError("Sinkhorn produced non-finite plans (check the codes for NaN; with a small ot_eps, "
                                 f"eps={cfg.eps}, raise it)")
    return GCMTOutput(matched_distance + nce, matched_distance, nce, plans.detach(), error,
                      plan_peak_share(plans.detach(), marginals[:n_local] > 0))


def plan_peak_share(plans: Float[Tensor, "B N L"], weighted: Float[Tensor, "B L"]) -> float:
    """Mean share of a word's plan mass on its single heaviest patch, over the weighted token
    slots: 1 when every word's mass sits on one patch (a collapsed plan), 1/N when it is spread
    evenly (a uniform plan).

    Example:
        >>> plan_peak_share(torch.full((1, 4, 2), 0.125), torch.ones(1, 2, dtype=torch.bool))
        0.25
    """
    column = plans.sum(1).clamp_min(1e-30)
    share = plans.amax(1) / column
    return float(share[weighted].mean()) if bool(weighted.any()) else float("nan")


def _solver_inputs(
    cost: Float[Tensor, "P N L"],
    b: Float[Tensor, "P L"],
    cfg: GCMTConfig,
    log_prior: Float[Tensor, "P N L"] | None = None,
) -> tuple[Float[Tensor, "P N L"], Float[Tensor, "P N"]]:
    """The cost Sinkhorn solves (detached; relative to its spread when ``relative_cost``; minus
    ``eps * log prior`` when a prior is given) and the patch marginal (uniform, or partly the
    prior's saliency ``sum_t b_t q[p, t]`` when ``patch_saliency`` > 0 and a prior is given)."""
    c = cost.detach().float()
    if cfg.relative_cost:
        weighted = (b > 0)[:, None, :]
        top = c.masked_fill(~weighted, -math.inf).flatten(1).amax(1)
        low = c.masked_fill(~weighted, math.inf).flatten(1).amin(1)
        c = c / (top - low).clamp_min(1e-3)[:, None, None]
    a = c.new_full(c.shape[:2], 1.0 / c.shape[1])
    if log_prior is not None:
        c = c - cfg.eps * log_prior
        if cfg.patch_saliency > 0:
            saliency = (log_prior.exp() * b[:, None, :]).sum(-1)  # b sums to 1 per problem
            a = (1 - cfg.patch_saliency) * a + cfg.patch_saliency * saliency / saliency.sum(-1, keepdim=True)
    return c, a


def _partial_plans(cost: Float[Tensor, "P N L"], a: Float[Tensor, "P N"], b: Float[Tensor, "P L"],
                   cfg: GCMTConfig) -> tuple[Tensor, float]:
    """Plans that move ``patch_mass`` of the patch mass ``a`` to the words (marginal
    ``patch_mass * b``) and the rest to an extra "no word" column of constant cost (zero: a
    constant there changes no plan, since that column's mass is fixed)."""
    n_problems, n_patches, _ = cost.shape
    if cfg.patch_mass >= 1.0:
        return sinkhorn_plans(cost, a, b, cfg.eps, cfg.n_iter)
    dustbin = cost.new_zeros(n_problems, n_patches, 1)
    b_all = torch.cat([cfg.patch_mass * b, b.new_full((n_problems, 1), 1.0 - cfg.patch_mass)], 1)
    return sinkhorn_plans(torch.cat([cost.detach(), dustbin], -1), a, b_all, cfg.eps, cfg.n_iter)


#: ``GCMTConfig`` field of each ``ot_*`` training setting saved in an SAE's metadata.
_SAVED_SETTINGS = {"ot_eps": "eps", "ot_iterations": "n_iter", "ot_patch_mass": "patch_mass",
                   "ot_context_weight": "context_weight", "ot_context_temperature": "context_temperature",
                   "ot_grid_sigma": "grid_sigma", "ot_negatives": "n_negatives", "ot_nce_temperature": "nce_temperature",
                   "ot_patch_saliency": "patch_saliency", "ot_relative_cost": "relative_cost"}


def config_from_details(details: dict | None) -> GCMTConfig:
    """The GCMT settings a LUCID SAE was trained with, from ``cfg.metadata.training_architecture_details``
    (defaults for settings it does not record).

    Example:
        >>> config_from_details(None) == GCMTConfig()
        True
        >>> config_from_details({"ot_eps": 0.1}).eps
        0.1
    """
    details = details or {}
    return GCMTConfig(**{field: details[key] for key, field in _SAVED_SETTINGS.items() if key in details})


@torch.no_grad()
def pair_plan(
    patch_codes: Float[Tensor, "N n"],
    token_codes: Float[Tensor, "L n"],
    token_weights: Float[Tensor, " L"],
    grid: int,
    cfg: GCMTConfig,
    patch_inputs: Float[Tensor, "N d"] | None = None,
    token_inputs: Float[Tensor, "L d"] | None = None,
) -> Float[Tensor, "N L"]:
    """The transport plan of one image-caption pair as training computes it: the words' part of the
    partial plan on the cosine cost of the shared codes, guided by the prior when the SAE's inputs
    are given. Column t sums to ``patch_mass`` times token t's marginal.

    Example:
        >>> zp, zt = torch.rand(64, 32), torch.rand(3, 32)         # one image's patches, its caption's words
        >>> plan = pair_plan(zp, zt, torch.ones(len(zt)), grid=8, cfg=GCMTConfig())
        >>> plan.shape
        torch.Size([64, 3])
    """
    cost = cosine_cost(patch_codes.float(), token_codes.float())[None]
    b = token_marginals(token_weights.float()[None])
    log_prior = None
    if patch_inputs is not None and token_inputs is not None:
        log_prior = guidance_prior(patch_inputs[None], token_inputs[None], grid, cfg)
    plans, _ = _partial_plans(*_solver_inputs(cost, b, cfg, log_prior), b, cfg)
    return plans[0, :, : token_codes.shape[0]]
