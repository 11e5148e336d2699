"""The processes that train one LUCID SAE together (``torch.distributed``, launched by ``torchrun``).

Data parallelism: each of the ``world`` processes takes an equal part of every batch of pairs.
LUCID's losses are not means over rows that can simply be averaged: FVU divides by the batch's
variance, and the transport loss contrasts each image with captions held by other processes.
So each process computes its *share* of the whole batch's loss, with the batch-wide statistics
summed over processes (``sum``) and the other processes' caption codes and transport distances
gathered with gradients (``gather``: all-gather forward, sum-reduce backward). DDP then averages
the gradients; a process's loss is ``world`` times its share (or, for a term every process
computes whole from gathered tensors, the term itself), so the average is the gradient of the
whole batch's loss, as one process would compute it.

``SOLO``, the one-process group, turns every collective into the identity.

Example:
    >>> group = ProcessGroup.from_environment("cpu")      # SOLO unless launched by torchrun
    >>> group.world, group.rank
    (1, 0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class ProcessGroup:
    """``world`` processes of which this is number ``rank``; ``handle`` is the torch.distributed group
    that the losses' collectives use (apart from DDP's, so that the two never interleave)."""

    rank: int = 0
    world: int = 1
    handle: Any = None
    #: True when ``from_environment`` started torch.distributed (and ``close`` should end it).
    owns_default: bool = False
    #: Where the collectives' small tensors go (the GPU for nccl).
    device: str = "cpu"

    @classmethod
    def from_environment(cls, device: str) -> ProcessGroup:
        """The group torchrun describes (``WORLD_SIZE``, ``RANK``...), started here if need be
        (gloo on CPU, nccl on CUDA); ``SOLO`` when the process was not launched by torchrun."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return SOLO
        import torch.distributed as dist

        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(backend)
        where = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if backend == "nccl" else "cpu"
        return cls(dist.get_rank(), dist.get_world_size(), dist.new_group(backend=backend), owns, where)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def sum(self, value: Tensor) -> Tensor:
        """``value`` summed over the processes (no gradient)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        value = value.detach().clone()
        dist.all_reduce(value, group=self.handle)
        return value

    def max_int(self, value: int) -> int:
        """The largest ``value`` of any process."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.long, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.handle)
        return int(t)

    def gather(self, value: Tensor) -> Tensor:
        """Every process's ``value`` (equal shapes), concatenated along dim 0 in rank order, with
        gradients: a process's part gets the sum of every process's gradient for it."""
        return _Gather.apply(value, self) if self.distributed else value

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier(group=self.handle)

    def close(self) -> None:
        """End torch.distributed if ``from_environment`` started it."""
        if self.owns_default:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_default = False


#: The one-process group.
SOLO = ProcessGroup()


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, value: Tensor, group: ProcessGroup) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        ctx.group = group
        parts = [torch.empty_like(value) for _ in range(group.world)]
        dist.all_gather(parts, value.contiguous(), group=group.handle)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        import torch.distributed as dist

        group = ctx.group
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=group.handle)
        n = grad.shape[0] // group.world
        return grad[group.rank * n:(group.rank + 1) * n], None


def centred_sum_of_squares(x: Tensor, group: ProcessGroup = SOLO) -> Tensor:
    """``sum ||x - mean(x)||^2`` over the rows of every process (no gradient across processes)."""
    if not group.distributed:
        return (x - x.mean(0, keepdim=True)).pow(2).sum()
    n = group.sum(torch.tensor(float(x.shape[0]), device=x.device))
    mean = group.sum(x.detach().sum(0)) / n.clamp_min(1)
    return group.sum((x.detach() - mean).pow(2).sum())
