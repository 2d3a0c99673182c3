"""unicxr: unified chest X-ray understanding and generation.

Layers (imports point one way, lower never imports higher):
``labels``/``config``/``utils`` → ``phantom`` → ``data`` → ``text`` → ``models`` → ``sampling``
→ ``train``/``eval`` → ``pipelines``/``cli``/``serve``/``bench``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
