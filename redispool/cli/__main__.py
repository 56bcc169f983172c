"""``python -m redispool.cli``: the same command line as ``python -m redispool``."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
