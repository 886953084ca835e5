"""The dashboard in a real browser: Python Playwright driving Debian's headless Chromium
(/usr/bin/chromium, no browser download) over the ledger of tests/dashboard_scene.py (SQLite;
its docstring has the figures by hand: spend, holds, refusals and an overrun). Checks the
figures shown to the cent, that the range picker changes the chart, that a token is required
off loopback, that an admin action needs the admin token, and runs axe-core (bundled by
axe-playwright-python) on every page: no serious or critical violation. Screenshots of every
page go to test-artifacts/dashboard/ (gitignored) and the test's tmp folder; docs/img/
dashboard-*.png are copies of them.

Without playwright or Chromium the test skips and says why; with CI=true it fails instead."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard_scene import KEY_ID, build
from falbudget.dashboard.app import create_dashboard
from falbudget.dashboard.config import DashboardSettings
from falbudget.ledger import open_ledger
from needs import CHROMIUM, chromium_missing, must_run
from test_report import utc

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
TOKEN, ADMIN = "view-token-1", "admin-token-2"
PAGES = {
    "caps": "/",
    "spend": "/spend",
    "activity": "/activity",
    "keys": "/keys",
    "api": "/api",
    "release": "/actions/release-expired",
    "revoke": f"/keys/{KEY_ID}/revoke",
}


def require_browser() -> None:
    why = None
    try:
        import axe_playwright_python  # noqa: F401
        import playwright  # noqa: F401
    except ImportError as exc:
        why = f"{exc.name} is not installed (pip install -e '.[test]')"
    must_run("the browser test", why or chromium_missing())


class Server:
    """The dashboard app served by uvicorn in a thread on a socket bound before it starts (the
    browser's first request waits in the socket's backlog: no wait on the clock)."""

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.base = f"http://{host}:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()


def outside_address() -> str | None:
    """An address of this machine that is not loopback (the route to a TEST-NET address; no
    packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


@pytest.fixture
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as play:
        chromium = play.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-proxy-server"]
        )
        yield chromium
        chromium.close()


def shoot(page: Any, name: str, folder: Path) -> None:
    for target in (folder, ARTIFACTS):
        target.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target / f"dashboard-{name}.png"), full_page=True)


def serious(page: Any) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    result = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']}"
        for v in result.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_the_dashboard_in_a_browser(browser: Any, tmp_path: Path) -> None:
    ledger = open_ledger("sqlite:///" + str(tmp_path / "ledger.db"))
    guard, clock = build(ledger)
    audit = tmp_path / "audit.jsonl"
    settings = DashboardSettings(admin_token=ADMIN, audit_log=str(audit))
    server = Server(create_dashboard(guard, settings))
    shots = tmp_path / "screenshots"
    try:
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        page = context.new_page()

        # every page: shown, no serious accessibility violation, a screenshot
        for name, path in PAGES.items():
            answer = page.goto(server.base + path)
            assert answer is not None and answer.status == 200, name
            assert serious(page) == [], name
            shoot(page, name, shots)

        # the caps, to the cent (dashboard_scene: month 10.00 - 6.30 - 2.00 = 1.70 left)
        page.goto(server.base + "/")
        first = page.locator("li.cap").first
        assert "user=bob week cap 1.20" in first.locator("h2").inner_text()
        month = page.locator("li.cap", has_text="global month cap 10.00")
        assert month.locator("dd.spent").inner_text() == "6.30"
        assert month.locator("dd.held").inner_text() == "2.00"
        assert month.locator("dd.remaining").inner_text() == "1.70"
        assert month.locator("dd.used").inner_text() == "83.0%"
        assert month.locator("dd.resets").inner_text() == "2026-12-01 00:00 UTC"

        # the spend page and its range picker (a GET form: works without JavaScript)
        page.goto(server.base + "/spend")
        assert page.locator(".total-spent").inner_text() == "6.30"
        assert page.locator(".total-overrun").inner_text() == "0.30"
        alpha = page.locator('table[data-by="project"] tr', has_text="alpha")
        assert alpha.locator("td").first.inner_text() == "4.60"
        before = page.locator("svg.chart").first.get_attribute("data-days")
        bars_before = page.locator("svg.chart").first.locator("rect").count()
        page.fill("#since", "2026-11-21")
        page.fill("#until", "2026-11-23")
        page.click("button[type=submit]")
        page.wait_for_url("**/spend?since=2026-11-21&until=2026-11-23")
        # by default the 30 days to the end of today (October 25 to November 23); then 2 days
        after = page.locator("svg.chart").first.get_attribute("data-days")
        assert (before, after) == ("30", "2")
        # November 21 spent 0.60 -> 0.90 (#3); the 22nd 1.60 + 0.80: one bar a day, as before 5
        # (20th, 21st, 22nd, and the 23rd's spent and held)
        assert (bars_before, page.locator("svg.chart").first.locator("rect").count()) == (5, 2)
        assert page.locator(".total-spent").inner_text() == "3.30"  # 0.90 + 1.60 + 0.80
        shoot(page, "spend-range", shots)

        # activity: holds in flight, the overrun and the reconciliation
        page.goto(server.base + "/activity")
        assert page.locator("table.in-flight tbody tr").count() == 2
        assert page.locator("table.overruns td.overrun").inner_text() == "0.30"
        assert page.locator("table.adjustments tbody tr").count() == 1
        bob = page.locator("table.refusals tr", has_text="cap_exceeded")
        assert bob.locator("td.amount").inner_text() == "0.80"
        assert "user=bob week cap 1.20" in bob.inner_text()

        # keys: k1 spent 1.20 (hold #9)
        page.goto(server.base + "/keys")
        assert page.locator(f'tr[data-key="{KEY_ID}"] td.spent').inner_text() == "1.20"

        # an admin action needs the admin token (and a confirmation)
        clock.now = utc(2026, 11, 23, 19)  # #7 and #8 are past their expiry
        page.goto(server.base + "/actions/release-expired")
        page.fill("#admin_token", "not-the-token")
        page.check("#confirm")
        page.click("button[type=submit]")
        assert page.locator("p.error").inner_text() == "the admin token is not right"
        assert len(ledger.holds(states=["held", "submitted"])) == 2
        page.goto(server.base + "/actions/release-expired")
        page.fill("#admin_token", ADMIN)
        page.check("#confirm")
        page.click("button[type=submit]")
        assert page.locator("p.done").inner_text() == "Closed 2 hold(s)."
        assert ledger.holds(states=["held", "submitted"]) == []
        assert audit.read_text().count("\n") == 2  # the refusal and the release
        context.close()
    finally:
        server.stop()

    # a token off loopback: the browser is asked for it (HTTP Basic), and gets in with it
    outside = outside_address()
    host = outside or "127.0.0.1"
    tokened = Server(create_dashboard(guard, DashboardSettings(token=TOKEN)), host)
    try:
        from playwright.sync_api import Error as PlaywrightError

        def status(credentials: dict[str, str] | None) -> int | str:
            """The page's HTTP status, or Chromium's error when it gives up asking."""
            context = browser.new_context(http_credentials=credentials)
            try:
                answer = context.new_page().goto(tokened.base + "/")
                return 0 if answer is None else answer.status
            except PlaywrightError as exc:
                return "ERR_INVALID_AUTH_CREDENTIALS" if "INVALID_AUTH" in str(exc) else str(exc)
            finally:
                context.close()

        assert status(None) in (401, "ERR_INVALID_AUTH_CREDENTIALS")
        assert status({"username": "me", "password": "guess"}) in (
            401,
            "ERR_INVALID_AUTH_CREDENTIALS",
        )
        assert status({"username": "me", "password": TOKEN}) == 200
    finally:
        tokened.stop()
    if outside is not None:  # and with no token, an outside client is refused
        open_server = Server(create_dashboard(guard), outside)
        try:
            bare = browser.new_context()
            answer = bare.new_page().goto(open_server.base + "/")
            assert answer is not None and answer.status == 403
            bare.close()
        finally:
            open_server.stop()
    ledger.close()
