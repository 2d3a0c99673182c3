"""Small shared helpers: atomic file writes, user-facing errors, seeding."""

from __future__ import annotations

from unicxr.utils.errors import UnicxrError
from unicxr.utils.io import atomic_write, atomic_write_bytes, atomic_write_text, fsync_dir
from unicxr.utils.seed import seed_everything

__all__ = [
    "UnicxrError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "seed_everything",
]
