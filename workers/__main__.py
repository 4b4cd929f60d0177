"""``python -m workers``: see :mod:`workers.pool` (spawned processes must import their
target from a regular module, not from a package's ``__main__``)."""

from __future__ import annotations

import sys

from workers.pool import main

if __name__ == "__main__":
    sys.exit(main())
