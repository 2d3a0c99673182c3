"""Data order as a pure function of (seed, step): resume and multi-process need no sampler state.

Each epoch is a seeded permutation of the data set; optimizer step ``s`` takes the ``s``-th block of
``batch_size`` indices (incomplete tail dropped). The global batch is split into
``grad_accum × world_size`` micro-batches: micro-batch ``a`` of rank ``r`` holds block
``a * world_size + r``. So ranks see disjoint slices whose union is the global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from unicxr.utils.errors import UnicxrError

__all__ = ["StepBatchSampler", "micro_batch_size"]


def micro_batch_size(batch_size: int, world_size: int, grad_accum: int) -> int:
    """Per-rank micro-batch size; error unless ``batch_size`` divides evenly."""
    parts = world_size * grad_accum
    if batch_size % parts:
        raise UnicxrError(
            f"train.batch_size: {batch_size} is not divisible by world_size x grad_accum = "
            f"{world_size} x {grad_accum}"
        )
    return batch_size // parts


class StepBatchSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches (lists of indices) for steps ``start_step .. max_steps-1``."""

    def __init__(
        self,
        n_items: int,
        *,
        batch_size: int,
        grad_accum: int,
        world_size: int,
        rank: int,
        seed: int,
        start_step: int,
        max_steps: int,
    ) -> None:
        self.n = n_items
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.world = world_size
        self.rank = rank
        self.seed = seed
        self.start_step = start_step
        self.max_steps = max_steps
        self.micro = micro_batch_size(batch_size, world_size, grad_accum)
        self.steps_per_epoch = n_items // batch_size
        if self.steps_per_epoch == 0:
            raise UnicxrError(f"train.batch_size: {batch_size} is larger than the training set ({n_items} items)")
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g)
            self._perm_epoch = epoch
        return self._perm

    def indices_for(self, step: int, micro: int) -> list[int]:
        """Indices of this rank's ``micro``-th micro-batch of optimizer step ``step``."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        block = micro * self.world + self.rank
        start = pos * self.batch_size + block * self.micro
        return self._permutation(epoch)[start : start + self.micro].tolist()

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.max_steps):
            for micro in range(self.grad_accum):
                yield self.indices_for(step, micro)

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step) * self.grad_accum
