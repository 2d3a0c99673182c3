"""Image sets for evaluation: a ``unicxr prepare`` cache (streamed through
:class:`~unicxr.data.dataset.CXRDataset`), or a folder of images (e.g. generated ones).

A folder may hold a ``metadata.csv`` with an image-path column (``image_path``, ``path``, ``file`` or
``filename``, relative to the folder) and, optionally, the 14 label columns (for generated images:
the *prompted* labels) or a ``findings`` column (``"Cardiomegaly, Pleural Effusion"``), a ``prompt``
column and a ``split`` column. Without it every image file under the folder is used (sorted), with no
labels. A ``unicxr phantom`` output folder is such a folder.

Every set yields ``{"image": (1, H, W) float32 in [0, 1], "labels": (14,) float32 (NaN = blank)}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from unicxr.labels import FINDINGS, NUM_FINDINGS, labels_from_row, parse_findings_list
from unicxr.utils.errors import UnicxrError

__all__ = ["ImageFolderSet", "open_image_set", "Subset"]

_PATH_COLUMNS = ("image_path", "path", "file", "filename")


class ImageFolderSet(Dataset):
    """Images of a folder (see module docstring); images are resized to the first image's size.

    Attributes:
        labels: (N, 14) float32 or None; prompts: list of str or None; paths: list of Path.
    """

    def __init__(self, root: str | Path, *, split: str | None = None) -> None:
        import pandas as pd

        from unicxr.data.io import is_image_candidate

        self.root = Path(root)
        if not self.root.is_dir():
            raise UnicxrError(f"{self.root}: image folder not found")
        self.labels: np.ndarray | None = None
        self.prompts: list[str] | None = None
        self.reports: list[str] | None = None
        meta = self.root / "metadata.csv"
        if meta.is_file():
            try:
                df = pd.read_csv(meta, dtype=str, keep_default_na=False)
            except (OSError, ValueError, pd.errors.ParserError) as exc:
                raise UnicxrError(f"{meta}: cannot read CSV ({exc})") from None
            col = next((c for c in _PATH_COLUMNS if c in df.columns), None)
            if col is None:
                raise UnicxrError(f"{meta}: needs an image path column ({', '.join(_PATH_COLUMNS)})")
            if split is not None:
                if "split" not in df.columns:
                    raise UnicxrError(
                        f"{meta}: split {split!r} requested but the CSV has no 'split' column (use split 'all')"
                    )
                df = df[df["split"] == split]
                if df.empty:
                    raise UnicxrError(f"{meta}: no rows with split == {split!r}")
            self.paths = [self.root / p for p in df[col]]
            rows = df.to_dict("records")
            if any(f in df.columns for f in FINDINGS):
                try:
                    self.labels = np.stack([labels_from_row(r) for r in rows]).astype(np.float32)
                except ValueError as exc:
                    raise UnicxrError(f"{meta}: {exc}") from None
            elif "findings" in df.columns:
                try:
                    self.labels = np.stack([parse_findings_list(r["findings"]) for r in rows]).astype(
                        np.float32
                    )
                except KeyError as exc:
                    raise UnicxrError(f"{meta}: findings column: {exc.args[0]}") from None
            if "prompt" in df.columns:
                self.prompts = [str(r["prompt"]) for r in rows]
            if "report" in df.columns:
                self.reports = [str(r["report"]) for r in rows]
        else:
            if split is not None:
                raise UnicxrError(
                    f"{self.root}: --split {split!r} needs a metadata.csv with a 'split' column"
                )
            self.paths = sorted(p for p in self.root.rglob("*") if p.is_file() and is_image_candidate(p))
        if not self.paths:
            raise UnicxrError(f"{self.root}: no images found")
        self._size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, i: int) -> torch.Tensor:
        from unicxr.data.io import DecodeError, decode_image

        path = self.paths[i]
        try:
            arr = decode_image(path)
        except DecodeError as exc:
            raise UnicxrError(f"{path}: cannot decode image ({exc})") from None
        except FileNotFoundError:
            raise UnicxrError(f"{path}: image file not found") from None
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).unsqueeze(0)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) every image is brought to (that of the first image)."""
        if self._size is None:
            self._size = tuple(self._read(0).shape[-2:])  # type: ignore[assignment]
        return self._size  # type: ignore[return-value]

    def __getitem__(self, i: int) -> dict[str, Any]:
        img = self._read(i)
        if tuple(img.shape[-2:]) != self.size:
            img = torch.nn.functional.interpolate(
                img.unsqueeze(0), size=self.size, mode="bilinear", align_corners=False, antialias=True
            )[0]
        lab = self.labels[i] if self.labels is not None else np.full(NUM_FINDINGS, np.nan, np.float32)
        return {"image": img.clamp(0, 1), "labels": torch.from_numpy(lab)}

    def describe(self) -> dict[str, Any]:
        return {"type": "folder", "path": str(self.root), "n": len(self), "labels": self.labels is not None}


class Subset(Dataset):
    """A fixed subset (indices) of an image set, keeping its labels/prompts aligned."""

    def __init__(self, base: Any, indices: np.ndarray) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = base.labels[self.indices] if base.labels is not None else None
        self.prompts = [base.prompts[i] for i in self.indices] if base.prompts is not None else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.base[int(self.indices[i])]

    def describe(self) -> dict[str, Any]:
        return {**self.base.describe(), "n": len(self), "subsampled_from": len(self.base)}


def _is_cache(path: Path) -> bool:
    """A finished ``unicxr prepare`` cache has a ``cache.json`` manifest."""
    return (path / "cache.json").is_file()


def open_image_set(
    path: str | Path, *, split: str | None = None, max_images: int | None = None, seed: int = 0
) -> Any:
    """Open a cache or an image folder; ``split`` selects a split (``None``/``"all"``: everything);
    ``max_images`` keeps a seeded random subset (without replacement)."""
    path = Path(path)
    if not path.exists():
        raise UnicxrError(f"{path}: not found (expected a cache directory or an image folder)")
    split = None if split in (None, "", "all") else split
    if _is_cache(path):
        from unicxr.data.dataset import CXRDataset

        ds: Any = CXRDataset(path, split=split, fields=("image", "labels"))
    else:
        ds = ImageFolderSet(path, split=split)
    if max_images is not None and len(ds) > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), max_images, replace=False))
        ds = Subset(ds, idx)
    return ds
