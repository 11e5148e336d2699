"""LUCID: the SAE's maths and SAELens integration, the transport loss, data collection, training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sith_lens  # noqa: F401  (arranges LUCID's registration)
from sith_lens.lucid.collect import collect_toy_activations
from sith_lens.lucid.data import PairedActivations
from sith_lens.lucid.sparse import block_topk, fvu, latent_slices
from sith_lens.lucid.transport import GCMTConfig, gcmt_loss, grid_kernel, guidance_prior, sinkhorn_plans


@pytest.fixture(scope="module")
def toy_acts(toy):
    return collect_toy_activations(toy, n_pairs=160, seed=5, batch_size=80, progress=False)


def small_cfg(**kw):
    from sith_lens.lucid.sae import LucidSAEConfig

    base = dict(d_in=128, d_sae=96, n_private_vision=16, n_private_text=8, k_shared=6, k_private=2)
    return LucidSAEConfig(**{**base, **kw})


def small_training_cfg(**kw):
    from sith_lens.lucid.sae import TrainingLucidSAEConfig

    base = dict(d_in=128, d_sae=96, n_private_vision=16, n_private_text=8, k_shared=6, k_private=2, k_aux=16)
    return TrainingLucidSAEConfig(**{**base, **kw})


# -- sparse codes ------------------------------------------------------------------------------------
def test_block_topk_keeps_separate_budgets():
    pre = torch.randn(50, 20)
    codes = block_topk(pre, n_shared=12, k_shared=3, k_private=2)
    assert ((codes[:, :12] != 0).sum(1) <= 3).all() and ((codes[:, 12:] != 0).sum(1) <= 2).all()
    assert (codes >= 0).all()
    # the kept entries are the largest positive pre-activations of each block
    top = pre[:, :12].topk(3).values.clamp_min(0)
    assert torch.allclose(codes[:, :12].sort(descending=True).values[:, :3], top)


def test_codes_stay_in_their_blocks():
    from sith_lens.lucid.sae import LucidSAE

    sae = LucidSAE(small_cfg())
    blocks = latent_slices(72, 16, 8)
    x = torch.randn(40, 128)
    vision, text = sae.encode(x, "vision"), sae.encode(x, "text")
    assert (vision[:, blocks["text"]] == 0).all() and (text[:, blocks["vision"]] == 0).all()
    assert ((vision[:, blocks["shared"]] != 0).sum(1) <= 6).all()


def test_views_follow_saelens_formulas(toy_acts):
    """A view's own raw-unit weights give its encode and decode exactly, as SAELens's formulas say."""
    from sith_lens.lucid.sae import LucidSAE

    sae = LucidSAE(small_cfg())
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.05 * torch.randn_like(p))
        sae.vision.W_dec.mul_(3.0)
    x = toy_acts.patches[:4].reshape(-1, 128)
    view = sae.vision
    codes = view.encode(x)
    pre = (x - view.b_dec) @ view.W_enc + view.b_enc
    visible = torch.cat([torch.arange(72), torch.arange(72, 88)])  # shared, then vision-private
    expected = torch.zeros_like(pre)
    expected[:, visible] = block_topk(pre[:, visible], 72, 6, 2)
    torch.testing.assert_close(codes, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(view.decode(codes), codes @ view.W_dec + view.b_dec, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(view(x), sae(x, modality="vision"))
    assert dict(view.named_parameters()).keys() == {"W_enc", "b_enc", "W_dec", "b_dec"}


# -- SAELens integration -------------------------------------------------------------------------------
def test_save_load_and_from_dict_round_trip(tmp_path):
    from sae_lens import SAE

    from sith_lens.lucid.sae import LucidSAE

    sae = LucidSAE(small_cfg())
    sae.cfg.metadata.hook_name_vision = "hook_joint_tokens"
    sae.cfg.metadata.hook_name_text = "blocks.1.hook_resid_post"
    with torch.no_grad():
        sae.text.b_enc.add_(0.3)
    sae.save_model(tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == "lucid" and cfg["metadata"]["hook_name_text"] == "blocks.1.hook_resid_post"

    loaded = SAE.load_from_disk(tmp_path / "sae")
    assert type(loaded) is LucidSAE
    x = torch.randn(7, 128)
    for modality in ("vision", "text"):
        torch.testing.assert_close(loaded.encode(x, modality), sae.encode(x, modality))
    assert loaded.text.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    assert loaded.vision.cfg.metadata.hook_name == "hook_joint_tokens"

    fresh = SAE.from_dict(sae.cfg.to_dict())
    assert type(fresh) is LucidSAE and fresh.cfg.n_private_text == 8 and fresh.cfg.k_shared == 6


def test_registration_is_idempotent_and_follows_sae_lens_import():
    from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY

    from sith_lens.lucid.sae import LucidSAE, LucidSAEConfig, registry

    before = (SAE_CLASS_REGISTRY["lucid"], SAE_CLASS_REGISTRY["lucid_view"], SAE_TRAINING_CLASS_REGISTRY["lucid"])
    sith_lens.register()
    sith_lens.register()
    assert (SAE_CLASS_REGISTRY["lucid"], SAE_CLASS_REGISTRY["lucid_view"], SAE_TRAINING_CLASS_REGISTRY["lucid"]) == before
    with pytest.raises(ValueError, match="already registered"):
        registry._put({"lucid": (dict, dict)}, "lucid", (LucidSAE, LucidSAEConfig))
    # a fresh interpreter: `import sith_lens` does not import sae_lens, but registers as soon as it is
    code = (
        "import sys, sith_lens; assert 'sae_lens' not in sys.modules\n"
        "from sae_lens.registry import SAE_CLASS_REGISTRY as A, SAE_TRAINING_CLASS_REGISTRY as B\n"
        "print(A['lucid'][0].__name__, A['lucid_view'][0].__name__, B['lucid'][0].__name__)"
    )
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["LucidSAE", "LucidView", "TrainingLucidSAE"]


def test_reimported_modules_replace_their_own_registration():
    code = (
        "import importlib, sith_lens\n"
        "from sith_lens.lucid.sae import inference, registry\n"
        "from sae_lens.registry import SAE_CLASS_REGISTRY\n"
        "module = importlib.reload(inference)\n"
        "importlib.reload(registry).register()\n"
        "print(SAE_CLASS_REGISTRY['lucid'][0] is module.LucidSAE)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_sinkhorn_plans_have_the_requested_marginals():
    torch.manual_seed(0)
    cost = torch.rand(6, 16, 5)
    a = torch.full((6, 16), 1 / 16)
    b = torch.rand(6, 5)
    b[:, 3:] = 0  # padding slots
    b = b / b.sum(1, keepdim=True)
    plans, error = sinkhorn_plans(cost, a, b, eps=0.05, n_iter=200)
    assert error < 1e-3
    torch.testing.assert_close(plans.sum(-1), a, atol=1e-3, rtol=0)
    torch.testing.assert_close(plans.sum(-2), b, atol=1e-3, rtol=0)
    assert (plans[:, :, 3:] == 0).all()
    # with a small eps the plan concentrates on cheap cells: its cost is near the exact OT cost
    # of this tiny problem and well below the independent coupling's
    independent = (a[:, :, None] * b[:, None, :] * cost).sum((1, 2))
    assert ((plans * cost).sum((1, 2)) < independent - 0.05).all()


def test_gcmt_loss_marginals_prior_and_gradient():
    torch.manual_seed(1)
    b, n, length, f = 4, 16, 6, 10
    zp = torch.rand(b, n, f, requires_grad=True)
    zt = torch.rand(b, length, f, requires_grad=True)
    weights = torch.ones(b, length)
    weights[:, 4:] = 0
    weights[:, 0] = 0.1
    cfg = GCMTConfig(n_iter=200, patch_mass=0.4, patch_saliency=0.0)  # the uniform patch marginal
    log_prior = guidance_prior(torch.randn(b, n, 8), torch.randn(b, length, 8), grid=4, cfg=cfg)
    torch.testing.assert_close(log_prior.exp().sum(1), torch.ones(b, length))
    out = gcmt_loss(zp, zt, weights, log_prior, grid=4, cfg=cfg, generator=torch.Generator().manual_seed(0))
    assert out.marginal_error < 1e-3
    torch.testing.assert_close(out.plans.sum(-2), 0.4 * weights / weights.sum(1, keepdim=True), atol=1e-3, rtol=0)
    assert (out.plans.sum(-1) <= 1 / n + 1e-3).all()  # no patch gives more than its mass
    assert out.nce > 0 and out.loss.requires_grad
    out.loss.backward()
    assert zp.grad.abs().sum() > 0 and zt.grad[:, 4:].abs().sum() == 0  # padding gets no gradient
    torch.testing.assert_close(grid_kernel(4, 1.0).sum(0), torch.ones(16))


def test_gcmt_prefers_matching_codes():
    """Codes that agree across a pair cost less than codes that do not."""
    torch.manual_seed(2)
    zp = torch.rand(3, 16, 12)
    aligned = zp[:, :5].clone()
    shuffled = torch.rand(3, 5, 12)
    cfg = GCMTConfig(n_negatives=0, context_weight=0.0, grid_sigma=0.0)
    flat = torch.zeros(3, 16, 5)
    near = gcmt_loss(zp, aligned, torch.ones(3, 5), flat, 4, cfg).matched_distance
    far = gcmt_loss(zp, shuffled, torch.ones(3, 5), flat, 4, cfg).matched_distance
    assert near < far


def test_gcmt_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="eps"):
        GCMTConfig(eps=0)
    with pytest.raises(ValueError, match="context_weight"):
        GCMTConfig(context_weight=1.0)


# -- data ----------------------------------------------------------------------------------------------
def test_toy_activations_and_ground_truth(toy_acts, tmp_path):
    from sith_lens.toyworld.attributes import ATTRIBUTES, VALUES

    acts = toy_acts
    assert acts.patches.shape == (160, 64, 128) and acts.grid == 8
    assert acts.token_mask.any(1).all()
    # special tokens are gone; every colour-labelled slot holds a colour word
    strings = [s for row in acts.token_strings for s in row]
    assert not {"<bos>", "<eos>", "<pad>"} & set(strings)
    attributes = acts.extras["pair.token_attributes"]
    color = ATTRIBUTES.index("color")
    for p, row in enumerate(acts.token_strings):
        for slot, token in enumerate(row):
            if attributes[p, slot] == color:
                assert token in VALUES["color"]
    assert (acts.token_weights[~acts.token_mask] == 0).all()
    acts.save(tmp_path / "acts")
    again = PairedActivations.load(tmp_path / "acts")
    assert torch.equal(again.tokens, acts.tokens) and again.captions == acts.captions
    assert torch.equal(again.extras["image.patch_labels"], acts.extras["image.patch_labels"])


def test_batches_are_seeded_and_pure_in_step(toy_acts):
    a = toy_acts.batch_at(7, 16, seed=3)
    b = toy_acts.batch_at(7, 16, seed=3)
    c = toy_acts.batch_at(7, 16, seed=4)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.patches, c.patches)
    assert a.patches.shape == (16, 64, 128) and a.token_mask.shape == a.token_weights.shape


# -- training ------------------------------------------------------------------------------------------
def _step(sae, batch, step, ot=0.5):
    """The training forward pass of ``batch`` at training step ``step`` (no AuxK)."""
    from sae_lens.saes.sae import TrainStepInput

    return sae.training_forward_pass(TrainStepInput(
        sae_in=batch, coefficients={"ot": ot, "aux": 0.0}, dead_neuron_mask=None,
        n_training_steps=step, is_logging_step=False,
    ))


def _loss_on(sae, batch):
    with torch.no_grad():
        out = _step(sae, batch, 0)
    return float(out.loss), out


def test_training_decreases_loss_and_saves_a_loadable_sae(toy_acts, tmp_path):
    from sae_lens import SAE

    from sith_lens.lucid.sae import LucidSAE, TrainingLucidSAE, train_lucid

    cfg = small_training_cfg()
    batch = toy_acts.batch_at(0, 32, seed=0)
    torch.manual_seed(0)
    start = TrainingLucidSAE(cfg)
    start.initialize_from_data(toy_acts)
    before, _ = _loss_on(start, batch)
    _, out = _loss_on(start, batch)
    assert out.losses["gcmt"] > 0 and out.metrics["ot_marginal_error"] < 1e-3
    final = train_lucid(toy_acts, cfg, steps=40, batch_size=16, lr=3e-3, seed=0, out_dir=tmp_path, progress=False)
    rows = {"vision": batch.patch_rows, "text": batch.token_rows}
    with torch.no_grad():
        fvus = {name: sum(float(fvu(x, sae.view(m)(x))) for m, x in rows.items())
                for name, sae in (("before", start.to_inference()), ("after", final))}
    assert fvus["after"] < 0.8 * fvus["before"], fvus
    # one dictionary: a shared latent's decoder rows point the same way in both views, and each
    # view's rows have the length of its modality's scale
    shared = slice(0, cfg.n_shared)
    norms = {m: final.view(m).W_dec.norm(dim=-1) for m in rows}
    for m in rows:
        torch.testing.assert_close(norms[m], norms[m][:1].expand(96))
    torch.testing.assert_close(final.vision.W_dec[shared] / norms["vision"][0], final.text.W_dec[shared] / norms["text"][0])
    loaded = SAE.load_from_disk(tmp_path / "final")
    assert type(loaded) is LucidSAE
    torch.testing.assert_close(loaded.vision.W_dec, final.vision.W_dec)
    meta = loaded.cfg.metadata
    assert 0 < meta.variance_explained_vision < 1 and 0 < meta.l0_text <= 8, meta
    assert loaded.vision.cfg.metadata.variance_explained == meta.variance_explained_vision


def test_training_step_matches_the_inference_maths(toy_acts):
    """The training step's sparse path (visible latents, embedding-bag decode) gives the codes,
    pre-activations and reconstructions of the inference SAE's dense, hooked path."""
    from sith_lens.lucid.sae import TrainingLucidSAE

    torch.manual_seed(0)
    sae = TrainingLucidSAE(small_training_cfg())
    sae.initialize_from_data(toy_acts)
    inference = sae.to_inference()
    batch = toy_acts.batch_at(0, 8, seed=0)
    with torch.no_grad():
        out = _step(sae, batch, 1)
        rows = {"vision": batch.patch_rows, "text": batch.token_rows}
        codes = torch.cat([inference.encode(rows[m], m) for m in ("vision", "text")])
        pre = torch.cat([(rows[m] - inference.view(m).b_dec) @ inference.view(m).W_enc + inference.view(m).b_enc
                         for m in ("vision", "text")])
        recons = torch.cat([inference.decode(inference.encode(rows[m], m), m) for m in ("vision", "text")])
    torch.testing.assert_close(out.feature_acts, codes)
    torch.testing.assert_close(out.hidden_pre, pre)
    torch.testing.assert_close(out.sae_out, recons, atol=1e-5, rtol=1e-5)


def test_sparse_decode_equals_the_dense_product():
    from sith_lens.lucid.sparse import block_topk_indices, decode_sparse

    pre, decoder = torch.randn(30, 20, requires_grad=True), torch.randn(20, 7, requires_grad=True)
    values, indices = block_topk_indices(pre, n_shared=12, k_shared=3, k_private=2)
    sparse = decode_sparse(values, indices, decoder)
    dense = block_topk(pre, n_shared=12, k_shared=3, k_private=2) @ decoder
    torch.testing.assert_close(sparse, dense)
    grads = torch.autograd.grad(sparse.square().sum(), (pre, decoder))
    expected = torch.autograd.grad(dense.square().sum(), (pre, decoder))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def test_lazy_transport_runs_every_nth_step_with_n_times_the_weight(toy_acts):
    from sith_lens.lucid.sae import TrainingLucidSAE

    batch = toy_acts.batch_at(0, 16, seed=0)
    torch.manual_seed(0)
    lazy = TrainingLucidSAE(small_training_cfg(ot_every=3))
    lazy.initialize_from_data(toy_acts)
    every = TrainingLucidSAE(small_training_cfg(ot_every=1))
    every.load_state_dict(lazy.state_dict())
    with torch.no_grad():
        assert float(_step(lazy, batch, 1).losses["gcmt"]) == 0.0
        assert float(_step(lazy, batch, 2).losses["gcmt"]) == 0.0
        on, reference = _step(lazy, batch, 3).losses["gcmt"], _step(every, batch, 3).losses["gcmt"]
    assert float(reference) > 0
    torch.testing.assert_close(on, 3 * reference)


def test_progress_bar_shows_the_last_transport_loss(toy_acts):
    """With lazy transport the bar's step is rarely a transport step; it shows the last one's loss."""
    import io

    from sae_lens.config import SAETrainerConfig
    from tqdm import tqdm

    from sith_lens.lucid.sae import LucidTrainer, TrainingLucidSAE

    torch.manual_seed(0)
    sae = TrainingLucidSAE(small_training_cfg(ot_every=2, ot_warm_up_steps=0))  # full weight at once
    sae.initialize_from_data(toy_acts)
    cfg = SAETrainerConfig(total_training_samples=64, train_batch_size_samples=8, lr=1e-3, lr_scheduler_name="constant",
                           lr_warm_up_steps=0, lr_end=1e-3, device="cpu", dead_feature_window=100, feature_sampling_window=100)
    trainer = LucidTrainer(cfg=cfg, sae=sae, data_provider=iter(()))
    outputs = []
    for step in range(3):  # steps 0 and 2 transport, step 1 does not
        trainer.n_training_steps = step
        outputs.append(trainer.step(toy_acts.batch_at(step, 8, seed=0)))
    assert float(outputs[1].losses["gcmt"]) == 0.0 and float(outputs[2].losses["gcmt"]) > 0
    trainer.n_training_steps = 100
    bar = tqdm(total=1, file=io.StringIO())
    trainer._update_pbar(outputs[1], bar)
    shown = float(bar.desc.split("gcmt: ")[1].split()[0].rstrip(":"))
    assert shown == pytest.approx(float(outputs[2].losses["gcmt"]) / 2, rel=1e-4)


def test_wider_cost_cut_sends_alignment_gradient_below_the_top_k(toy_acts):
    from sith_lens.lucid.sae import TrainingLucidSAE

    batch = toy_acts.batch_at(0, 4, seed=0)  # few patches, many latents: some latents are in no code
    grads = {}
    for cost_k in (0, 24):
        torch.manual_seed(0)
        sae = TrainingLucidSAE(small_training_cfg(d_sae=424, ot_cost_k=cost_k, ot_every=1))
        sae.initialize_from_data(toy_acts)
        out = _step(sae, batch, 0)
        out.losses["gcmt"].backward()
        grads[cost_k] = sae.W_enc_vision.grad[:, : sae.cfg.n_shared].abs().sum(0)
        codes = sae.encode(batch.patch_rows, "vision")[:, : sae.cfg.n_shared]
        never_in_code = (codes == 0).all(0)
    assert bool(never_in_code.any())
    # on the codes, a latent outside every code gets no transport gradient; with a wider cut some do
    assert float(grads[0][never_in_code].abs().max()) == 0.0
    assert float(grads[24][never_in_code].abs().max()) > 0.0


def test_training_config_rejects_bad_lazy_and_cost_settings():
    with pytest.raises(ValueError, match="ot_every must be >= 1"):
        small_training_cfg(ot_every=0)
    with pytest.raises(ValueError, match="ot_cost_k must be 0"):
        small_training_cfg(ot_cost_k=3)  # below k_shared=6


def test_training_is_seeded_and_resumable(toy_acts, tmp_path):
    from sith_lens.lucid.sae import train_lucid

    cfg = small_training_cfg()
    args = dict(steps=12, batch_size=16, lr=3e-3, seed=1, progress=False)
    full = train_lucid(toy_acts, cfg, **args)
    again = train_lucid(toy_acts, cfg, **args)
    # equal up to float rounding (CPU reductions may round differently with memory alignment)
    torch.testing.assert_close(full.vision.W_dec, again.vision.W_dec, rtol=1e-5, atol=1e-6)
    train_lucid(toy_acts, cfg, out_dir=tmp_path / "run", n_checkpoints=1, **args)
    checkpoints = list((tmp_path / "run" / "checkpoints").iterdir())
    assert len(checkpoints) == 1
    resumed = train_lucid(toy_acts, cfg, resume_from=checkpoints[0], **args)
    torch.testing.assert_close(resumed.vision.W_dec, full.vision.W_dec, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(resumed.text.W_enc, full.text.W_enc, rtol=1e-4, atol=1e-5)


def test_checkpoints_are_whole_and_resume_refuses_an_inconsistent_one(toy_acts, tmp_path, monkeypatch):
    """A kill before trainer_state.pt, or a run over an earlier run's --out, used to leave a
    checkpoint that --resume silently continued from."""
    import json
    import pickle

    from sith_lens.lucid.sae.trainer import CHECKPOINT_MANIFEST
    from sith_lens.lucid.sae import train_lucid

    cfg = small_training_cfg()
    args = dict(steps=8, batch_size=16, lr=3e-3, seed=1, progress=False)
    train_lucid(toy_acts, cfg, out_dir=tmp_path / "a", n_checkpoints=1, **args)
    train_lucid(toy_acts, cfg, out_dir=tmp_path / "b", n_checkpoints=1, **{**args, "seed": 2})
    (ckpt,) = (tmp_path / "a" / "checkpoints").iterdir()
    (other,) = (tmp_path / "b" / "checkpoints").iterdir()
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(
        ["cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "trainer_state.pt", "activation_scaler.json",
         CHECKPOINT_MANIFEST])
    assert not [p for p in (tmp_path / "a" / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp folders
    train_lucid(toy_acts, cfg, resume_from=ckpt, **args)  # a whole checkpoint of the same run resumes

    def damaged(name, change):
        import shutil

        copy = tmp_path / name
        shutil.copytree(ckpt, copy)
        change(copy)
        return copy

    cases = [
        (damaged("no-manifest", lambda c: (c / CHECKPOINT_MANIFEST).unlink()), "not a complete LUCID checkpoint"),
        (damaged("mixed", lambda c: (c / "trainer_state.pt").write_bytes((other / "trainer_state.pt").read_bytes())),
         "not the ones its manifest lists"),
        (damaged("truncated", lambda c: (c / "sae_weights.safetensors").write_bytes(b"")), "not the ones its manifest lists"),
    ]
    for path, words in cases:
        with pytest.raises(ValueError, match=words):
            train_lucid(toy_acts, cfg, resume_from=path, **args)
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.003 then, 0.001 now; seed: 1 then, 3 now\)"):
        train_lucid(toy_acts, cfg, resume_from=ckpt, **{**args, "lr": 1e-3, "seed": 3})

    # a crafted trainer_state.pt (manifest updated to match) must not run its payload, even when torch is
    # told to load full pickles by default
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    def craft(c):
        from sith_lens.lucid.sae.trainer import _file_hashes

        (c / "trainer_state.pt").write_bytes(pickle.dumps({"optimizer": Payload()}))
        manifest = json.loads((c / CHECKPOINT_MANIFEST).read_text())
        manifest["files"] = _file_hashes(c)
        (c / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest))

    crafted = damaged("crafted", craft)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ValueError, match="holds more than tensors and numbers"):
        train_lucid(toy_acts, cfg, resume_from=crafted, **args)
    assert not (tmp_path / "pwned").exists()


# -- bad input ----------------------------------------------------------------------------------------
def test_bad_input_is_rejected_clearly(toy, toy_acts, tmp_path):
    from sae_lens import SAE
    from sae_lens.saes.sae import TrainStepInput

    from sith_lens.lucid.sae import LucidSAE, TrainingLucidSAE, load_lucid, train_lucid

    sae = LucidSAE(small_cfg())
    with pytest.raises(ValueError, match="d_in=128"):
        sae.vision.encode(torch.randn(3, 64))
    with pytest.raises(ValueError, match="modality must be 'vision' or 'text'"):
        sae.encode(torch.randn(3, 128), modality="image")
    with pytest.raises(ValueError, match="sae.vision.encode"):
        sae.encode(torch.randn(3, 128))
    with pytest.raises(ValueError, match="no shared latent"):
        small_cfg(d_sae=24)
    with pytest.raises(ValueError, match="k_shared"):
        small_cfg(k_shared=100)
    with pytest.raises(ValueError, match="empty"):
        sith_lens.collect_pairs(toy, [torch.zeros(2, 3, 64, 64)], [["a red circle", "  "]], n_batches=1, progress=False)
    with pytest.raises(ValueError, match="activations have width 128"):
        train_lucid(toy_acts, small_training_cfg(d_in=64), steps=1, progress=False)
    with pytest.raises(TypeError, match="paired batches"):
        TrainingLucidSAE(small_training_cfg()).training_forward_pass(TrainStepInput(
            sae_in=torch.randn(4, 128), coefficients={}, dead_neuron_mask=None, n_training_steps=0,
            is_logging_step=False))

    sae.save_model(tmp_path / "ok")
    (tmp_path / "ok" / "sae_weights.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_lucid(tmp_path / "ok")
    # weights from an SAE of another shape: SAELens's own loader reports what differs
    LucidSAE(small_cfg(d_sae=100)).save_model(tmp_path / "other")
    (tmp_path / "ok" / "sae_weights.safetensors").write_bytes((tmp_path / "other" / "sae_weights.safetensors").read_bytes())
    with pytest.raises(ValueError, match="do not match cfg.json"):
        SAE.load_from_disk(tmp_path / "ok")
    with pytest.raises(ValueError, match="holds one view already"):
        sae.text.save_model(tmp_path / "view")
        load_lucid(tmp_path / "view", modality="text")
    with pytest.raises(FileNotFoundError, match="not a saved SAE"):
        load_lucid(tmp_path / "missing")


def test_non_finite_activations_configs_weights_and_losses_are_refused(toy_acts, tmp_path):
    """NaN used to train into an all-NaN SAE (exit 0) and load through both loaders."""
    import dataclasses

    from sae_lens import SAE

    from sith_lens.lucid.sae.trainer import LucidTrainer, TrainingDivergedError
    from sith_lens.lucid.sae import LucidSAE, load_lucid, train_lucid

    patches = toy_acts.patches.clone()
    patches[0, 3, 5] = float("nan")
    with pytest.raises(ValueError, match="LUCID activations: patches holds 1 NaN.*collect them again"):
        dataclasses.replace(toy_acts, patches=patches)
    toy_acts.save(tmp_path / "acts")
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tmp_path / "acts" / "activations.safetensors"))
    tensors["tokens"][0, 0, 0] = float("inf")
    save_file(tensors, str(tmp_path / "acts" / "activations.safetensors"))
    with pytest.raises(ValueError, match="tokens holds 1 NaN or infinite"):
        PairedActivations.load(tmp_path / "acts")
    for field in ("ot_coefficient", "aux_loss_coefficient", "ot_eps"):
        with pytest.raises(ValueError, match=f"{field} is nan; pass a finite number"):
            small_training_cfg(**{field: float("nan")})

    sae = LucidSAE(small_cfg())
    with torch.no_grad():
        sae.text.W_dec[3, 0] = float("nan")
    sae.save_model(tmp_path / "nan-sae")
    for load in (load_lucid, SAE.load_from_disk):
        with pytest.raises(ValueError, match="LUCID weights: text.W_dec holds 1 NaN.*train it again"):
            load(tmp_path / "nan-sae")

    # a step whose loss is not finite stops the run with the step and the fix
    original = LucidTrainer.step
    calls = []

    def poisoned(self, batch):
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                self.sae.W_enc_vision.fill_(float("inf"))
        return original(self, batch)

    LucidTrainer.step = poisoned
    try:
        with pytest.raises(TrainingDivergedError, match="diverged at step 3 .*Lower the learning rate"):
            train_lucid(toy_acts, small_training_cfg(ot_every=1), steps=6, batch_size=16, progress=False,
                        out_dir=tmp_path / "diverged")
    finally:
        LucidTrainer.step = original
    assert not (tmp_path / "diverged" / "final").exists()


def test_fvu_of_perfect_and_mean_reconstructions():
    x = torch.randn(20, 5)
    assert float(fvu(x, x)) == 0.0
    torch.testing.assert_close(fvu(x, x.mean(0, keepdim=True).expand_as(x)), torch.tensor(1.0))


# -- splicing into the towers ------------------------------------------------------------------------
@pytest.mark.parametrize("hook", ["hook_joint_tokens", "blocks.2.hook_resid_post"])
def test_splicing_with_error_term_leaves_outputs_unchanged(toy, hook):
    from sith_lens.lucid.sae import LucidSAE

    torch.manual_seed(0)
    sae = LucidSAE(small_cfg())
    sae.cfg.metadata.hook_name_vision = hook
    sae.cfg.metadata.hook_name_text = hook
    pixels = toy.preprocess(torch.randint(0, 255, (2, 64, 64, 3), dtype=torch.uint8).numpy())
    toks = toy.tokenize(["a red circle at the top left", "a small blue striped square"])
    text_args = (toks.input_ids,)
    text_kwargs = {"attention_mask": toks.attention_mask}
    for tower, args, kwargs in ((toy.vision, (pixels,), {}), (toy.text, text_args, text_kwargs)):
        clean_tokens = tower(*args, return_type="tokens", **kwargs)
        clean_embed = tower(*args, **kwargs)
        out, cache = tower.run_with_cache_with_saes(*args, saes=[sae], use_error_term=True, return_type="tokens", **kwargs)
        # relative to the tensor's scale, as every parity check here: a fixed atol of 1e-5 on outputs of
        # size ~6 missed on 2 of 8 seeds (cached runs use the explicit attention, ~3e-6 of the scale)
        err = ((out - clean_tokens).abs().max() / clean_tokens.abs().max()).item()
        assert err < 1e-5, f"splicing with the error term changed the output by {err:.2e} of its scale"
        codes = cache[f"{hook}.hook_sae_acts_post"]
        assert codes.shape[-1] == 96 and (codes != 0).any()
        embed = tower.run_with_saes(*args, saes=sae, use_error_term=True, **kwargs)
        torch.testing.assert_close(embed, clean_embed, rtol=1e-5, atol=1e-5)
        # without the error term the reconstruction replaces the activations
        spliced = tower.run_with_saes(*args, saes=sae, use_error_term=False, return_type="tokens", **kwargs)
        assert not torch.allclose(spliced, clean_tokens, atol=1e-3)
        assert not tower._acts_to_saes and isinstance(tower.hook_dict[hook], type(tower.hook_dict["blocks.0.hook_resid_pre"]))
        # add_sae stays until reset_saes
        tower.add_sae(sae, use_error_term=True)
        assert f"{hook}.hook_sae_acts_post" in tower.hook_dict
        tower.reset_saes()
        assert f"{hook}.hook_sae_acts_post" not in tower.hook_dict


def test_splicing_excludes_special_positions(toy):
    from sith_lens.lucid.sae import LucidSAE

    sae = LucidSAE(small_cfg())
    sae.cfg.metadata.hook_name_text = "blocks.1.hook_resid_post"
    toks = toy.tokenize(["a red circle", "a small blue striped square at the top"])
    _, clean = toy.text.run_with_cache(toks.input_ids, attention_mask=toks.attention_mask)
    _, cache = toy.text.run_with_cache_with_saes(toks.input_ids, attention_mask=toks.attention_mask, saes=sae,
                                                 exclude_special_tokens=True)
    special = torch.isin(toks.input_ids, torch.tensor(toy.text.special_token_ids)) | ~toks.attention_mask.bool()
    out = cache["blocks.1.hook_resid_post.hook_sae_output"]
    torch.testing.assert_close(out[special], clean["blocks.1.hook_resid_post"][special])
    assert not torch.allclose(out[~special], clean["blocks.1.hook_resid_post"][~special], atol=1e-3)
    with pytest.raises(ValueError, match="no hook"):
        toy.vision.add_sae(sae, hook_name="blocks.99.hook_resid_post")


# -- your own data, the command line, evaluation --------------------------------------------------------
def _write_folder(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / name)
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8)).save(tmp_path / "gray.png")
    lines = [{"image": "a.png", "caption": "a red circle"}, {"image": "b.png", "caption": "a blue square"},
             {"image": "a.png", "caption": "a large red circle at the top"}, {"image": "gray.png", "caption": "a star"}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return tmp_path / "captions.jsonl"


def test_folder_collection_pairs_captions_with_their_images(toy, tmp_path):
    from sith_lens.lucid.collect import collect_folder_activations

    captions = _write_folder(tmp_path)
    acts = collect_folder_activations(toy, captions, batch_size=2, progress=False)
    assert acts.patches.shape == (3, 64, 128) and len(acts) == 4
    assert acts.image_index.tolist() == [0, 1, 0, 2]
    assert acts.token_strings[2] == ["a", "large", "red", "circle", "at", "the", "top"]
    direct = sith_lens.collect_pairs(toy, [toy.preprocess([str(tmp_path / "b.png")])], [["a blue square"]],
                                     n_batches=1, progress=False)
    torch.testing.assert_close(acts.patches[1], direct.patches[0])


@pytest.mark.parametrize("line, message", [
    ("not json", "not valid JSON"),
    ('{"image": "a.png"}', "string fields"),
    ('{"image": "a.png", "caption": " "}', "empty caption"),
    ('{"image": "missing.png", "caption": "a cat"}', "not a file"),
])
def test_bad_captions_files_are_rejected(tmp_path, line, message):
    from sith_lens.lucid.collect import read_captions_jsonl

    _write_folder(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png", "caption": "ok"}\n' + line + "\n")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_captions_jsonl(tmp_path / "bad.jsonl")


def test_cli_trains_and_reports(tmp_path, capsys, monkeypatch):
    from sae_lens import SAE

    from sith_lens.cli import main

    monkeypatch.setenv("SITH_LENS_CACHE", str(tmp_path / "cache"))
    args = ["lucid", "train", "--toy-pairs", "120", "--steps", "6", "--batch-size", "8", "--d-sae", "96",
            "--n-private", "8", "--k-shared", "4", "--holdout", "20", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pairs"] == 100 and 0 < summary["holdout"]["fvu_vision"] < 2
    assert summary["holdout"]["l0_vision"] <= 4 + 2
    assert type(SAE.load_from_disk(tmp_path / "run" / "final")).__name__ == "LucidSAE"
    assert len(list((tmp_path / "cache" / "lucid").iterdir())) == 1  # activations cached for the next run
    assert main(["lucid", "train", "--model", "random:tiny", "--out", str(tmp_path / "x")]) == 2
    assert "--captions" in capsys.readouterr().err


def test_lucid_train_defaults_are_the_shipped_release_recipe(tmp_path, capsys, monkeypatch):
    """`sith-lens lucid train --holdout 0` trains the release: its defaults are DEFAULTS, which the
    configs read too, and a short run saves the shipped release's settings."""
    from dataclasses import asdict, fields

    from sith_lens.cli import main
    from recipes import lucid_release as release
    from sith_lens.lucid.commands import training_config
    from sith_lens.lucid.defaults import DEFAULTS
    from sith_lens.lucid.sae import TrainingLucidSAEConfig
    from sith_lens.lucid.transport import GCMTConfig

    parser_args = _lucid_train_args(["--out", str(tmp_path / "x")])
    assert {k: getattr(parser_args, k) for k in asdict(DEFAULTS) if hasattr(parser_args, k)} == \
        {k: v for k, v in asdict(DEFAULTS).items() if hasattr(parser_args, k)}
    assert not {f.name for f in fields(DEFAULTS)} - set(vars(parser_args)) - {"eval_pairs", "eval_seed"}
    from_cli = training_config(parser_args, 128, "toy")
    plain = TrainingLucidSAEConfig(d_in=128, d_sae=DEFAULTS.d_sae)
    assert {f.name: getattr(from_cli, f.name) for f in fields(plain) if f.name != "metadata"} == \
        {f.name: getattr(plain, f.name) for f in fields(plain) if f.name != "metadata"}
    assert plain.gcmt() == GCMTConfig()

    # a short run with the release's command saves the shipped release's settings
    monkeypatch.setenv("SITH_LENS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "rebuilt"
    quick = ["--toy-pairs", "64", "--steps", "4", "--no-progress"]
    assert main(release.train_command(out, quick)) == 0
    capsys.readouterr()
    from sith_lens.lucid.sae.registry import release_dir

    shipped = json.loads((release_dir() / "final" / "cfg.json").read_text())
    rebuilt = json.loads((out / "final" / "cfg.json").read_text())
    step_dependent = {"ot_warm_up_steps"}
    details = [{k: v for k, v in c["metadata"]["training_architecture_details"].items() if k not in step_dependent}
               for c in (shipped, rebuilt)]
    assert details[0] == details[1]
    shape = ("d_in", "d_sae", "n_private_vision", "n_private_text", "k_shared", "k_private", "architecture")
    assert {k: shipped[k] for k in shape} == {k: rebuilt[k] for k in shape}
    for key in ("model_name", "hook_name_vision", "hook_name_text"):
        assert shipped["metadata"][key] == rebuilt["metadata"][key]
    record = json.loads((release_dir() / "record.json").read_text())
    assert record["recipe"] == asdict(DEFAULTS) and record["extra_options"] == []


def _lucid_train_args(argv):
    import argparse

    from sith_lens.lucid.commands import add_lucid_parser

    parser = argparse.ArgumentParser()
    add_lucid_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["lucid", "train", *argv])


class _FixedCodes:
    """A duck-typed SAE whose codes are given: one shared latent per object slot."""

    def __init__(self, patch_codes, token_codes):
        from types import SimpleNamespace

        self.cfg = SimpleNamespace(d_sae=patch_codes.shape[-1], n_private_vision=0, n_private_text=0)
        self.vision = SimpleNamespace(encode=lambda x: patch_codes)
        self.text = SimpleNamespace(encode=lambda x: token_codes)


def test_pointing_game_scores_peaks_against_object_masks(toy_acts):
    acts = toy_acts.subset(torch.arange(20))
    batch = acts.pair_batch(torch.arange(20))
    labels = acts.extras["image.patch_labels"].reshape(20, -1)
    objects = acts.extras["pair.token_objects"][:, : batch.tokens.shape[1]]
    # latent o fires on object o's patches and on the words that name object o: every peak is right
    patch_codes = torch.stack([(labels == o).float() for o in range(3)], -1)
    token_codes = torch.stack([(objects == o).float() for o in range(3)], -1)
    from sith_lens.lucid.evaluate import pointing_game

    assert pointing_game(_FixedCodes(patch_codes, token_codes), acts)["pointing_game"] == 1.0
    # words pointing at the wrong object's latent miss every time
    wrong = token_codes.roll(1, dims=-1)
    score = pointing_game(_FixedCodes(patch_codes, wrong), acts)
    assert score["pointing_game"] == 0.0 and score["words"] > 20


# -- interpretation ------------------------------------------------------------------------------------
def test_slot_words_merge_pieces_for_each_tokenizer_family():
    from sith_lens.lucid.interpret import slot_words

    assert slot_words(["▁a", "▁bath", "room"]) == ["a", "bathroom", "bathroom"]
    assert slot_words(["Ġa", "Ġbath", "room", ","]) == ["a", "bathroom", "bathroom", "bathroom"]
    assert slot_words(["a</w>", "bath", "room</w>", "red</w>"]) == ["a", "bathroom", "bathroom", "red"]
    assert slot_words(["a", "red", "circle"]) == ["a", "red", "circle"]


def test_cluster_terms_groups_near_embeddings():
    from sith_lens.lucid.interpret import category, cluster_terms

    e = torch.tensor([[1.0, 0.0], [0.95, 0.05], [0.0, 1.0]])
    clusters = cluster_terms(["bus", "buses", "cat"], [1.0, 2.0, 2.5], e, threshold=0.3)
    assert clusters == [[1, 0], [2]]  # heaviest cluster first, heaviest term first
    assert category("red") == "color" and category("striped") == "texture" and category("dog") == "object"


def test_labels_recover_a_planted_dictionary(toy, toy_acts):
    """Latent c fires on the tokens naming colour c and on the patches of objects of colour c:
    term clustering must label it with that colour, and its top patches must lie on such objects."""
    from sith_lens.lucid.interpret import label_latents
    from sith_lens.toyworld.attributes import ATTRIBUTES, COLORS

    acts = toy_acts.subset(torch.arange(60))
    batch = acts.pair_batch(torch.arange(60))
    color = ATTRIBUTES.index("color")
    labels = acts.extras["image.patch_labels"].reshape(60, -1)
    values = acts.extras["image.values"][:, :, color]  # [I, 3]
    patch_color = torch.where(labels >= 0, values.gather(1, labels.clamp_min(0)), -1)
    patch_codes = torch.stack([(patch_color == c).float() for c in range(len(COLORS))], -1)
    width = batch.tokens.shape[1]
    token_color = torch.full((60, width), -1)
    for p, row in enumerate(acts.token_strings):
        for slot, token in enumerate(row[:width]):
            if token in COLORS:
                token_color[p, slot] = COLORS.index(token)
    token_codes = torch.stack([(token_color == c).float() for c in range(len(COLORS))], -1)
    report = label_latents(_FixedCodes(patch_codes, token_codes), acts, toy, n_top_patches=5)
    for c, name in enumerate(COLORS):
        entry = report.label_of(c)
        if entry.token_frequency == 0:
            continue  # a colour no caption of these 60 names
        assert (entry.label, entry.category, entry.purity) == (name, "color", 1.0)
        for image, row, col, _ in entry.top_patches:
            assert patch_color[image, row * acts.grid + col] == c


# -- the packaged release --------------------------------------------------------------------------------
def test_packaged_release_loads_offline_and_reconstructs(toy_acts):
    from sae_lens import SAE
    from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface

    from sith_lens.lucid.evaluate import reconstruction_report

    sae = SAE.from_pretrained("sith-lens-toy-lucid", "final")
    assert type(sae).__name__ == "LucidSAE" and sae.cfg.d_in == 128
    assert sae.cfg.metadata.model_name == "toy" and sae.vision.cfg.metadata.hook_name == "hook_joint_tokens"
    assert load_sae_config_from_huggingface("sith-lens-toy-lucid", "final")["architecture"] == "lucid"
    report = reconstruction_report(sae, toy_acts)
    assert report["fvu_vision"] < 0.3 and report["fvu_text"] < 0.3, report
    with pytest.raises(ValueError, match="not found"):
        SAE.from_pretrained("sith-lens-toy-lucid", "missing")


def test_cli_label_and_ground_with_the_release(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from sith_lens.cli import main
    from sith_lens.lucid.interpret import LucidReport
    from sith_lens.toyworld import ToyWorld

    monkeypatch.setenv("SITH_LENS_CACHE", str(tmp_path / "cache"))
    assert main(["lucid", "label", "--toy-pairs", "96", "--toy-seed", "9", "--out", str(tmp_path / "labels.json")]) == 0
    report = LucidReport.from_json(tmp_path / "labels.json")
    labelled = [x for x in report.labels if x.label]
    assert len(report.labels) == 768 and labelled
    assert all(0.4 <= x.purity <= 1 and x.category for x in labelled)
    batch = ToyWorld(seed=9).batch(0, 1)
    Image.fromarray(batch.images[0]).save(tmp_path / "scene.png")
    args = ["lucid", "ground", "--image", str(tmp_path / "scene.png"), "--caption", batch.texts[0],
            "--out", str(tmp_path / "ground.json")]
    assert main(args) == 0
    heat = json.loads((tmp_path / "ground.json").read_text())["heatmaps"]
    assert heat and all(len(h) == 8 and len(h[0]) == 8 for h in heat.values())
    assert not {"a", "the", "at"} & set(heat)  # function words are left out by default
    assert main(args[:-2] + ["--word", "zebra", "--out", str(tmp_path / "x.json")]) == 2
    assert "not a word of the caption" in capsys.readouterr().err


def test_release_card_only_rescores_with_the_pointing_baselines(tmp_path):
    import shutil

    import sith_lens
    from recipes.lucid_release import main as release_main

    shipped = Path(sith_lens.__file__).parent / "assets" / "lucid_toy"
    out = tmp_path / "release"
    shutil.copytree(shipped, out)
    record = json.loads((out / "record.json").read_text())
    record["recipe"]["eval_pairs"] = 48  # a quick re-score
    (out / "record.json").write_text(json.dumps(record))
    assert release_main(["--out", str(out), "--card-only"]) == 0
    rescored = json.loads((out / "record.json").read_text())["held_out"]
    base = rescored["pointing_baselines"]
    assert 0 <= base["background_distance"] <= 1 and base["margin_vs_word_agnostic"]["against"] in (
        "background_distance", "release_code_norm")
    assert rescored["pointing_game"] - max(base["background_distance"], base["release_code_norm"]) == pytest.approx(
        base["margin_vs_word_agnostic"]["value"], abs=1e-3)
    assert "ignores the word" in (out / "README.md").read_text()
    (out / "record.json").unlink()
    with pytest.raises(FileNotFoundError, match="without --card-only"):
        release_main(["--out", str(out), "--card-only"])


def test_lucid_folders_with_bad_configs_or_training_layouts(tmp_path):
    """``{}``, a config that is not LUCID's, a training-layout file of the wrong shape: each named
    with its fix; a training checkpoint (training config, one normalised decoder) loads as the
    SAE it holds."""
    from safetensors.torch import save_file

    from sith_lens.lucid.sae import LucidSAE, TrainingLucidSAE, load_lucid

    folder = tmp_path / "sae"
    folder.mkdir()
    (folder / "sae_weights.safetensors").write_bytes(b"")
    for cfg, message in (({}, "names no architecture"), ({"architecture": "lucid", "d_in": 128}, "not a valid LUCID config"),
                         ({"architecture": "lucid", "d_in": 128, "d_sae": 64}, "leaves no shared latent.*raise d_sae")):
        (folder / "cfg.json").write_text(json.dumps(cfg))
        with pytest.raises(ValueError, match=message):
            load_lucid(folder)

    torch.manual_seed(0)
    training = TrainingLucidSAE(small_training_cfg())
    with torch.no_grad():
        training.scale_vision.fill_(2.5)
        training.b_enc_text.add_(0.1)
    training.save_model(tmp_path / "checkpoint")
    loaded = load_lucid(tmp_path / "checkpoint")
    assert type(loaded) is LucidSAE
    x = torch.randn(5, 128)
    for m in ("vision", "text"):
        torch.testing.assert_close(loaded.view(m)(x), training.decode(training.encode(x, m), m), rtol=1e-5, atol=1e-5)
    state = dict(training.state_dict())
    state["W_enc_text"] = state["W_enc_text"][:, :-1].contiguous()
    save_file(state, str(tmp_path / "checkpoint" / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match=r"training layout\) do not match cfg.json: \['W_enc_text'\].*save it again"):
        load_lucid(tmp_path / "checkpoint")
