"""Splicing SAEs into the towers, the way SAELens's ``HookedSAETransformer`` does it for language
models: ``add_sae``, ``reset_saes``, ``run_with_saes``, ``run_with_cache_with_saes`` and the
``saes()`` context manager.

An SAE replaces the hook point named by its ``cfg.metadata.hook_name`` (or ``hook_name=``), in
SAELens's own wrapper, so its hooks cache under ``"<hook>.hook_sae_acts_post"`` and so on. Any
SAELens SAE works; a LUCID SAE is spliced as the view of the tower's modality. Its default hook
is ``hook_joint_tokens``, the tower's per-token output in the joint space (``return_type="tokens"``).

Example:
    >>> import torch, sith_lens as sl
    >>> from sae_lens import SAE
    >>> model = sl.load_clip("toy")
    >>> sae = SAE.from_pretrained("sith-lens-toy-lucid", "final")
    >>> pixels = torch.randn(2, 3, 64, 64)
    >>> model.vision.add_sae(sae, use_error_term=True)         # output unchanged, codes cached
    >>> tokens, cache = model.vision.run_with_cache(pixels, return_type="tokens")
    >>> cache["hook_joint_tokens.hook_sae_acts_post"].shape      # [batch, pos, d_sae]
    torch.Size([2, 65, 1024])
    >>> model.vision.reset_saes()
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint


class SAESplicing:
    """Mixin for a HookedRootModule tower with ``cfg.modality``."""

    #: Token ids a text tower bypasses with ``exclude_special_tokens=True`` (set by load_clip from
    #: the tokenizer).
    special_token_ids: tuple[int, ...] = ()

    @property
    def _acts_to_saes(self) -> dict[str, Any]:
        return self.__dict__.setdefault("_spliced_saes", {})

    def _resolve(self, sae: Any, hook_name: str | None) -> tuple[Any, str]:
        if sae.cfg.architecture() == "lucid":  # a two-modality LUCID SAE: this tower's view
            if not hasattr(sae, "view"):
                raise TypeError("this is a LUCID SAE in training form; splice sae.to_inference() (a LucidSAE)")
            sae = sae.view(self.cfg.modality)
        name = hook_name or sae.cfg.metadata.hook_name
        if name is None:
            raise ValueError("the SAE's metadata names no hook_name; pass add_sae(sae, hook_name=...)")
        if name not in self.hook_dict and name not in self._acts_to_saes:
            raise ValueError(f"{type(self).__name__} has no hook {name!r}; see .hook_dict for the hook names")
        return sae, name

    def add_sae(
        self,
        sae: Any,
        use_error_term: bool | None = None,
        exclude_special_tokens: bool | Sequence[int] = False,
        hook_name: str | None = None,
    ) -> None:
        """Splice ``sae`` in at its hook until ``reset_saes``; replaces an SAE already there.

        Args:
            use_error_term: add the SAE's error back, so the tower's output is unchanged while
                its codes are computed and cached (None keeps the SAE's own setting).
            exclude_special_tokens: bypass the SAE at special positions: the CLS token (vision)
                or special tokens and padding (text: ``special_token_ids``, or the ids given).
            hook_name: overrides ``sae.cfg.metadata.hook_name``.
        """
        from sae_lens.analysis.hooked_sae_transformer import _SAEWrapper, set_deep_attr

        sae, name = self._resolve(sae, hook_name)
        use = sae.use_error_term if use_error_term is None else use_error_term
        wrapper = _SAEWrapper(sae, use_error_term=use)
        wrapper.exclude = exclude_special_tokens
        self._acts_to_saes[name] = wrapper
        set_deep_attr(self, name, wrapper)
        self.setup()

    def reset_saes(self, hook_names: str | Sequence[str] | None = None) -> None:
        """Remove spliced SAEs (all, or those at ``hook_names``), restoring plain hook points."""
        from sae_lens.analysis.hooked_sae_transformer import set_deep_attr

        names = list(self._acts_to_saes) if hook_names is None else [hook_names] if isinstance(hook_names, str) else list(hook_names)
        for name in names:
            if self._acts_to_saes.pop(name, None) is not None:
                set_deep_attr(self, name, HookPoint())
        self.setup()

    @contextmanager
    def saes(self, saes: Any = (), use_error_term: bool | None = None,
             exclude_special_tokens: bool | Sequence[int] = False) -> Iterator[Any]:
        """Splice ``saes`` for the duration of a ``with`` block, then restore what was there."""
        saes = [saes] if not isinstance(saes, (list, tuple)) else list(saes)
        previous = dict(self._acts_to_saes)
        try:
            for sae in saes:
                self.add_sae(sae, use_error_term=use_error_term, exclude_special_tokens=exclude_special_tokens)
            yield self
        finally:
            from sae_lens.analysis.hooked_sae_transformer import set_deep_attr

            for name in list(self._acts_to_saes):
                if name not in previous:
                    self.reset_saes(name)
            for name, wrapper in previous.items():
                self._acts_to_saes[name] = wrapper
                set_deep_attr(self, name, wrapper)
            self.setup()

    def run_with_saes(self, *args: Any, saes: Any = (), use_error_term: bool | None = None,
                      exclude_special_tokens: bool | Sequence[int] = False, **kwargs: Any) -> Any:
        """One forward pass with ``saes`` spliced in."""
        with self.saes(saes, use_error_term, exclude_special_tokens):
            return self(*args, **kwargs)

    def run_with_cache_with_saes(self, *args: Any, saes: Any = (), use_error_term: bool | None = None,
                                 exclude_special_tokens: bool | Sequence[int] = False, **kwargs: Any) -> Any:
        """``run_with_cache`` with ``saes`` spliced in; the cache holds their ``hook_sae_*`` activations."""
        with self.saes(saes, use_error_term, exclude_special_tokens):
            return self.run_with_cache(*args, **kwargs)

    def _set_sae_token_masks(self, n_pos: int, batch: int, tokens: Tensor | None = None,
                             attention_mask: Tensor | None = None) -> None:
        """Before a forward pass: tell each spliced SAE that excludes special positions which
        positions to bypass ([batch, pos], True = bypass)."""
        for wrapper in self._acts_to_saes.values():
            exclude = getattr(wrapper, "exclude", False)
            if exclude is False:
                wrapper.set_token_mask(None)
                continue
            if tokens is None:  # vision: the CLS token
                mask = torch.zeros(batch, n_pos, dtype=torch.bool, device=self.cfg.device)
                mask[:, 0] = bool(self.cfg.has_cls_token)
            else:
                ids = self.special_token_ids if exclude is True else tuple(exclude)
                if not ids and exclude is True:
                    raise ValueError("this text tower knows no special token ids; pass exclude_special_tokens=[ids]")
                mask = torch.isin(tokens, torch.tensor(ids, dtype=tokens.dtype, device=tokens.device))
                if attention_mask is not None:
                    mask |= ~attention_mask.bool()
            wrapper.set_token_mask(mask)
