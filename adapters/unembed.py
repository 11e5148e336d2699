"""A zero-shot head as the vision tower's unembed, so that TransformerLens's attribution code runs
unchanged on images.

A CLIP vision tower has no vocabulary, but a zero-shot classifier gives it one: class ``c`` has a
unit text embedding ``t_c`` (its prompts, encoded and averaged: ``zeroshot.zero_shot_weights``),
and the image's logit for it is the image embedding's component along ``t_c``::

    logits = image_embed @ T.T                       # [batch, n_classes], T = [n_classes, d_proj]
           = ln_final(resid)[:, pooled] @ W_U + b_U
    W_U = diag(ln_final.w) @ W_proj @ T.T            # [d_model, n_classes]  (= W_joint @ T.T)
    b_U = (ln_final.b @ W_proj + b_proj) @ T.T       # [n_classes]           (= b_joint @ T.T)

``ln_final`` here is the centre-and-scale part only (``components.FinalLayerNorm``), so the head
is exactly linear in what ``apply_ln=True`` gives and TransformerLens's ``logit_attrs``,
``get_full_resid_decomposition`` and a logit lens over ``accumulated_resid`` sum to ``logits``
(add ``b_U`` once). CLIP's own zero-shot logits are ``logit_scale * logits / |image_embed|``: one
positive factor per image, so the ranking of the classes is the same.

``return_type="loss"`` with ``labels`` gives a scalar, the cross-entropy of CLIP's own zero-shot
probabilities (``softmax(logit_scale * cosine)``), which is what ``run_with_cache(incl_bwd=True)``
needs.

Only towers that read the embedding off one position can carry a head: CLS pooling with
``ln_final`` before pooling (CLIP, most OpenCLIP models). An attention-pooled tower (SigLIP's MAP
head) is not linear in the residual stream, and mean pooling or ``final_ln_after_pool`` read no
single position; those are refused with a message.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor


class NoZeroShotHeadError(AttributeError, ValueError):
    """The vision tower has no zero-shot head attached (``W_U`` and friends need one). An
    ``AttributeError`` (``hasattr(tower, "W_U")`` is False) and a ``ValueError`` (bad input)."""


class LinearReadout:
    """Mixin for both towers: ``ln_final``'s gain and bias folded into the projection, the map from
    ``apply_ln=True`` components to the joint space (TransformerLens folds ``ln_final`` into
    ``W_U`` the same way)."""

    @property
    def W_joint(self) -> Float[Tensor, "d_model d_proj"]:
        """``diag(ln_final.w) @ W_proj``: the map from ``apply_ln=True`` components to the joint space
        (add ``b_joint`` once).

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("random:tiny")
            >>> embeds, cache = model.vision.run_with_cache(torch.randn(2, 3, 32, 32))
            >>> stack = cache.decompose_resid(apply_ln=True, pos_slice=0)   # [components, batch, d_model]
            >>> torch.allclose(stack.sum(0) @ model.vision.W_joint + model.vision.b_joint, embeds, atol=1e-5)
            True
        """
        self._check_linear_readout()
        return self.ln_final.w[:, None] * self.W_proj

    @property
    def b_joint(self) -> Float[Tensor, " d_proj"]:
        """``ln_final.b @ W_proj (+ b_proj)``: the read-out's constant part."""
        self._check_linear_readout()
        bias = self.ln_final.b @ self.W_proj
        return bias + self.b_proj if self.cfg.proj_bias else bias

    def _nonlinear_readout(self) -> str | None:
        """Why the tower has no linear read-out into the joint space, or None when it has one."""
        if self.cfg.pooling == "map":
            return ("this tower pools with an attention head (SigLIP's MAP head), which is not linear in the "
                    "residual stream; attribute to attn_pool.hook_out instead")
        return None

    def _check_linear_readout(self) -> None:
        why = self._nonlinear_readout()
        if why:
            raise NoZeroShotHeadError(f"no linear read-out into the joint space: {why}")


class ZeroShotUnembed(LinearReadout):
    """Mixin for ``HookedCLIPVision``: attach class embeddings, then ``W_U``, ``b_U``,
    ``tokens_to_residual_directions``, ``to_single_token``, ``to_string`` and the ``"logits"`` /
    ``"loss"`` return types behave as on a TransformerLens language model."""

    zero_shot_labels: tuple[str, ...] = ()
    """The class names, in logit order (empty without a head)."""

    def _unembed_support(self) -> str | None:
        """Why this tower cannot carry a zero-shot head, or None when it can."""
        cfg = self.cfg
        why = self._nonlinear_readout()
        if why is None and (cfg.pooling != "cls" or cfg.ln_after_pool):
            why = (f"this tower pools by {cfg.pooling!r}{' after ln_final' if cfg.ln_after_pool else ''}, "
                   "not at one position before ln_final, so its logits are not one position's read-out")
        return why

    def set_zero_shot_head(
        self,
        class_embeds: Float[Tensor, "n_classes d_proj"],
        labels: Sequence[str] | None = None,
        logit_scale: float = 100.0,
    ) -> None:
        """Attach a zero-shot classifier as the tower's unembed (replaces any head already there).

        Args:
            class_embeds: one joint-space embedding per class (normalised here), e.g. from
                ``sith_lens.zero_shot_weights(model, class_names)``.
            labels: a name per class (``to_single_token``/``logit_attrs`` accept them); default
                ``"class 0"``, ``"class 1"``...
            logit_scale: the temperature of ``return_type="loss"`` (``exp(model.logit_scale)``).

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("toy")
            >>> model.vision.set_zero_shot_head(sl.zero_shot_weights(model, ["circle", "star"]), ["circle", "star"])
            >>> model.vision(torch.randn(3, 3, 64, 64), return_type="logits").shape    # [batch, 2]
            torch.Size([3, 2])
        """
        why = self._unembed_support()
        if why:
            raise ValueError(f"cannot attach a zero-shot head: {why}")
        if not isinstance(class_embeds, Tensor) or class_embeds.ndim != 2 or class_embeds.shape[1] != self.cfg.d_proj:
            got = list(class_embeds.shape) if isinstance(class_embeds, Tensor) else type(class_embeds).__name__
            raise ValueError(f"class_embeds must be a tensor [n_classes, d_proj={self.cfg.d_proj}], got {got}")
        if len(class_embeds) < 2:
            raise ValueError(f"a zero-shot head needs at least two classes, got {len(class_embeds)}")
        if not torch.isfinite(class_embeds).all() or (class_embeds.norm(dim=-1) == 0).any():
            raise ValueError("class_embeds hold NaN, infinite or all-zero rows; recompute them from finite prompts")
        labels = tuple(labels) if labels is not None else tuple(f"class {i}" for i in range(len(class_embeds)))
        if len(labels) != len(class_embeds) or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"labels must be {len(class_embeds)} strings, one per class, got {labels!r}")
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be distinct (to_single_token maps a label to its class)")
        if not logit_scale > 0:
            raise ValueError(f"logit_scale must be positive, got {logit_scale}")
        units = F.normalize(class_embeds.detach().to(self.W_proj.device, self.W_proj.dtype), dim=-1)
        self.register_buffer("zero_shot_classes", units, persistent=False)
        self.zero_shot_labels = labels
        self.zero_shot_logit_scale = float(logit_scale)
        self.cfg.d_vocab_out = len(labels)

    def remove_zero_shot_head(self) -> None:
        """Detach the zero-shot head (``W_U`` then raises again)."""
        self._buffers.pop("zero_shot_classes", None)
        self.zero_shot_labels = ()
        self.cfg.d_vocab_out = 0

    @property
    def has_zero_shot_head(self) -> bool:
        return "zero_shot_classes" in self._buffers

    def _classes(self) -> Float[Tensor, "n_classes d_proj"]:
        if not self.has_zero_shot_head:
            raise NoZeroShotHeadError(
                "this vision tower has no zero-shot head: attach one with model.attach_zero_shot_head(class_names) "
                "or model.vision.set_zero_shot_head(class_embeds, labels)"
            )
        return self._buffers["zero_shot_classes"]

    @property
    def W_U(self) -> Float[Tensor, "d_model n_classes"]:
        """The zero-shot unembed, ``W_joint @ T.T`` (see the module docstring)."""
        return self.W_joint @ self._classes().T

    @property
    def b_U(self) -> Float[Tensor, " n_classes"]:
        """The unembed's bias, ``b_joint @ T.T``."""
        return self.b_joint @ self._classes().T

    # -- TransformerLens's token vocabulary, with class labels as the tokens ------------------------
    def to_single_token(self, label: str) -> int:
        """The class index of a zero-shot label.

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("toy")
            >>> model.attach_zero_shot_head(["circle", "dog"])
            >>> model.vision.to_single_token("dog")
            1
        """
        self._classes()
        if label not in self.zero_shot_labels:
            raise ValueError(f"{label!r} is not a class of the zero-shot head; its labels are {list(self.zero_shot_labels)}")
        return self.zero_shot_labels.index(label)

    def to_string(self, tokens: int | Int[Tensor, "..."] | Sequence[int]) -> str | list:
        """The label of a class index, or nested lists of labels for a tensor of indices."""
        self._classes()
        if isinstance(tokens, Tensor):
            tokens = tokens.tolist()
        if isinstance(tokens, int):
            return self.zero_shot_labels[tokens]
        return [self.to_string(t) for t in tokens]

    def tokens_to_residual_directions(
        self, tokens: str | int | Int[Tensor, "..."]
    ) -> Float[Tensor, "... d_model"]:
        """The unembed's column for each class (label, index or tensor of indices), ``[..., d_model]``,
        as ``HookedTransformer.tokens_to_residual_directions``.

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("toy")
            >>> model.attach_zero_shot_head(["circle", "star"])
            >>> model.vision.tokens_to_residual_directions(torch.tensor([0, 1])).shape   # [2, d_model]
            torch.Size([2, 128])
        """
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        W_U = self.W_U
        if isinstance(tokens, int):
            return W_U[:, tokens]
        return W_U.T[torch.as_tensor(tokens, device=W_U.device)]

    # -- outputs ----------------------------------------------------------------------------------
    def zero_shot_logits(self, embeds: Float[Tensor, "batch d_proj"]) -> Float[Tensor, "batch n_classes"]:
        """The head's logits for image embeddings (the tower's default output), ``embeds @ T.T``;
        what a patching metric applies to the patched output.

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("toy")
            >>> model.attach_zero_shot_head(["circle", "star"])
            >>> model.vision.zero_shot_logits(model.vision(torch.randn(3, 3, 64, 64))).shape
            torch.Size([3, 2])
        """
        return embeds @ self._classes().T

    def _zero_shot_output(
        self, embeds: Float[Tensor, "batch d_proj"], return_type: str, labels: Int[Tensor, " batch"] | None
    ) -> Float[Tensor, "batch n_classes"] | Float[Tensor, ""]:
        classes = self._classes()
        if return_type == "logits":
            return self.zero_shot_logits(embeds)
        if labels is None:
            raise ValueError("return_type='loss' needs labels=, a class index per image (LongTensor [batch])")
        labels = torch.as_tensor(labels, device=embeds.device)
        if labels.shape != embeds.shape[:1] or labels.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"labels must be integer class indices of shape [{embeds.shape[0]}], got {labels.dtype} {list(labels.shape)}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"labels must lie in [0, {len(classes)}), got range [{labels.min()}, {labels.max()}]")
        cosine = F.normalize(embeds, dim=-1) @ classes.T
        return F.cross_entropy(self.zero_shot_logit_scale * cosine, labels.long())
