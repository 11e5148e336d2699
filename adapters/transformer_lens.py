"""CLIP towers as TransformerLens ``HookedRootModule``s.

Both towers speak TransformerLens's vocabulary exactly: the hook names of ``HookedTransformer``
(``blocks.{l}.attn.hook_z`` and friends, ``ln_final.hook_scale``), its weight shapes
(``W_V [n_layers, n_heads, d_model, d_head]``), ``OV``/``QK`` as ``FactoredMatrix``, and
``run_with_cache`` returning an ``ActivationCache`` whose helpers (``decompose_resid``,
``stack_head_results``, ``apply_ln_to_stack``, ``cache["z", 3]``) work as on a language model.

Vision tower, in the order the forward pass runs::

    embed.hook_patches   [batch, pos, d_model]  CLS (position 0, when the family has one) + patch embeddings
    embed.hook_pos       [batch, pos, d_model]  position embeddings
    ln_pre.hook_scale / ln_pre.hook_normalized  (families with a pre-LayerNorm, such as CLIP)
    hook_embed           [batch, pos, d_model]  what the embedding stage writes into the residual stream
    blocks.{l}.hook_resid_pre ... blocks.{l}.hook_resid_post
    ln_final.hook_scale / ln_final.hook_normalized   (applied to every token, not only CLS)
    hook_joint_tokens    [batch, pos, d_proj]   every token in the joint space (only with return_type="tokens")

``ln_final`` centres and scales only, as TransformerLens's ``LayerNormPre`` after ``fold_ln``: its
gain and bias are applied by the read-out that follows it (``components.FinalLayerNorm``), so
``apply_ln=True`` means one thing in every ``ActivationCache`` helper and the folded read-outs
``W_joint``/``b_joint`` (into the joint space) and ``W_U``/``b_U`` (a zero-shot head,
``unembed.py``) turn its output into embeddings and logits exactly.

Optional hooks, off by default as in TransformerLens: ``attn.hook_result``, the split inputs
``hook_q_input``/``hook_k_input``/``hook_v_input``, ``hook_attn_in`` and ``hook_mlp_in``
(``hook_switches.py``).

``hook_embed`` is taken *after* ``ln_pre``: CLIP normalises the embeddings before the first block,
so that is what enters the residual stream, and ``cache.decompose_resid()`` then sums exactly to
the final residual. The vision tower has no ``hook_pos_embed`` for the same reason.

A SigLIP vision tower has no CLS token and no ``ln_pre``, and pools with an attention head after
``ln_final``: ``attn_pool.attn.hook_q/k/v/attn_scores/pattern/z/result``, ``attn_pool.hook_attn_out``,
``attn_pool.ln.*``, ``attn_pool.mlp.*``, ``attn_pool.hook_mlp_out``, ``attn_pool.hook_out``
(``components.AttentionPool``).

Text tower: ``hook_embed`` (token embeddings) + ``hook_pos_embed`` = ``blocks.0.hook_resid_pre``,
causal attention (bidirectional for SigLIP), ``ln_final``, pooling at the end-of-text token (the
last position for SigLIP), as in each family's reference implementation; ``hook_joint_tokens`` as
for vision.

Both towers splice SAELens SAEs in as ``HookedSAETransformer`` does (``splice.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.FactoredMatrix import FactoredMatrix
from transformer_lens.hook_points import HookPoint

try:  # TransformerLens 3.x and 4.x
    from transformer_lens.HookedRootModule import HookedRootModule
except ImportError:  # TransformerLens 2.x
    from transformer_lens.hook_points import HookedRootModule

from sith_lens.adapters.components import AttentionPool, FinalLayerNorm, LayerNorm, TransformerBlock
from sith_lens.adapters.hook_switches import HookSwitches
from sith_lens.adapters.splice import SAESplicing
from sith_lens.adapters.text_tokens import TextTokenizing
from sith_lens.adapters.unembed import LinearReadout, NoZeroShotHeadError, ZeroShotUnembed

Modality = Literal["vision", "text"]


MAX_NORMALISED_PIXEL = 25.0
"""Largest absolute pixel value the vision towers accept: normalised images stay within about 3
(CLIP, mean 0.48 / std 0.27) or 1 (SigLIP); 0-255 values are a missed ``preprocess``."""

POOLINGS = {"vision": ("cls", "avg", "map"), "text": ("eos", "argmax", "last", "first")}
"""Accepted ``TowerConfig.pooling`` values per modality; the first is the default."""


@dataclass
class TowerConfig:
    """Configuration of one tower. Field names follow ``HookedTransformerConfig`` where one exists."""

    modality: Modality
    """``"vision"`` or ``"text"``."""
    n_layers: int
    """Number of transformer blocks."""
    n_heads: int
    """Attention heads per block."""
    d_model: int
    """Width of the residual stream."""
    d_head: int
    """Width of one head; ``n_heads * d_head == d_model`` for CLIP."""
    d_mlp: int
    """Hidden width of the MLP."""
    n_ctx: int
    """Number of positions: ``1 + n_patches`` for a CLIP vision tower, the text context length."""
    d_proj: int
    """Width of the joint image-text space (after the projection)."""
    act_fn: str = "quick_gelu"
    """MLP activation: ``quick_gelu`` (OpenAI CLIP), ``gelu``, ``gelu_pytorch_tanh``."""
    eps: float = 1e-5
    """LayerNorm epsilon."""
    image_size: int = 0
    """Vision only: input height and width in pixels."""
    patch_size: int = 0
    """Vision only: side of a square patch in pixels."""
    n_channels: int = 3
    """Vision only: input channels."""
    has_cls_token: bool = True
    """Vision only: a learned CLS token at position 0, used for pooling."""
    has_ln_pre: bool = True
    """Vision only: a LayerNorm between the embeddings and the first block (``ln_pre``)."""
    patch_bias: bool = False
    """Vision only: the patch embedding has a bias ``embed.b_E`` (SigLIP)."""
    ln_after_pool: bool = False
    """Vision only: ``ln_final`` normalises the pooled token, not every token before pooling
    (OpenCLIP's ``final_ln_after_pool``, CLIPA). ``return_type="tokens"`` still normalises each token."""
    pooling: str = ""
    """How the tower pools its tokens into one embedding. Vision: ``"cls"`` (position 0, CLIP),
    ``"avg"`` (mean of the patch tokens, some OpenCLIP models) or ``"map"`` (an attention-pooling
    head, ``attn_pool``, SigLIP). Text: ``"eos"`` (the end-of-text token, CLIP), ``"argmax"`` (the
    highest token id, OpenCLIP), ``"last"`` (the last position, SigLIP) or ``"first"``. Empty: the
    CLIP default of the modality."""
    proj_bias: bool = False
    """The projection into the joint space has a bias ``b_proj`` (SigLIP's text head)."""
    causal: bool | None = None
    """Causal attention: True for a CLIP text tower (the default for text), False for SigLIP's
    text tower; a vision tower always attends both ways (False)."""
    mask_padding: bool = True
    """Text only: ``HookedCLIP.encode_text`` passes the padding mask. SigLIP was trained attending
    to its padding (transformers passes no mask either), so it is False there."""
    pad_to_n_ctx: bool = False
    """Text only: ``HookedCLIP.tokenize`` pads every text to ``n_ctx`` (SigLIP pools the last
    position, so it must see the same padding as in training)."""
    d_vocab: int = 0
    """Text only: vocabulary size."""
    eos_token_id: int = 2
    """Text only: pooling token. 2 means "the highest token id" (OpenAI CLIP's legacy configs)."""
    model_name: str = "custom"
    """Where the weights came from."""
    use_attn_result: bool = False
    """Compute and hook per-head results ``blocks.{l}.attn.hook_result`` (memory heavy)."""
    use_split_qkv_input: bool = False
    """Hook one copy of each block's input per head for queries, keys and values
    (``hook_q_input``/``hook_k_input``/``hook_v_input``), as in TransformerLens."""
    use_attn_in: bool = False
    """Hook one copy of each block's input per head (``hook_attn_in``), as in TransformerLens."""
    use_hook_mlp_in: bool = False
    """Hook the MLP's input (``hook_mlp_in``), as in TransformerLens."""
    n_key_value_heads: int | None = None
    """Key/value heads when fewer than ``n_heads`` (grouped-query attention); None: every head has
    its own (all CLIP-family towers). TransformerLens's k/v patching helpers read it."""
    d_vocab_out: int = 0
    """Vision only: the number of classes of the attached zero-shot head (``W_U``), 0 without one."""
    normalization_type: str = "LN"
    """Read by ``ActivationCache.apply_ln_to_stack``; always LayerNorm here."""
    attn_only: bool = False
    """Read by ``ActivationCache.decompose_resid``; CLIP blocks always have an MLP."""
    device: str = "cpu"
    """Device of the parameters, kept in step by ``.to()``."""

    @property
    def n_patches(self) -> int:
        """Vision only: number of patches, ``(image_size // patch_size) ** 2``."""
        return (self.image_size // self.patch_size) ** 2 if self.patch_size else 0

    @property
    def grid_size(self) -> int:
        """Vision only: patches per side."""
        return self.image_size // self.patch_size if self.patch_size else 0

    def __post_init__(self) -> None:
        if self.modality not in POOLINGS:
            raise ValueError(f"modality must be 'vision' or 'text', got {self.modality!r}")
        if self.causal is None:
            self.causal = self.modality == "text"
        if self.causal and self.modality == "vision":
            raise ValueError("a vision tower attends in both directions; causal must be False (or unset)")
        if self.n_key_value_heads not in (None, self.n_heads):
            raise ValueError(
                f"n_key_value_heads={self.n_key_value_heads}: CLIP-family towers give every head its own keys "
                f"and values; leave it None (or {self.n_heads})"
            )
        if self.n_heads * self.d_head != self.d_model:
            raise ValueError(
                f"n_heads * d_head must equal d_model, got {self.n_heads} * {self.d_head} != {self.d_model}"
            )
        pools = POOLINGS[self.modality]
        if not self.pooling:
            self.pooling = pools[0]
        if self.pooling not in pools:
            raise ValueError(f"pooling {self.pooling!r} is not one of {pools} for a {self.modality} tower")
        if self.modality == "vision":
            if self.patch_size <= 0 or self.image_size % self.patch_size:
                raise ValueError(
                    f"image_size ({self.image_size}) must be a positive multiple of patch_size ({self.patch_size})"
                )
            if self.n_ctx != self.n_patches + int(self.has_cls_token):
                raise ValueError(f"n_ctx must be n_patches + CLS = {self.n_patches + int(self.has_cls_token)}")
        elif self.d_vocab <= 0:
            raise ValueError("a text tower needs d_vocab > 0")


class HookedCLIPTower(HookSwitches, SAESplicing, HookedRootModule):
    """What both towers share: blocks, ``ln_final``, projection, stacked weights, caching, the
    optional hooks (``hook_switches.py``) and splicing SAELens SAEs in (``add_sae``,
    ``run_with_saes``... see ``splice.py``)."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.cfg = cfg

    def _build_trunk(self) -> None:
        """Blocks, ``ln_final`` and projection; called by subclasses after their embeddings, so
        that modules (and ``hook_dict``) are registered in the order the forward pass runs."""
        cfg = self.cfg
        self.blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = FinalLayerNorm(cfg.d_model, cfg.eps)
        if cfg.pooling == "map":
            if cfg.d_proj != cfg.d_model:
                raise ValueError(f"an attention-pooled tower embeds in d_model={cfg.d_model}, got d_proj={cfg.d_proj}")
            self.attn_pool = AttentionPool(cfg)
        else:
            self.W_proj = nn.Parameter(torch.empty(cfg.d_model, cfg.d_proj))
            nn.init.normal_(self.W_proj, std=cfg.d_model**-0.5)
        if cfg.proj_bias:
            self.b_proj = nn.Parameter(torch.zeros(cfg.d_proj))
        self.hook_joint_tokens = HookPoint()
        self.setup()

    def __getattr__(self, name: str) -> Any:
        # An attention-pooled tower (SigLIP) has no projection matrix: its linear read-out into the
        # joint space is the pooling head's value-output map (see AttentionPool.W_VO).
        if name == "W_proj" and self.__dict__.get("cfg") is not None and self.cfg.pooling == "map":
            return self.attn_pool.W_VO
        attr = getattr(type(self), name, None)
        if isinstance(attr, property):  # the property raised AttributeError: give its own message
            return attr.__get__(self)
        return super().__getattr__(name)

    # -- stacked weights, [n_layers, ...], as HookedTransformer exposes them ----------------------
    def _stack(self, module: str, name: str) -> Tensor:
        return torch.stack([getattr(getattr(b, module), name) for b in self.blocks])

    @property
    def W_Q(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("attn", "W_Q")

    @property
    def W_K(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("attn", "W_K")

    @property
    def W_V(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("attn", "W_V")

    @property
    def W_O(self) -> Float[Tensor, "n_layers n_heads d_head d_model"]:
        return self._stack("attn", "W_O")

    @property
    def b_Q(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("attn", "b_Q")

    @property
    def b_K(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("attn", "b_K")

    @property
    def b_V(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("attn", "b_V")

    @property
    def b_O(self) -> Float[Tensor, "n_layers d_model"]:
        return self._stack("attn", "b_O")

    @property
    def W_in(self) -> Float[Tensor, "n_layers d_model d_mlp"]:
        return self._stack("mlp", "W_in")

    @property
    def W_out(self) -> Float[Tensor, "n_layers d_mlp d_model"]:
        return self._stack("mlp", "W_out")

    @property
    def b_in(self) -> Float[Tensor, "n_layers d_mlp"]:
        return self._stack("mlp", "b_in")

    @property
    def b_out(self) -> Float[Tensor, "n_layers d_model"]:
        return self._stack("mlp", "b_out")

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> Float[Tensor, " d_model"]:
        """Sum of the output biases of the blocks before ``layer`` (``b_O``, and ``b_out`` unless
        ``include_mlp_biases=False``), plus this layer's ``b_O`` with ``mlp_input``, as
        ``HookedTransformer.accumulated_bias`` (``cache.get_full_resid_decomposition`` reads it).

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("random:tiny")
            >>> model.vision.accumulated_bias(model.vision.cfg.n_layers).shape   # [d_model]
            torch.Size([64])
        """
        n_layers = self.cfg.n_layers
        if not 0 <= layer <= n_layers or (mlp_input and layer == n_layers):
            raise ValueError(f"layer must lie in [0, {n_layers}{')' if mlp_input else ']'}, got {layer}")
        total = torch.zeros_like(self.blocks[0].attn.b_O)
        for block in self.blocks[:layer]:
            total = total + block.attn.b_O
            if include_mlp_biases:
                total = total + block.mlp.b_out
        if mlp_input:
            total = total + self.blocks[layer].attn.b_O
        return total

    @property
    def OV(self) -> FactoredMatrix:
        """``W_V @ W_O`` for every head, ``[n_layers, n_heads, d_model, d_model]``, kept factored.

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("random:tiny")
            >>> U, S, V = model.vision.OV[1, 3].svd()   # one head's OV circuit (a FactoredMatrix)
            >>> S.shape
            torch.Size([16])
        """
        return FactoredMatrix(self.W_V, self.W_O)

    @property
    def QK(self) -> FactoredMatrix:
        """``W_Q @ W_K^T`` for every head, ``[n_layers, n_heads, d_model, d_model]``, kept factored."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    # -- TransformerLens conveniences --------------------------------------------------------------
    def run_with_cache(
        self, *model_args: Any, return_cache_object: bool = True, remove_batch_dim: bool = False, **kwargs: Any
    ) -> tuple[Any, ActivationCache | dict[str, Tensor]]:
        """Run the tower and cache activations; returns ``(output, ActivationCache)``.

        Takes the same arguments as ``HookedRootModule.run_with_cache`` (``names_filter``,
        ``device``, ``incl_bwd``...) plus the tower's own forward arguments. ``incl_bwd=True``
        calls ``backward()`` on the output, so it needs a scalar: the vision tower's
        ``return_type="loss"`` with ``labels=`` and a zero-shot head (``unembed.py``). Anything else
        is refused; for another scalar, add backward hooks with ``tower.hooks(bwd_hooks=...)``
        and call ``backward()`` on it yourself.

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("random:tiny")
            >>> embeds, cache = model.vision.run_with_cache(torch.randn(2, 3, 32, 32))
            >>> cache["pattern", 0].shape   # [batch, n_heads, pos, pos]
            torch.Size([2, 4, 17, 17])
        """
        if kwargs.get("incl_bwd") and kwargs.get("return_type") != "loss":
            how = ("pass return_type='loss' and labels= (class indices) after model.attach_zero_shot_head(classes)"
                   if self.cfg.modality == "vision" else "the text tower has no scalar output")
            raise ValueError(
                "incl_bwd=True calls backward() on the output, which must be a scalar: " + how + "; or add "
                "backward hooks with `with tower.hooks(bwd_hooks=[(name, fn)]): scalar_of(tower(x)).backward()`"
            )
        out, cache_dict = super().run_with_cache(*model_args, remove_batch_dim=remove_batch_dim, **kwargs)
        if return_cache_object:
            return out, ActivationCache(cache_dict, self, has_batch_dim=not remove_batch_dim)
        return out, cache_dict

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> HookedCLIPTower:
        # every .to()/.cuda()/.half(), also when called on a parent module, ends here
        module = super()._apply(fn, *args, **kwargs)
        self.cfg.device = str(self.W_proj.device)
        return module

    def _run_blocks(self, resid: Tensor, mask: Tensor | None = None, final_ln: bool = True) -> Tensor:
        """The blocks, then (with ``final_ln``) ``ln_final``'s centring and scaling (not its affine)."""
        for block in self.blocks:
            resid = block(resid, mask)
        return self.ln_final(resid) if final_ln else resid

    @property
    def joint_readout_is_exact(self) -> bool:
        """True when ``W_proj`` is the tower's real projection (CLIP, OpenCLIP); False for an
        attention-pooled tower, where it is the linear part of the pooling head."""
        return self.cfg.pooling != "map"

    def _check_return_type(self, return_type: str | None) -> None:
        if return_type not in ("embed", "tokens", None):
            extra = ", 'logits' or 'loss' (with a zero-shot head)" if self.cfg.modality == "vision" else ""
            raise ValueError(f"return_type must be 'embed', 'tokens', None{extra}; got {return_type!r}")

    def _project_output(self, normalized: Tensor, pooled: Tensor | None, return_type: str | None) -> Tensor | None:
        """``normalized``/``pooled``: ``ln_final``'s output before its affine; ``pooled`` is None
        for an attention-pooled tower, which pools in ``attn_pool``."""
        if return_type is None:
            return None
        affine = self.ln_final.affine
        if self.cfg.pooling == "map":
            if return_type == "embed":
                return self.attn_pool(affine(normalized))
            return self.hook_joint_tokens(self.attn_pool.per_token(affine(normalized)))
        out = affine(pooled if return_type == "embed" else normalized) @ self.W_proj
        out = out + self.b_proj if self.cfg.proj_bias else out
        return out if return_type == "embed" else self.hook_joint_tokens(out)


class VisionEmbed(nn.Module):
    """Patch embedding, CLS token and position embeddings.

    ``W_E [n_channels * patch_size**2, d_model]`` maps a patch flattened as (channel, row, column),
    which is transformers' convolution weight rearranged; ``W_pos [n_ctx, d_model]``.
    """

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.cfg = cfg
        patch_dim = cfg.n_channels * cfg.patch_size**2
        self.W_E = nn.Parameter(torch.randn(patch_dim, cfg.d_model) * patch_dim**-0.5)
        self.b_E = nn.Parameter(torch.zeros(cfg.d_model)) if cfg.patch_bias else None
        self.cls_token = nn.Parameter(torch.randn(cfg.d_model) * 0.02) if cfg.has_cls_token else None
        self.W_pos = nn.Parameter(torch.randn(cfg.n_ctx, cfg.d_model) * 0.02)
        self.hook_patches = HookPoint()
        self.hook_pos = HookPoint()

    def forward(self, pixels: Float[Tensor, "batch channel height width"]) -> Float[Tensor, "batch pos d_model"]:
        cfg = self.cfg
        b, c, height, width = pixels.shape
        g, p = cfg.grid_size, cfg.patch_size
        patches = pixels.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c * p * p)
        tokens = patches.to(self.W_E.dtype) @ self.W_E
        if self.b_E is not None:
            tokens = tokens + self.b_E
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(b, 1, -1), tokens], dim=1)
        tokens = self.hook_patches(tokens)
        return tokens + self.hook_pos(self.W_pos.expand(b, -1, -1))


class HookedCLIPVision(ZeroShotUnembed, HookedCLIPTower):
    """A CLIP vision tower with TransformerLens hooks.

    ``forward(pixels)`` returns the image embedding in the joint space, ``[batch, d_proj]``, equal
    to ``CLIPModel.get_image_features`` (unnormalised). With a zero-shot head attached
    (``set_zero_shot_head``, ``unembed.py``) it also has ``W_U``, ``b_U`` and the return types
    ``"logits"`` and ``"loss"``.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("random:tiny")
        >>> pixels = torch.randn(2, 3, 32, 32)
        >>> embeds, cache = model.vision.run_with_cache(pixels)
        >>> embeds.shape, cache["z", -1].shape     # [2, d_proj], [2, pos, n_heads, d_head]
        (torch.Size([2, 32]), torch.Size([2, 17, 4, 16]))
    """

    def __init__(self, cfg: TowerConfig):
        if cfg.modality != "vision":
            raise ValueError("HookedCLIPVision needs a TowerConfig with modality='vision'")
        super().__init__(cfg)
        self.embed = VisionEmbed(cfg)
        self.ln_pre = LayerNorm(cfg.d_model, cfg.eps) if cfg.has_ln_pre else None
        self.hook_embed = HookPoint()
        self._build_trunk()

    @property
    def W_E(self) -> Float[Tensor, "patch_dim d_model"]:
        """The patch embedding, ``[n_channels * patch_size**2, d_model]`` (``embed.W_E``)."""
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"]:
        """The position embeddings, ``[n_ctx, d_model]`` (``embed.W_pos``)."""
        return self.embed.W_pos

    def _check_pixels(self, pixels: Tensor) -> None:
        size = self.cfg.image_size
        if not isinstance(pixels, Tensor):
            raise TypeError(f"pixels must be a torch.Tensor, got {type(pixels).__name__}; use model.preprocess(images)")
        if pixels.ndim != 4 or pixels.shape[1:] != (self.cfg.n_channels, size, size):
            raise ValueError(
                f"pixels must have shape [batch, {self.cfg.n_channels}, {size}, {size}], got {list(pixels.shape)}; "
                "use model.preprocess(images) to resize and normalise images"
            )
        if not pixels.is_floating_point():
            raise TypeError(
                f"pixels must be floating point, got {pixels.dtype} (raw image values?); "
                "use model.preprocess(images) to scale and normalise them"
            )
        if pixels.numel() and pixels.device.type != "meta":
            peak = float(pixels.detach().abs().amax())
            if not math.isfinite(peak):
                raise ValueError("pixels hold NaN or infinite values; check the images and their preprocessing")
            if peak > MAX_NORMALISED_PIXEL:
                raise ValueError(
                    f"pixels reach {peak:.4g}, but normalised pixels stay within a few units of 0; these look "
                    "like raw 0-255 values. Use model.preprocess(images), which scales and normalises them"
                )

    def forward(
        self,
        pixels: Float[Tensor, "batch channel height width"],
        return_type: Literal["embed", "tokens", "logits", "loss"] | None = "embed",
        labels: Int[Tensor, " batch"] | None = None,
    ) -> Float[Tensor, "batch d_proj"] | Float[Tensor, "batch pos d_proj"] | Float[Tensor, "batch n_classes"] | None:
        """Run the tower.

        Args:
            pixels: preprocessed images (``HookedCLIP.preprocess``).
            return_type: ``"embed"``, the pooled image embedding ``[batch, d_proj]``;
                ``"tokens"``, every token through ``ln_final`` and the projection,
                ``[batch, pos, d_proj]`` (hook ``hook_joint_tokens``); ``None``, nothing (for
                caching only). With a zero-shot head: ``"logits"`` ``[batch, n_classes]``, and
                ``"loss"``, a scalar cross-entropy against ``labels``.
            labels: class indices ``[batch]``, for ``return_type="loss"``.
        """
        self._check_pixels(pixels)
        if return_type in ("logits", "loss"):
            self._classes()  # a clear error before the forward pass when no head is attached
            return self._zero_shot_output(self._run(pixels, "embed"), return_type, labels)
        self._check_return_type(return_type)
        return self._run(pixels, return_type)

    def _run(self, pixels: Tensor, return_type: str | None) -> Tensor | None:
        """The forward pass on checked pixels, up to the output ``return_type`` names."""
        if self._acts_to_saes:
            self._set_sae_token_masks(self.cfg.n_ctx, pixels.shape[0])
        resid = self.embed(pixels)
        if self.ln_pre is not None:
            resid = self.ln_pre(resid)
        if not self.cfg.ln_after_pool:
            normalized = self._run_blocks(self.hook_embed(resid))
            return self._project_output(normalized, self._pool(normalized), return_type)
        # OpenCLIP's final_ln_after_pool: pool the residual stream, then normalise the pooled token
        resid = self._run_blocks(self.hook_embed(resid), final_ln=False)
        if return_type == "tokens":
            return self._project_output(self.ln_final(resid), None, return_type)
        return self._project_output(resid, self.ln_final(self._pool(resid)), return_type)

    def _pool(self, x: Tensor) -> Tensor | None:
        """The pooled token for ``cls`` / ``avg`` pooling; None for ``map`` (``attn_pool`` pools)."""
        if self.cfg.pooling == "cls":
            return x[:, 0]
        if self.cfg.pooling == "avg":
            return x[:, int(self.cfg.has_cls_token):].mean(1)
        return None


class HookedCLIPText(LinearReadout, TextTokenizing, HookedCLIPTower):
    """A CLIP text tower with TransformerLens hooks.

    ``forward(tokens, attention_mask)`` returns the text embedding in the joint space,
    ``[batch, d_proj]``, equal to ``CLIPModel.get_text_features`` (unnormalised).

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> toks = model.tokenize(["a red circle", "a blue square"])
        >>> embeds, cache = model.text.run_with_cache(toks.input_ids, attention_mask=toks.attention_mask)
        >>> embeds.shape, cache["pattern", 0].shape
        (torch.Size([2, 128]), torch.Size([2, 4, 5, 5]))
    """

    def __init__(self, cfg: TowerConfig):
        if cfg.modality != "text":
            raise ValueError("HookedCLIPText needs a TowerConfig with modality='text'")
        super().__init__(cfg)
        self.embed = nn.Module()
        self.embed.W_E = nn.Parameter(torch.randn(cfg.d_vocab, cfg.d_model) * 0.02)
        self.pos_embed = nn.Module()
        self.pos_embed.W_pos = nn.Parameter(torch.randn(cfg.n_ctx, cfg.d_model) * 0.01)
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self._build_trunk()

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"]:
        return self.pos_embed.W_pos

    def tokens_to_residual_directions(self, tokens: Any) -> Tensor:
        """Refused: the text tower ends in the joint space, with no vocabulary read-out to attribute
        to (TransformerLens's ``logit_attrs`` calls this)."""
        raise NoZeroShotHeadError(
            "the text tower has no unembed: it ends in the joint space. Read components there with "
            "cache.decompose_resid(apply_ln=True) @ text.W_joint (+ text.b_joint once), or attach a zero-shot "
            "head to the vision tower (model.attach_zero_shot_head) for logit attribution on images"
        )

    def pool_positions(self, tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, " batch"]:
        """Index of the token that pools each sequence, by ``cfg.pooling``: the end-of-text token
        (transformers' rule: the highest id for legacy configs whose ``eos_token_id`` is 2), the
        highest id, the last or the first position."""
        pooling = self.cfg.pooling
        if pooling == "argmax" or (pooling == "eos" and self.cfg.eos_token_id == 2):
            return tokens.argmax(dim=-1)
        if pooling == "eos":
            return (tokens == self.cfg.eos_token_id).int().argmax(dim=-1)
        position = tokens.shape[1] - 1 if pooling == "last" else 0
        return torch.full((tokens.shape[0],), position, dtype=torch.long, device=tokens.device)

    def _check_tokens(self, tokens: Tensor, attention_mask: Tensor | None) -> None:
        if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int32, torch.int64) or tokens.ndim != 2:
            got = f"{tokens.dtype} tensor of shape {list(tokens.shape)}" if isinstance(tokens, Tensor) else type(tokens).__name__
            raise TypeError(f"tokens must be an integer tensor [batch, pos], got {got}; use model.tokenize(texts)")
        if tokens.shape[1] > self.cfg.n_ctx:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds the context length n_ctx={self.cfg.n_ctx}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.cfg.d_vocab):
            raise ValueError(f"token ids must lie in [0, {self.cfg.d_vocab}); got range [{tokens.min()}, {tokens.max()}]")
        if attention_mask is not None and attention_mask.shape != tokens.shape:
            raise ValueError(
                f"attention_mask shape {list(attention_mask.shape)} does not match tokens {list(tokens.shape)}"
            )

    def _mask(self, tokens: Tensor, attention_mask: Tensor | None) -> Tensor | None:
        """Additive mask ``[batch, 1, pos, pos]``: causal (unless ``cfg.causal`` is off), and padding
        keys hidden."""
        if attention_mask is None and not self.cfg.causal:
            return None
        n = tokens.shape[1]
        dtype = self.W_E.dtype
        allowed = torch.ones(n, n, dtype=torch.bool, device=tokens.device)
        allowed = (allowed.tril() if self.cfg.causal else allowed)[None, None]
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool()[:, None, None, :]
        return torch.zeros(allowed.shape, dtype=dtype, device=tokens.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )

    def forward(
        self,
        tokens: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        return_type: Literal["embed", "tokens"] | None = "embed",
    ) -> Float[Tensor, "batch d_proj"] | Float[Tensor, "batch pos d_proj"] | None:
        """Run the tower.

        Args:
            tokens: token ids from ``HookedCLIP.tokenize``.
            attention_mask: 1 for real tokens, 0 for padding (optional: CLIP pools at the
                end-of-text token, which causal attention keeps clear of later padding).
            return_type: ``"embed"`` ``[batch, d_proj]``, ``"tokens"`` ``[batch, pos, d_proj]`` or None.
        """
        self._check_tokens(tokens, attention_mask)
        self._check_return_type(return_type)
        if self._acts_to_saes:
            self._set_sae_token_masks(tokens.shape[1], tokens.shape[0], tokens, attention_mask)
        resid = self.hook_embed(self.W_E[tokens]) + self.hook_pos_embed(self.W_pos[: tokens.shape[1]].expand(tokens.shape[0], -1, -1))
        normalized = self._run_blocks(resid, self._mask(tokens, attention_mask))
        pooled = normalized[torch.arange(tokens.shape[0], device=tokens.device), self.pool_positions(tokens)]
        return self._project_output(normalized, pooled, return_type)

