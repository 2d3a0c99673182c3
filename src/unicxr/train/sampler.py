"""Data order as a pure function of (seed, step): resume and multi-process need no sampler state.

Each epoch is a seeded permutation of the data set; optimizer step ``s`` takes the ``s``-th block of
``batch_size`` indices (incomplete tail dropped). The global batch is split into
``grad_accum × world_size`` micro-batches: micro-batch ``a`` of rank ``r`` holds block
``a * world_size + r``. So ranks see disjoint slices whose union is the global batch.

Repeat-factor sampling (``train.repeat_threshold``, as in LVIS, Gupta et al. 2019): an image whose rarest
positive finding has training frequency ``f`` < ``t`` appears ``max(1, sqrt(t / f))`` times per epoch on
average (the fractional part is a seeded coin per epoch), so rare findings reach the loss more often. The
epoch lengths then vary; they are still a pure function of (seed, epoch). Explicit per-finding factors
(``train.repeat_findings``) set an image's factor to the largest factor of its positive findings (the larger
of that and the threshold's factor when both are set).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import Sampler

from unicxr.utils.errors import UnicxrError

__all__ = ["StepBatchSampler", "micro_batch_size", "repeat_factors"]


def repeat_factors(
    labels: np.ndarray, threshold: float | None, by_finding: Mapping[int, float] | None = None
) -> np.ndarray:
    """Per-image repeat factors (N,) float64 ≥ 1 from labels (N, K) (1 = positive; 0, -1, NaN otherwise).

    Finding ``k``'s frequency ``f_k`` is the fraction of images where it is positive; image ``i`` gets
    ``max(1, max_k sqrt(threshold / f_k))`` over its positive findings (1 with none; no threshold: 1).
    ``by_finding`` maps column ``k`` to an explicit factor ≥ 1 for images positive for it; an image gets
    the largest of all that apply.
    """
    pos = np.asarray(labels) == 1.0
    per_finding = np.ones(pos.shape[1])
    if threshold is not None:
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        freq = pos.mean(axis=0) if len(pos) else np.zeros(pos.shape[1])
        per_finding = np.sqrt(threshold / np.maximum(freq, 1e-12))
    for k, factor in (by_finding or {}).items():
        if not factor >= 1.0:
            raise ValueError(f"factor of column {k} must be >= 1, got {factor}")
        per_finding[k] = max(per_finding[k], factor)
    return np.where(pos, per_finding[None, :], 1.0).max(axis=1, initial=1.0)  # initial: never below 1


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
        repeat: np.ndarray | None = None,
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
        if repeat is not None:
            repeat = np.asarray(repeat, dtype=np.float64)
            if repeat.shape != (n_items,) or not np.all(repeat >= 1.0):
                raise ValueError(f"repeat: expected {n_items} factors >= 1, got shape {repeat.shape}")
        self.repeat = repeat
        self._epoch_starts = [0]  # first step of each epoch (repeat-factor epochs differ in length)
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def _copies(self, epoch: int) -> np.ndarray:
        """(N,) int64 copies of each item in ``epoch``: floor(r), plus one with probability frac(r)."""
        assert self.repeat is not None
        u = np.random.default_rng([self.seed, epoch, 0x5EED]).random(self.n)
        return np.floor(self.repeat + u).astype(np.int64)

    def _epoch_items(self, epoch: int) -> torch.Tensor:
        """The items of ``epoch`` before shuffling: each once, or its repeat-factor copies."""
        if self.repeat is None:
            return torch.arange(self.n)
        return torch.from_numpy(np.repeat(np.arange(self.n), self._copies(epoch)))

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            items = self._epoch_items(epoch)
            self._perm = items[torch.randperm(len(items), generator=g)]
            self._perm_epoch = epoch
        return self._perm

    def _locate(self, step: int) -> tuple[int, int]:
        """(epoch, step within the epoch) of optimizer step ``step``."""
        if self.repeat is None:
            return divmod(step, self.steps_per_epoch)
        starts = self._epoch_starts
        while starts[-1] <= step:
            starts.append(starts[-1] + int(self._copies(len(starts) - 1).sum()) // self.batch_size)
        epoch = int(np.searchsorted(starts, step, side="right")) - 1
        return epoch, step - starts[epoch]

    def indices_for(self, step: int, micro: int) -> list[int]:
        """Indices of this rank's ``micro``-th micro-batch of optimizer step ``step``."""
        epoch, pos = self._locate(step)
        block = micro * self.world + self.rank
        start = pos * self.batch_size + block * self.micro
        return self._permutation(epoch)[start : start + self.micro].tolist()

    def epoch_of(self, step: int) -> int:
        return self._locate(step)[0]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.max_steps):
            for micro in range(self.grad_accum):
                yield self.indices_for(step, micro)

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step) * self.grad_accum
