"""``python -m unicxr``: the same CLI as the ``unicxr`` command."""

from __future__ import annotations

import sys

from unicxr.cli import main

if __name__ == "__main__":
    sys.exit(main())
