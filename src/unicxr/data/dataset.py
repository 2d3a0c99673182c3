"""The one training/evaluation dataset over a cache: streamed from the memory map, never a split in RAM.

``CXRDataset(cache, split)`` reads each item from the cache's memory-mapped shards when it is asked
for (a DataLoader worker re-opens the maps; report strings live in compact arrays, not per-worker
Python lists). Options: resize to a model size, labels under an uncertainty policy (``target``),
tokenized reports (``input_ids``), per-item seeded augmentation, a cap on the number of items. It also
reads an image folder with a ``metadata.csv`` (e.g. a ``unicxr phantom`` output), decoding on demand.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from unicxr.data.augment import Augment
from unicxr.labels import NUM_FINDINGS, UncertainPolicy, apply_policy
from unicxr.utils.errors import UnicxrError

__all__ = ["Augment", "CXRDataset", "DEFAULT_FIELDS"]

DEFAULT_FIELDS = ("image", "labels", "report", "index")
_META = ("path", "split", "view", "patient_id", "study_id")


class CXRDataset(Dataset):
    """Items of one split of a cache (or image folder), streamed.

    Args:
        source: a :class:`~unicxr.data.cache.CXRCache`, a cache directory, or an image folder with
            ``metadata.csv``.
        split: ``train``/``validate``/``test`` or None (all).
        size: resize images to ``size``×``size`` (None: as stored).
        policy: when given, items carry ``target`` (14,) = labels under this uncertainty policy
            (NaN = masked) and ``blank_as_negative``.
        tokenizer: when given, items carry ``input_ids`` (LongTensor, ≤ ``max_tokens`` with
            ``<bos>``/``<eos>``) of the report.
        augment: per-item augmentation seeded by (``seed``, epoch, item); None = off.
        max_items: keep the first ``max_items`` items (tests, quick runs).
        fields: which of ``image``, ``labels``, ``report``, ``index``, ``path``, ``split``, ``view``,
            ``patient_id``, ``study_id`` items carry (default: image, labels, report, index).

    Items: ``image`` (1, S, S) float32 in [0, 1], ``labels`` (14,) float32 (NaN = not mentioned),
    ``report`` str, ``index`` int (position in this dataset), [+ ``target``, ``input_ids``, metadata].
    Attributes ``labels`` (N, 14) and ``prompts`` (None) serve the image-set API of ``unicxr eval``.
    """

    def __init__(
        self,
        source: Any,
        split: str | None = None,
        *,
        size: int | None = None,
        policy: UncertainPolicy | str | None = None,
        blank_as_negative: bool = True,
        tokenizer: Any = None,
        max_tokens: int | None = None,
        augment: Augment | None = None,
        seed: int = 0,
        max_items: int | None = None,
        fields: Sequence[str] = DEFAULT_FIELDS,
    ) -> None:
        from unicxr.data.cache import CXRCache

        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.exists():
                raise UnicxrError(f"{path}: cache directory not found (run `unicxr prepare` first)")
            if (path / "cache.json").is_file():
                source = CXRCache(path, split=split)
            else:
                from unicxr.data.image_sets import ImageFolderSet

                source = ImageFolderSet(path, split=split)
        self.source = source
        self.is_cache = isinstance(source, CXRCache)
        self.root = Path(getattr(source, "root", "."))
        self.split = split
        n = len(source)
        self.n = n if max_items is None else min(n, int(max_items))
        if self.n == 0:
            raise UnicxrError(f"{self.root}: split {split!r} is empty")
        labels = source.labels
        self.labels: np.ndarray = (
            np.full((self.n, NUM_FINDINGS), np.nan, np.float32)
            if labels is None
            else np.asarray(labels[: self.n], dtype=np.float32)
        )
        self.targets = (
            None if policy is None else apply_policy(self.labels, policy, blank_as_negative=blank_as_negative)
        )
        self.prompts: list[str] | None = None
        self.size = size
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        unknown = set(fields) - {*DEFAULT_FIELDS, *_META}
        if unknown:
            raise ValueError(f"CXRDataset: unknown fields {sorted(unknown)}")
        self.fields = tuple(fields)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (call once per epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def report(self, i: int) -> str:
        """Report text of item ``i`` (empty when the source has none)."""
        if self.is_cache:
            return self.source.report(i)
        reports = getattr(self.source, "reports", None)
        return reports[i] if reports is not None else ""

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` (1, S, S) float32 in [0, 1], resized to ``size`` when set."""
        img = self.source.image(i) if self.is_cache else self.source[i]["image"]
        if self.size is not None and tuple(img.shape[-2:]) != (self.size, self.size):
            from unicxr.utils.tensor_image import resize_square

            img = resize_square(img.unsqueeze(0), self.size)[0].clamp_(0, 1)
        return img

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for a dataset of {self.n} items")
        item: dict[str, Any] = {}
        if "image" in self.fields:
            img = self.image(i)
            if self.augment is not None:
                gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, i)) & ((1 << 63) - 1))
                img = self.augment(img, gen)
            item["image"] = img
        if "labels" in self.fields:
            item["labels"] = torch.from_numpy(self.labels[i].copy())
        if self.targets is not None:
            item["target"] = torch.from_numpy(self.targets[i].copy())
        if "report" in self.fields or self.tokenizer is not None:
            text = self.report(i)
            if "report" in self.fields:
                item["report"] = text
            if self.tokenizer is not None:
                ids = self.tokenizer.encode(text, max_length=self.max_tokens)
                item["input_ids"] = torch.tensor(ids, dtype=torch.long)
        if "index" in self.fields:
            item["index"] = i
        if self.is_cache:
            for key in _META:
                if key in self.fields:
                    item[key] = self.source.meta(i, key)
        return item

    def describe(self) -> dict[str, Any]:
        """What the set is (for evaluation reports)."""
        kind = "cache" if self.is_cache else "folder"
        return {"type": kind, "path": str(self.root), "split": self.split, "n": len(self), "labels": True}
