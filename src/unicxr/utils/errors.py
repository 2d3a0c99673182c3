"""User-facing error type: the CLI prints its message as one line and exits non-zero."""

from __future__ import annotations

__all__ = ["UnicxrError"]


class UnicxrError(Exception):
    """An error caused by user input (a file, a field, a config value), with a one-line message.

    The message should name the file/field and what was wrong, e.g.
    ``"recipe.yaml: optim.lr: must be a positive finite number, got nan"``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
