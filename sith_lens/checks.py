"""Input checks shared by every entry point: finite tensors and numbers, with a message naming the fix.

Example:
    >>> check_finite("multipliers", torch.ones(3), fix="pass finite multipliers")
    >>> check_finite("multipliers", torch.tensor([1.0, float("inf")]), fix="pass finite multipliers")
    Traceback (most recent call last):
    ValueError: multipliers ...; pass finite multipliers
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import torch
from torch import Tensor

#: The usual cause of non-finite weights in a file.
CHECKPOINT_FIX = "check the checkpoint (a failed training run or a half-written file) and reload it"


def check_finite(name: str, tensor: Tensor, fix: str = CHECKPOINT_FIX) -> None:
    """Raise a ``ValueError`` naming ``name`` and ``fix`` if ``tensor`` holds NaN or infinite values.

    Example:
        >>> check_finite("x", torch.tensor([1.0, float("nan")]), fix="clean x")
        Traceback (most recent call last):
        ValueError: x holds 1 NaN or infinite values; clean x
    """
    if tensor.is_floating_point() or tensor.is_complex():
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            raise ValueError(f"{name} holds {int((~finite).sum())} NaN or infinite values; {fix}")


def check_finite_tensors(tensors: Mapping[str, Tensor], where: str, fix: str = CHECKPOINT_FIX) -> None:
    """``check_finite`` on every tensor of ``tensors``, named ``"<where>: <key>"``.

    Example:
        >>> check_finite_tensors({"W_dec": torch.zeros(2, 2)}, "sae_weights.safetensors")
    """
    for key, tensor in tensors.items():
        check_finite(f"{where}: {key}", tensor, fix)


def check_finite_fields(config: Any, what: str) -> None:
    """Reject a dataclass whose float (or int) fields hold NaN or infinity, naming the field.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Settings:
        ...     lr: float = 0.1
        >>> check_finite_fields(Settings(), "the settings")
        >>> check_finite_fields(Settings(lr=float("nan")), "the settings")
        Traceback (most recent call last):
        ValueError: the settings: lr is nan...
    """
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{what}: {field.name} is {value}; pass a finite number")


def describe_differences(saved: Mapping[str, Any], current: Mapping[str, Any], then: str = "then") -> str:
    """The settings of ``current`` whose value in ``saved`` differs, as ``"key: old then, new now"``
    joined by ``"; "`` (empty when none differs).

    Example:
        >>> describe_differences({"lr": 0.1, "steps": 5}, {"lr": 0.2, "steps": 5})
        'lr: 0.1 then, 0.2 now'
    """
    differ = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    return "; ".join(f"{k}: {a!r} {then}, {b!r} now" for k, (a, b) in sorted(differ.items()))
