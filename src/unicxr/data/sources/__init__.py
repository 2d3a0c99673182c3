"""One small flat reader per data set; each yields :class:`Record` objects in the same convention.

``SOURCES`` maps a ``--format`` name to its reader module (imported lazily); :func:`iter_records`
runs one.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

from unicxr.data.sources.common import ReadStats, Record, SourceOptions, is_frontal, normalize_view
from unicxr.utils import UnicxrError

__all__ = ["SOURCES", "Record", "SourceOptions", "ReadStats", "iter_records", "is_frontal", "normalize_view"]

SOURCES: dict[str, str] = {
    "phantom": "unicxr.data.sources.phantom",
    "mimic-cxr-jpg": "unicxr.data.sources.mimic_cxr_jpg",
    "chexpert": "unicxr.data.sources.chexpert",
    "iu-xray": "unicxr.data.sources.iu_xray",
    "padchest": "unicxr.data.sources.padchest",
    "nih": "unicxr.data.sources.nih",
    "folder": "unicxr.data.sources.folder",
}


def iter_records(
    fmt: str,
    root: str | Path,
    options: SourceOptions | None = None,
    stats: ReadStats | None = None,
    *,
    skip: tuple[Path, ...] = (),
) -> Iterator[Record]:
    """Yield the records of data set ``root`` read as format ``fmt``.

    Args:
        fmt: one of :data:`SOURCES` (``_`` accepted for ``-``, case-insensitive).
        root: the data set's root folder.
        options: reader options.
        stats: counters filled while reading.
        skip: folders the ``folder`` reader must not descend into (e.g. the output cache).

    Raises:
        UnicxrError: unknown format, missing root, or a layout the reader does not recognise.
    """
    key = fmt.strip().lower().replace("_", "-")
    if key not in SOURCES:
        raise UnicxrError(f"--format: unknown format {fmt!r}; expected one of: {', '.join(SOURCES)}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UnicxrError(f"--root: {root} is not a folder")
    module = importlib.import_module(SOURCES[key])
    options = options or SourceOptions()
    stats = stats if stats is not None else ReadStats()
    if key == "folder":
        yield from module.read(root, options, stats, skip=skip)
    else:
        yield from module.read(root, options, stats)
