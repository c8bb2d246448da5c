"""``python -m attnviz.cli``: the same command line as ``python -m attnviz``."""

from __future__ import annotations

from attnviz.cli import main

if __name__ == "__main__":  # pragma: no cover - python -m attnviz.cli
    raise SystemExit(main())
