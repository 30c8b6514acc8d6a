"""``python -m polyplug``: the command line (see :mod:`polyplug.cli`)."""

from __future__ import annotations

import sys

from polyplug.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
