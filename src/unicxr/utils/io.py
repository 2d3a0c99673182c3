"""Atomic file writes: write to a temporary file in the same folder, fsync, rename.

A reader never sees a half-written file; a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "default_file_mode",
    "synthetic_image_text",
    "read_json",
    "sha256_file",
]


def read_json(path: str | os.PathLike[str], *, missing: str, corrupt: str = "not valid JSON"):
    """Parse a JSON file; a missing or unparsable file is a one-line ``UnicxrError`` naming it
    (``"PATH: {missing}"`` / ``"PATH: {corrupt} (detail)"``)."""
    import json

    from unicxr.utils.errors import UnicxrError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnicxrError(f"{path}: {missing}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnicxrError(f"{path}: {corrupt} ({exc})") from None


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def synthetic_image_text(source: str) -> dict[str, str]:
    """Metadata every simulated or generated image carries (PNG tEXt chunks / JPEG comment):
    ``synthetic=true`` and what made it, so a research artefact is never mistaken for patient data."""
    from unicxr import __version__

    return {"synthetic": "true", "Software": f"unicxr {__version__} {source}"}


def default_file_mode() -> int:
    """The mode a plainly created file would get (0o666 minus the umask); mkstemp uses 0o600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", **kwargs) -> Iterator[IO]:
    """Context manager yielding a file object; on success the file replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path, "w", encoding=encoding, newline="") as fh:
        fh.write(text)
