"""Tokenising for the text tower, with TransformerLens's names (``to_tokens``, ``to_string``,
``to_str_tokens``, ``to_single_token``) next to ``tokenize`` (ids and attention mask).

The tower holds the model's tokenizer (``load_clip`` gives it one when the checkpoint has one);
``HookedCLIP.tokenize`` is this tower's ``tokenize``.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple, Sequence

import torch
from jaxtyping import Int
from torch import Tensor


class TextTokens(NamedTuple):
    """Tokenised texts, ready for ``HookedCLIPText``."""

    input_ids: Int[Tensor, "batch pos"]
    """Token ids, padded on the right."""
    attention_mask: Int[Tensor, "batch pos"]
    """1 for real tokens, 0 for padding."""


class TextTokenizing:
    """Mixin for ``HookedCLIPText``: needs ``cfg`` (``n_ctx``, ``pad_to_n_ctx``) and ``W_E``."""

    tokenizer: Any = None
    """The model's tokenizer (a transformers tokenizer, or OpenCLIP's wrapped), or None."""

    def _tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ValueError(
                f"model {self.cfg.model_name!r} has no tokenizer: pass token ids instead, or "
                "load_clip(model, tokenizer=AutoTokenizer.from_pretrained(...))"
            )
        return self.tokenizer

    def tokenize(self, texts: str | Sequence[str], truncate: bool = True) -> TextTokens:
        """Tokenise strings: padded on the right (to the longest text, or to the full context
        ``n_ctx`` for SigLIP, as in its training) and at most ``n_ctx`` long.

        Args:
            texts: one string or a list of strings.
            truncate: a text longer than the context is cut to fit, with a ``UserWarning`` that says
                how many were cut (default); ``False`` raises a ``ValueError`` instead.

        Example:
            >>> import sith_lens as sl
            >>> toks = sl.load_clip("toy").text.tokenize(["a red circle", "a dog"])
            >>> toks.input_ids.shape     # [2, longest]
            torch.Size([2, 5])
        """
        tokenizer = self._tokenizer()
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("tokenize needs a non-empty list of strings")
        cfg = self.cfg
        enc = tokenizer(
            texts, padding="max_length" if cfg.pad_to_n_ctx else True, truncation=True, max_length=cfg.n_ctx,
            return_tensors="pt",
        )
        ids = enc["input_ids"]
        mask = enc.get("attention_mask")
        if mask is None:  # SigLIP's tokenizer returns ids only
            pad = getattr(tokenizer, "pad_token_id", None)
            mask = torch.ones_like(ids) if pad is None else (ids != pad).long()
        # only a text that fills the whole context can have been cut: tokenise those again, uncut
        full = [texts[i] for i in (mask.sum(1) >= cfg.n_ctx).nonzero().flatten().tolist()]
        if full:
            self._check_length(full, len(texts), truncate)
        device = self.W_E.device
        return TextTokens(ids.to(device), mask.to(device))

    def _check_length(self, texts: list[str], n_texts: int, truncate: bool) -> None:
        """Warn about (or, without ``truncate``, refuse) the ``texts`` longer than the context;
        ``n_texts`` is how many texts the caller tokenised in all."""
        n_ctx = self.cfg.n_ctx
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False)["input_ids"]]
        too_long = [i for i, n in enumerate(lengths) if n > n_ctx]
        if not too_long:
            return
        msg = (
            f"{len(too_long)} of {n_texts} texts are longer than the {n_ctx}-token context "
            f"(the longest has {max(lengths)} tokens), e.g. {texts[too_long[0]][:60]!r}"
        )
        if not truncate:
            raise ValueError(f"{msg}; shorten them, or pass truncate=True to cut them to fit")
        warnings.warn(f"{msg}; they are truncated to fit (pass truncate=False to raise instead)", UserWarning, stacklevel=4)

    # -- TransformerLens's names -------------------------------------------------------------------
    def to_tokens(self, input: str | Sequence[str], prepend_bos: bool | None = None,
                  padding_side: str | None = None, move_to_device: bool = True,
                  truncate: bool = True) -> Int[Tensor, "batch pos"]:
        """Token ids ``[batch, pos]`` as ``HookedTransformer.to_tokens`` gives them. CLIP's
        tokenizer always adds its start and end tokens and pads on the right, so ``prepend_bos``
        and ``padding_side`` may only ask for that (anything else is refused).

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("toy")
            >>> ids = model.text.to_tokens(["a red circle"])
            >>> model.text(ids).shape     # [1, d_proj]
            torch.Size([1, 128])
        """
        if prepend_bos is False:
            raise ValueError("CLIP's text tower was trained with its start token; prepend_bos=False is not supported")
        if padding_side not in (None, "right"):
            raise ValueError(f"the text tower pads on the right (it pools at the end-of-text token), got padding_side={padding_side!r}")
        ids = self.tokenize(input, truncate=truncate).input_ids
        return ids if move_to_device else ids.cpu()

    def to_string(self, tokens: int | Int[Tensor, "..."] | Sequence[int]) -> str | list[str]:
        """Decode ids to text: one string for an int or a 1-D tensor or list, a list of strings for a
        2-D batch.

        Example:
            >>> import sith_lens as sl
            >>> model = sl.load_clip("toy")
            >>> model.text.to_string(model.text.to_tokens("a red circle")[0])
            '<bos> a red circle <eos>'
        """
        tokenizer = self._tokenizer()
        if isinstance(tokens, Tensor):
            tokens = tokens.tolist()
        if isinstance(tokens, int):
            tokens = [tokens]
        if tokens and isinstance(tokens[0], (list, tuple)):
            return [self.to_string(list(row)) for row in tokens]
        decoder = tokenizer if hasattr(tokenizer, "decode") else getattr(tokenizer, "tokenizer", None)
        if hasattr(decoder, "decode"):
            return decoder.decode([int(t) for t in tokens])
        return "".join(token_strings(tokenizer, tokens))

    def to_str_tokens(self, input: str | Int[Tensor, " pos"] | Sequence[int]) -> list[str]:
        """The string of each token of one text (tokenised first, padding left out, when a string is given).

        Example:
            >>> import sith_lens as sl
            >>> sl.load_clip("toy").text.to_str_tokens("a red circle")
            ['<bos>', 'a', 'red', 'circle', '<eos>']
        """
        tokenizer = self._tokenizer()
        if isinstance(input, str):
            toks = self.tokenize([input])
            ids = toks.input_ids[0, : int(toks.attention_mask[0].sum())].tolist()
        else:
            ids = input.tolist() if isinstance(input, Tensor) else list(input)
            if ids and isinstance(ids[0], list):
                raise ValueError("to_str_tokens takes one text (a 1-D tensor of ids); index the batch first")
        return token_strings(tokenizer, ids)

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token once the start, end and padding tokens are
        left out.

        Example:
            >>> import sith_lens as sl
            >>> sl.load_clip("toy").text.to_single_token("red")
            10
        """
        tokenizer = self._tokenizer()
        ids = tokenizer([string], truncation=False)["input_ids"][0]
        special = special_token_ids(tokenizer)
        ids = [int(i) for i in ids if int(i) not in special]
        if len(ids) != 1:
            raise ValueError(f"{string!r} is {len(ids)} tokens, not one: {token_strings(tokenizer, ids)}")
        return ids[0]


def special_token_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special tokens (start, end, padding...), for HF and open_clip tokenizers.

    Example:
        >>> import sith_lens as sl
        >>> sorted(special_token_ids(sl.load_clip("toy").tokenizer))
        [0, 1, 2, 3]
    """
    ids = set(getattr(tokenizer, "all_special_ids", None) or [])
    inner = getattr(tokenizer, "tokenizer", None)  # OpenCLIPTokenizer wraps open_clip's
    for source in (tokenizer, inner):
        for name in ("bos_token_id", "eos_token_id", "pad_token_id", "sot_token_id", "eot_token_id"):
            value = getattr(source, name, None) if source is not None else None
            if isinstance(value, int):
                ids.add(value)
    return ids


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The string of each token id, for HF and open_clip tokenizers.

    Example:
        >>> import sith_lens as sl
        >>> token_strings(sl.load_clip("toy").tokenizer, [2, 4, 3])
        ['<bos>', 'circle', '<eos>']
    """
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        return [str(t) for t in tokenizer.convert_ids_to_tokens(list(ids))]
    decoder = getattr(getattr(tokenizer, "tokenizer", None), "decoder", None)  # open_clip SimpleTokenizer
    if isinstance(decoder, dict):
        return [decoder.get(int(i), "") for i in ids]
    return [tokenizer.decode([int(i)]) for i in ids]
