"""Report text: rule-based CheXpert-style labeler, BPE tokenizer, optional CheXbert backend.

Submodules: :mod:`unicxr.text.labeler` (``label_reports``), :mod:`unicxr.text.lexicon`,
:mod:`unicxr.text.negation`, :mod:`unicxr.text.tokenizer`, :mod:`unicxr.text.chexbert`.
This package imports nothing heavy at import time.
"""

from __future__ import annotations

__all__ = ["label_report", "label_reports"]


def __getattr__(name: str):  # lazy re-exports keep ``import unicxr.text`` light
    if name in __all__:
        from unicxr.text import labeler

        return getattr(labeler, name)
    raise AttributeError(name)
