"""Understanding pipelines: read radiographs with a saved classifier or report generator
(:mod:`unicxr.understanding.pipeline`) and the ``unicxr report`` command."""

from __future__ import annotations

__all__: list[str] = []
