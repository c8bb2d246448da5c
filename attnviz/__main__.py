"""``python -m attnviz``: the command line (see :mod:`attnviz.cli`)."""

from __future__ import annotations

from attnviz.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
