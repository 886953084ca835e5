"""The ``falbudget`` command line: ``main(argv) -> int`` runs it; ``run()`` is the script."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    from falbudget.cli.app import main as app_main

    return app_main(argv)


def run() -> None:
    """The ``falbudget`` console script: ``sys.exit(main())``."""
    sys.exit(main())


__all__ = ["main", "run"]
