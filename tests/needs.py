"""What a test needs from the machine: skip with the reason outside CI, fail with CI=true (CI
must run every test, so a missing tool there is a broken set-up, not a skip)."""

from __future__ import annotations

import os

import pytest

CHROMIUM = "/usr/bin/chromium"


def chromium_missing() -> str | None:
    """Why Debian's chromium cannot run here, or None."""
    if os.access(CHROMIUM, os.X_OK):
        return None
    return f"{CHROMIUM} is missing (Debian package chromium; .ci/run installs it)"


def must_run(what: str, why: str | None) -> None:
    """Return when ``why`` is None; else skip the test saying why, or fail it when CI=true."""
    if why is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {what} must run: {why}")
    pytest.skip(why)
