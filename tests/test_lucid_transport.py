"""LUCID's transport plan: the patch marginal from saliency, the relative cost, and the checks that
refuse settings that cannot converge and report plans that collapse or flatten."""

from __future__ import annotations

import warnings

import pytest
import torch

import sith_lens  # noqa: F401  (arranges LUCID's registration)
from sith_lens.lucid.collect import collect_toy_activations
from sith_lens.lucid.transport import (
    GCMTConfig, _partial_plans, _solver_inputs, cosine_cost, gcmt_loss, guidance_prior, pair_plan, plan_peak_share,
    token_marginals,
)


@pytest.fixture(scope="module")
def toy_acts(toy):
    return collect_toy_activations(toy, n_pairs=64, seed=5, batch_size=64, progress=False)


def training_cfg(**kw):
    from sith_lens.lucid.sae import TrainingLucidSAEConfig

    base = dict(d_in=128, d_sae=96, n_private_vision=16, n_private_text=8, k_shared=6, k_private=2, k_aux=16)
    return TrainingLucidSAEConfig(**{**base, **kw})


def one_pair(seed: int = 0, n: int = 16, words: int = 3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 12, generator=g), torch.rand(words, 12, generator=g), torch.randn(n, 8, generator=g), \
        torch.randn(words, 8, generator=g)


def test_a_uniform_patch_marginal_caps_the_mass_a_word_can_put_on_a_small_object():
    """The flattening the benchmark measured: with every patch sending 1/N, a word whose codes match
    only 2 of 16 patches can put at most 2/16 / patch_mass of its mass there; a patch marginal that
    follows the saliency lifts the cap, and the plan then fills it."""
    n = 16
    zp = torch.zeros(n, 4)
    zp[:, 0] = 1.0  # background code
    zp[:2] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # a 2-patch object
    zt = torch.tensor([[0.0, 1.0, 0.0, 0.0]])  # the word that names it
    b = torch.ones(1, 1)
    cfg = GCMTConfig(eps=0.02, patch_mass=0.5, context_weight=0.0, grid_sigma=0.0, patch_saliency=0.0)
    cost = cosine_cost(zp, zt)[None]
    # a saliency prior that points at the object: log q with 90 % of each word's mass on its patches
    q = torch.full((1, n, 1), 0.1 / (n - 2))
    q[0, :2] = 0.45
    uniform, _ = _partial_plans(*_solver_inputs(cost, b, cfg, q.log()), b, cfg)
    on_object = float(uniform[0, :2, 0].sum() / uniform[0, :, 0].sum())
    assert on_object == pytest.approx((2 / n) / 0.5, abs=1e-3)  # exactly the cap
    salient_cfg = GCMTConfig(eps=0.02, patch_mass=0.5, context_weight=0.0, grid_sigma=0.0, patch_saliency=1.0)
    cost_in, a = _solver_inputs(cost, b, salient_cfg, q.log())
    assert torch.allclose(a.sum(-1), torch.ones(1)) and float(a[0, :2].sum()) == pytest.approx(0.9, abs=1e-5)
    salient, err = _partial_plans(cost_in, a, b, salient_cfg)
    assert err < 1e-3
    assert float(salient[0, :2, 0].sum() / salient[0, :, 0].sum()) > 0.95


def test_saliency_marginal_only_for_matched_pairs_and_zero_is_the_reference():
    zp, zt, xp, xt = one_pair()
    log_q = guidance_prior(xp[None], xt[None], 4, GCMTConfig())
    assert GCMTConfig().patch_saliency == 1.0  # the recipe's
    b = token_marginals(torch.ones(1, 3))
    _, a_ref = _solver_inputs(cosine_cost(zp, zt)[None], b, GCMTConfig(patch_saliency=0.0), log_q)
    assert torch.allclose(a_ref, torch.full((1, 16), 1 / 16))  # patch_saliency=0: uniform, the reference
    _, a_neg = _solver_inputs(cosine_cost(zp, zt)[None], b, GCMTConfig(patch_saliency=1.0))  # no prior: a negative
    assert torch.allclose(a_neg, torch.full((1, 16), 1 / 16))
    _, a_sal = _solver_inputs(cosine_cost(zp, zt)[None], b, GCMTConfig(patch_saliency=1.0), log_q)
    assert torch.allclose(a_sal, (log_q.exp() * b[:, None]).sum(-1), atol=1e-6)


def test_relative_cost_is_eps_scaled_by_the_cost_spread():
    """Dividing the cost by its spread over the pair's weighted entries gives the plan of the raw
    cost at eps times that spread."""
    zp, zt, _, _ = one_pair(1)
    cost = cosine_cost(zp, zt)[None]
    b = token_marginals(torch.ones(1, 3))
    spread = float(cost.max() - cost.min())
    rel = GCMTConfig(eps=0.05, relative_cost=True, context_weight=0.0, grid_sigma=0.0)
    raw = GCMTConfig(eps=0.05 * spread, context_weight=0.0, grid_sigma=0.0, n_iter=rel.n_iter)
    plan_rel, _ = _partial_plans(*_solver_inputs(cost, b, rel), b, rel)
    plan_raw, _ = _partial_plans(*_solver_inputs(cost, b, raw), b, raw)
    assert torch.allclose(plan_rel, plan_raw, atol=1e-5)


def test_pair_plan_is_the_training_plan_with_the_new_settings():
    zp, zt, xp, xt = one_pair(2)
    cfg = GCMTConfig(patch_saliency=0.7, relative_cost=True, n_negatives=0)
    log_q = guidance_prior(xp[None], xt[None], 4, cfg)
    out = gcmt_loss(zp[None], zt[None], torch.ones(1, 3), log_q, 4, cfg)
    plan = pair_plan(zp, zt, torch.ones(3), 4, cfg, xp, xt)
    assert torch.allclose(out.plans[0], plan, atol=1e-6)
    assert 1 / 16 < out.peak_share < 1


def test_plan_peak_share_tells_collapse_from_uniform():
    weighted = torch.ones(1, 2, dtype=torch.bool)
    collapsed = torch.zeros(1, 8, 2)
    collapsed[0, 3] = 0.5
    assert plan_peak_share(collapsed, weighted) == 1.0
    assert plan_peak_share(torch.full((1, 8, 2), 1 / 16), weighted) == pytest.approx(1 / 8)


def test_settings_that_cannot_converge_are_refused_with_the_setting_named(toy_acts):
    from sith_lens.lucid.sae import train_lucid

    for bad, name in (({"ot_eps": 0.0}, "eps"), ({"ot_eps": -1.0}, "eps"), ({"ot_patch_saliency": 1.5}, "patch_saliency"),
                      ({"ot_eps": float("nan")}, "ot_eps"), ({"ot_patch_mass": 0.0}, "patch_mass")):
        with pytest.raises(ValueError, match=name):
            training_cfg(**bad)
    # a caption with no weighted token gives a token marginal that sums to zero: refused before training
    empty = toy_acts.subset(torch.arange(8))
    empty.token_weights[3] = 0
    with pytest.raises(ValueError, match=r"pairs \[3\].*ot_coefficient=0"):
        train_lucid(empty, training_cfg(), steps=2, batch_size=4, progress=False)
    # without transport the same pairs train
    train_lucid(empty, training_cfg(ot_coefficient=0.0), steps=2, batch_size=4, progress=False)
    # a plan with NaN: Sinkhorn on NaN codes stops with the setting to look at
    zp = torch.full((1, 16, 12), float("nan"))
    with pytest.raises(FloatingPointError, match="eps"):
        gcmt_loss(zp, torch.rand(1, 3, 12), torch.ones(1, 3), torch.zeros(1, 16, 3), 4,
                  GCMTConfig(n_negatives=0, grid_sigma=0.0, context_weight=0.0))


def test_a_collapsed_or_uniform_plan_warns_with_the_step_and_the_figure(toy_acts):
    from sith_lens.lucid.sae import train_lucid
    from sith_lens.lucid.sae.trainer import PlanWarning

    # a tiny eps on a sharp prior sends each word's mass to one patch
    with pytest.warns(PlanWarning, match=r"step \d+ is collapsed: .*% of its mass on one patch.*raise ot_eps"):
        train_lucid(toy_acts, training_cfg(ot_eps=1e-3, ot_warm_up_steps=1, ot_context_weight=0.99,
                                           ot_context_temperature=0.001, ot_grid_sigma=0.0, ot_patch_mass=0.02,
                                           ot_patch_saliency=0.0),
                    steps=4, batch_size=8, progress=False)
    # a huge eps with no guidance spreads it evenly
    with pytest.warns(PlanWarning, match=r"step \d+ is uniform: .*0\.0156.*lower ot_eps"):
        train_lucid(toy_acts, training_cfg(ot_eps=100.0, ot_warm_up_steps=1, ot_context_weight=0.0,
                                           ot_grid_sigma=0.0), steps=4, batch_size=8, progress=False)
    # the recipe's settings do not warn
    with warnings.catch_warnings():
        warnings.simplefilter("error", PlanWarning)
        train_lucid(toy_acts, training_cfg(ot_warm_up_steps=1), steps=4, batch_size=8, progress=False)


def test_scaling_domain_sinkhorn_gives_the_log_domain_plans_and_falls_back_on_wide_costs():
    import ot.batch

    from sith_lens.lucid.transport import SCALING_DOMAIN_RANGE, sinkhorn_plans

    torch.manual_seed(3)
    cost = torch.rand(6, 16, 5) + 0.3 * torch.randn(6, 16, 1)  # rows at different levels
    a, b = torch.full((6, 16), 1 / 16), torch.softmax(torch.randn(6, 5), -1)
    plans, err = sinkhorn_plans(cost, a, b, eps=0.05, n_iter=200)
    log = ot.batch.solve_batch(cost, reg=0.05, a=a, b=b, max_iter=200, tol=1e-5, method="log_sinkhorn",
                               grad="detach").plan
    assert err < 1e-4 and torch.allclose(plans, log, atol=1e-6)
    # a cost spanning 200 eps would underflow exp(-C / eps): the log domain solves it
    wide = cost * (200 * 0.01 / float(cost.max() - cost.min()))
    assert float((wide - wide.amin(-1, keepdim=True)).amax()) > SCALING_DOMAIN_RANGE * 0.01
    plans, err = sinkhorn_plans(wide, a, b, eps=0.01, n_iter=500)
    assert bool(torch.isfinite(plans).all()) and err < 1e-3


def test_the_step_transports_the_shared_codes_it_reconstructs_with(toy_acts):
    """The transport cost reads the shared block's Top-K picks of the reconstruction (no second
    Top-K): the same loss as transporting ``topk_relu`` of the shared pre-activations."""
    from sae_lens.saes.sae import TrainStepInput

    from sith_lens.lucid.sae import TrainingLucidSAE
    from sith_lens.lucid.sparse import topk_relu

    torch.manual_seed(0)
    cfg = training_cfg(ot_patch_saliency=1.0)
    sae = TrainingLucidSAE(cfg)
    sae.initialize_from_data(toy_acts)
    batch = toy_acts.batch_at(0, 8, seed=1)
    out = sae.training_forward_pass(TrainStepInput(sae_in=batch, coefficients={"ot": 1.0, "aux": 0.0},
                                                   dead_neuron_mask=None, n_training_steps=3, is_logging_step=False))
    codes = {m: topk_relu(sae.visible_pre_activations(x, m)[:, : cfg.n_shared], cfg.k_shared)
             for m, x in (("vision", batch.patch_rows), ("text", batch.token_rows))}
    expected = sae.gcmt_terms(batch, codes["vision"], codes["text"], 3).loss
    assert torch.allclose(out.losses["gcmt"], expected, atol=1e-6)
