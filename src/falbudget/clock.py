"""The one clock falbudget reads when it is not given a moment: POSIX seconds, UTC.

The pricing engine (which prices are in effect "now"), the guard's default clock and the CLI's
reports all ask :func:`now`. Nothing fixes it in library use; the command line fixes it for the
length of one command when ``FALBUDGET_NOW`` is set (docs/cli.md), so documented output and tests
do not depend on the calendar. Code that needs a clock of its own passes one (``Guard(clock=...)``,
``at=``, ``now=``) instead of fixing this one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

_fixed: float | None = None


def now() -> float:
    """The current time in POSIX seconds: the fixed moment inside :func:`fixed`, else the wall
    clock."""
    moment = _fixed
    return time.time() if moment is None else moment


@contextmanager
def fixed(moment: float | None) -> Iterator[None]:
    """Make :func:`now` return ``moment`` until the block ends (None: the wall clock)."""
    global _fixed
    previous = _fixed
    _fixed = moment
    try:
        yield
    finally:
        _fixed = previous
