"""Data layer: robust image decoding, data-set readers, report cleaning, the preprocessed cache.

``from unicxr.data import CXRCache`` gives memory-mapped random access to a cache written by
``unicxr prepare``. Heavy modules (torch, pandas) are imported lazily so that importing
:mod:`unicxr.data.reports` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CXRCache",
    "LatentCache",
    "CXRDataset",
    "Augment",
    "DecodeError",
    "decode_image",
    "Record",
    "SOURCES",
    "iter_records",
    "patient_split",
    "prepare_cache",
    "split_sections",
    "clean_report",
    "findings_impression",
]

_LAZY = {
    "CXRCache": "unicxr.data.cache",
    "LatentCache": "unicxr.data.latent_cache",
    "prepare_cache": "unicxr.data.cache",
    "CXRDataset": "unicxr.data.dataset",
    "Augment": "unicxr.data.dataset",
    "DecodeError": "unicxr.data.io",
    "decode_image": "unicxr.data.io",
    "Record": "unicxr.data.sources",
    "SOURCES": "unicxr.data.sources",
    "iter_records": "unicxr.data.sources",
    "patient_split": "unicxr.data.splits",
    "split_sections": "unicxr.data.reports",
    "clean_report": "unicxr.data.reports",
    "findings_impression": "unicxr.data.reports",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unicxr.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
