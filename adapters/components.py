"""Hooked building blocks shared by every CLIP-family tower: LayerNorm, attention, MLP, block.

Weights follow TransformerLens's names and shapes and the row-vector convention (``x @ W``):
``W_Q/W_K/W_V [n_heads, d_model, d_head]``, ``W_O [n_heads, d_head, d_model]``,
``W_in [d_model, d_mlp]``, ``W_out [d_mlp, d_model]``, LayerNorm ``w``/``b``.

Hook points with nothing attached cost a module call and nothing else. Some computations run
only while somebody looks at them, exactly as in TransformerLens:

- attention uses ``F.scaled_dot_product_attention`` unless a hook sits on ``hook_attn_scores``
  or ``hook_pattern`` (then scores and pattern are materialised and hooked);
- per-head results ``hook_result`` are computed only when ``cfg.use_attn_result`` is set;
- per-head copies of the block input (``hook_q_input``/``hook_k_input``/``hook_v_input`` with
  ``cfg.use_split_qkv_input``, ``hook_attn_in`` with ``cfg.use_attn_in``) and ``hook_mlp_in``
  (``cfg.use_hook_mlp_in``) exist only when those switches are on.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.FactoredMatrix import FactoredMatrix
from transformer_lens.hook_points import HookPoint

if TYPE_CHECKING:
    from sith_lens.adapters.transformer_lens import TowerConfig


def quick_gelu(x: Tensor) -> Tensor:
    """OpenAI CLIP's activation, ``x * sigmoid(1.702 x)``."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
}


class LayerNorm(nn.Module):
    """LayerNorm with TransformerLens hooks: ``hook_scale [..., 1]`` and ``hook_normalized``.

    ``hook_normalized`` sees the output after the affine ``w``, ``b`` (as in TransformerLens).
    """

    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        if not self.hook_scale.has_hooks():
            out = F.layer_norm(x, (x.shape[-1],), self.w, self.b, self.eps)
            return self.hook_normalized(out)
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale * self.w + self.b)


class FinalLayerNorm(LayerNorm):
    """The tower's last LayerNorm, as TransformerLens's ``LayerNormPre`` after ``fold_ln``: calling it
    centres and scales (``hook_scale``, ``hook_normalized``), and its gain and bias ``w``, ``b``
    are applied by whatever reads it (``affine``: the projection, the pooling head, a zero-shot head).

    So ``apply_ln=True`` has one meaning in every ``ActivationCache`` helper: centre and divide by
    the LayerNorm scale (cached, or recomputed per component by ``accumulated_resid``), never the
    affine; ``W_U``, ``b_U`` and ``W_joint``, ``b_joint`` carry it, as a folded ``W_U`` does in
    TransformerLens.
    """

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        if not self.hook_scale.has_hooks():
            return self.hook_normalized(F.layer_norm(x, (x.shape[-1],), None, None, self.eps))
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale)

    def affine(self, normalized: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """``normalized * w + b``: the gain and bias, applied to this module's output."""
        return normalized * self.w + self.b

    def full(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The whole LayerNorm, ``affine(self(x))``, as the reference implementation computes it."""
        return self.affine(self(x))


def per_head(x: Float[Tensor, "batch pos d_model"], n_heads: int) -> Float[Tensor, "batch pos n_heads d_model"]:
    """One copy of ``x`` per head (TransformerLens's split-input hooks patch them separately)."""
    return x.unsqueeze(-2).expand(*x.shape[:-1], n_heads, x.shape[-1]).clone()


class Attention(nn.Module):
    """Multi-head attention with the TransformerLens hooks q, k, v, attn_scores, pattern, z, result."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.cfg = cfg
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(h, d, e))
        self.W_K = nn.Parameter(torch.empty(h, d, e))
        self.W_V = nn.Parameter(torch.empty(h, d, e))
        self.W_O = nn.Parameter(torch.empty(h, e, d))
        self.b_Q = nn.Parameter(torch.zeros(h, e))
        self.b_K = nn.Parameter(torch.zeros(h, e))
        self.b_V = nn.Parameter(torch.zeros(h, e))
        self.b_O = nn.Parameter(torch.zeros(d))
        for w in (self.W_Q, self.W_K, self.W_V, self.W_O):
            nn.init.normal_(w, std=d**-0.5)
        self.scale = 1.0 / math.sqrt(e)
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()
        self.hook_result = HookPoint()

    @property
    def OV(self) -> FactoredMatrix:
        """``W_V @ W_O`` per head, ``[n_heads, d_model, d_model]``, kept factored."""
        return FactoredMatrix(self.W_V, self.W_O)

    @property
    def QK(self) -> FactoredMatrix:
        """``W_Q @ W_K^T`` per head, ``[n_heads, d_model, d_model]``, kept factored."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    def _project(self, x: Tensor, W: Tensor, b: Tensor) -> Tensor:
        h, d, e = W.shape
        if x.ndim == 4:  # one input per head, [b, p, h, d] (split-input hooks)
            return torch.einsum("bphd,hde->bphe", x, W) + b
        # [b, p, d] @ [d, h*e] as one matmul, then split heads: [b, p, h, e]
        return (x @ W.permute(1, 0, 2).reshape(d, h * e)).view(*x.shape[:-1], h, e) + b

    def forward(
        self,
        x: Float[Tensor, "batch pos d_model"] | Float[Tensor, "batch pos n_heads d_model"],
        mask: Float[Tensor, "batch 1 pos key_pos"] | None = None,
        context: Float[Tensor, "batch key_pos d_model"] | None = None,
        key_input: Float[Tensor, "batch pos n_heads d_model"] | None = None,
        value_input: Float[Tensor, "batch pos n_heads d_model"] | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        """``mask`` is additive (0 where attention is allowed, a large negative number elsewhere).

        ``context``: the tokens that keys and values are read from (cross-attention, as in an
        attention-pooling head); ``x`` by default. ``key_input``/``value_input``: separate
        per-head inputs for keys and values (split-input hooks); ``x`` is then per head too.
        """
        context = x if context is None else context
        q = self.hook_q(self._project(x, self.W_Q, self.b_Q))
        k = self.hook_k(self._project(context if key_input is None else key_input, self.W_K, self.b_K))
        v = self.hook_v(self._project(context if value_input is None else value_input, self.W_V, self.b_V))
        if self.hook_attn_scores.has_hooks() or self.hook_pattern.has_hooks():
            scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * self.scale
            if mask is not None:
                scores = scores + mask
            scores = self.hook_attn_scores(scores)
            pattern = self.hook_pattern(torch.softmax(scores, dim=-1))
            z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        else:
            z = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=self.scale
            ).transpose(1, 2)
        z = self.hook_z(z)
        if self.cfg.use_attn_result:
            result = self.hook_result(torch.einsum("bphe,hed->bphd", z, self.W_O))
            return result.sum(-2) + self.b_O
        h, e, d = self.W_O.shape
        return z.reshape(*z.shape[:-2], h * e) @ self.W_O.reshape(h * e, d) + self.b_O


class MLP(nn.Module):
    """Two-layer MLP with ``hook_pre`` (before the activation) and ``hook_post`` (after it)."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        if cfg.act_fn not in ACTIVATIONS:
            raise ValueError(f"unknown act_fn {cfg.act_fn!r}; expected one of {sorted(ACTIVATIONS)}")
        self.act = ACTIVATIONS[cfg.act_fn]
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        nn.init.normal_(self.W_in, std=cfg.d_model**-0.5)
        nn.init.normal_(self.W_out, std=cfg.d_mlp**-0.5)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        pre = self.hook_pre(x @ self.W_in + self.b_in)
        return self.hook_post(self.act(pre)) @ self.W_out + self.b_out


class TransformerBlock(nn.Module):
    """Pre-LN block: ``resid_mid = resid_pre + attn(ln1(resid_pre))``, then the MLP likewise.

    TransformerLens's optional input hooks, off by default (``cfg.use_attn_in``,
    ``cfg.use_split_qkv_input``, ``cfg.use_hook_mlp_in``): ``hook_attn_in`` ``[batch, pos, n_heads,
    d_model]`` (one copy of ``resid_pre`` per head, feeding queries, keys and values),
    ``hook_q_input``/``hook_k_input``/``hook_v_input`` (one copy per head for each), and
    ``hook_mlp_in`` ``[batch, pos, d_model]`` (what enters ``ln2``). ``ln1`` then normalises each
    copy; the output is unchanged while nobody edits them.
    """

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.cfg = cfg
        self.hook_resid_pre = HookPoint()
        self.hook_attn_in = HookPoint()
        self.hook_q_input = HookPoint()
        self.hook_k_input = HookPoint()
        self.hook_v_input = HookPoint()
        self.ln1 = LayerNorm(cfg.d_model, cfg.eps)
        self.attn = Attention(cfg)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_in = HookPoint()
        self.ln2 = LayerNorm(cfg.d_model, cfg.eps)
        self.mlp = MLP(cfg)
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def _attend(self, resid: Tensor, mask: Tensor | None) -> Tensor:
        cfg = self.cfg
        if cfg.use_split_qkv_input:
            q, k, v = (hook(per_head(resid, cfg.n_heads)) for hook in (self.hook_q_input, self.hook_k_input, self.hook_v_input))
            return self.attn(self.ln1(q), mask, key_input=self.ln1(k), value_input=self.ln1(v))
        if cfg.use_attn_in:
            x = self.ln1(self.hook_attn_in(per_head(resid, cfg.n_heads)))
            return self.attn(x, mask, key_input=x, value_input=x)
        return self.attn(self.ln1(resid), mask)

    def forward(
        self,
        resid: Float[Tensor, "batch pos d_model"],
        mask: Float[Tensor, "batch 1 pos pos"] | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        resid = self.hook_resid_pre(resid)
        resid = self.hook_resid_mid(resid + self.hook_attn_out(self._attend(resid, mask)))
        mlp_in = self.hook_mlp_in(resid.clone()) if self.cfg.use_hook_mlp_in else resid
        return self.hook_resid_post(resid + self.hook_mlp_out(self.mlp(self.ln2(mlp_in))))


class AttentionPool(nn.Module):
    """Attention pooling (SigLIP's "MAP" head): a learned probe attends over the final tokens,
    then a LayerNorm + MLP residual; ``forward`` returns the pooled embedding ``[batch, d_model]``.

    Hooks: the probe's attention has every ``Attention`` hook (``attn_pool.attn.hook_pattern``
    ``[batch, n_heads, 1, pos]``, ``attn_pool.attn.hook_z`` ``[batch, 1, n_heads, d_head]``,
    ``attn_pool.attn.hook_result`` with ``use_attn_result``), then ``hook_attn_out``,
    ``ln.hook_*``, ``mlp.hook_pre/hook_post``, ``hook_mlp_out`` and ``hook_out`` (the pooled
    embedding).
    """

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.probe = nn.Parameter(torch.randn(cfg.d_model) * cfg.d_model**-0.5)
        self.attn = Attention(cfg)
        self.hook_attn_out = HookPoint()
        self.ln = LayerNorm(cfg.d_model, cfg.eps)
        self.mlp = MLP(cfg)
        self.hook_mlp_out = HookPoint()
        self.hook_out = HookPoint()

    def forward(self, tokens: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch d_model"]:
        probe = self.probe.expand(tokens.shape[0], 1, -1)
        x = self.hook_attn_out(self.attn(probe, context=tokens))
        x = x + self.hook_mlp_out(self.mlp(self.ln(x)))
        return self.hook_out(x[:, 0])

    def per_token(self, tokens: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        """Every token pooled on its own, as if the probe attended to it alone (MaskCLIP's trick):
        the head's value-output path, then the LayerNorm + MLP residual. The ``ln`` and ``mlp``
        hooks see every token."""
        a = self.attn
        h, d, e = a.W_V.shape
        v = a._project(tokens, a.W_V, a.b_V).reshape(*tokens.shape[:-1], h * e)
        x = v @ a.W_O.reshape(h * e, d) + a.b_O
        return x + self.mlp(self.ln(x))

    @property
    def W_VO(self) -> Float[Tensor, "d_model d_model"]:
        """The value-output map summed over heads, ``sum_h W_V[h] @ W_O[h]``: the linear part of
        ``per_token`` (no biases, no MLP)."""
        return torch.einsum("hde,hef->df", self.attn.W_V, self.attn.W_O)
