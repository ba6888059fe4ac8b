"""``python -m xiaozhi_core``: the ``xiaozhi`` command line."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
