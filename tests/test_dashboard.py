"""The dashboard's JSON API and pages over the ledger of tests/dashboard_scene.py (its docstring
has the figures, by hand), on every backend; each API answer is validated against the OpenAPI
document the dashboard serves. Access rules, write actions and their audit log, the history's
cursor pagination, `falbudget serve`'s refusals and the proxy's /dashboard mount."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard_scene import KEY_ID, build
from falbudget import Guard
from falbudget.cli.app import main
from falbudget.dashboard.app import create_dashboard
from falbudget.dashboard.config import DashboardSettings
from falbudget.errors import FalbudgetError
from falbudget.ledger import Ledger, MemoryLedger
from test_report import NOW, utc

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

jsonschema = pytest.importorskip("jsonschema")

LOOPBACK = ("127.0.0.1", 50000)
ELSEWHERE = ("192.0.2.7", 50000)


def client(app: Any, peer: tuple[str, int] = LOOPBACK, **kw: Any) -> TestClient:
    # as a browser on this machine asks (TestClient's own default Host is "testserver")
    kw.setdefault("base_url", "http://127.0.0.1:8788")
    return TestClient(app, client=peer, **kw)


@pytest.fixture
def scene(ledger_factory: Callable[[], Ledger], tmp_path: Path) -> Iterator[tuple[Guard, Any]]:
    guard, clock = build(ledger_factory())
    yield guard, clock


@pytest.fixture
def api(scene: tuple[Guard, Any], tmp_path: Path) -> TestClient:
    guard, _ = scene
    settings = DashboardSettings(audit_log=str(tmp_path / "audit.jsonl"))
    return client(create_dashboard(guard, settings))


class Spec:
    """The OpenAPI document the dashboard serves; checks an answer against its 200 schema."""

    def __init__(self, document: dict[str, Any]) -> None:
        assert document["openapi"].startswith("3.1")
        self.document = document

    def check(self, path: str, body: Any, status: int = 200) -> None:
        operation = self.document["paths"][path]["get"]
        answer = operation["responses"][str(status)]
        schema = answer["content"]["application/json"]["schema"]
        jsonschema.validate(
            body,
            {**schema, "components": self.document["components"]},
            cls=jsonschema.Draft202012Validator,
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        )


def get(api: TestClient, spec: Spec, path: str, **params: Any) -> Any:
    answer = api.get(path, params=params)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    spec.check(path, body)
    return body


@pytest.fixture
def spec(api: TestClient) -> Spec:
    document = api.get("/api/v1/openapi.json").json()
    jsonschema.Draft202012Validator.check_schema(document["components"]["schemas"]["Report"])
    return Spec(document)


def test_status_has_every_cap_over_or_near_first_to_the_cent(api: TestClient, spec: Spec) -> None:
    body = get(api, spec, "/api/v1/status")
    rows = [
        (c["cap"], c["spent"], c["held"], c["remaining"], c["used"], c["state"])
        for c in body["caps"]
    ]
    # dashboard_scene's docstring: by share used, highest first
    assert rows == [
        ("user=bob week cap 1.20", "0.00", "1.20", "0.00", "100.0%", "over"),
        ("global month cap 10.00", "6.30", "2.00", "1.70", "83.0%", "near"),
        ("global day cap 5.00", "1.20", "2.00", "1.80", "64.0%", "ok"),
        ("project=alpha total cap 10.00", "4.60", "1.20", "4.20", "58.0%", "ok"),
        ("project=beta total cap 10.00", "0.90", "0.80", "8.30", "17.0%", "ok"),
        ("project=gamma total cap 5.00", "0.00", "0.00", "5.00", "0.0%", "ok"),
    ]
    month = body["caps"][1]
    # the month of now (2026-11-23) started on the 1st and resets on December 1st
    assert (month["window_start"], month["resets_at"]) == (
        "2026-11-01T00:00:00+00:00",
        "2026-12-01T00:00:00+00:00",
    )
    assert body["caps"][3]["resets_at"] is None  # a total cap never resets


def test_report_is_the_report_of_the_cli(api: TestClient, spec: Spec, tmp_path: Path) -> None:
    body = get(api, spec, "/api/v1/report")
    totals = body["totals"]
    # spent 0.80 + 1.00 + 0.90 + 1.60 + 0.80 + 1.20 = 6.30; held 1.20 + 0.80 = 2.00
    assert (totals["spent"], totals["held"], totals["overruns"], totals["overrun"]) == (
        "6.30",
        "2.00",
        1,
        "0.30",
    )
    by_project = next(b for b in body["breakdowns"] if b["by"] == ["project"])
    # alpha: 0.80 + 1.00 + 1.60 + 1.20 spent, 1.20 held; beta: 0.90 spent, 0.80 held; none: 0.80
    assert [(r["project"], r["spent"], r["held"]) for r in by_project["rows"]] == [
        ("alpha", "4.60", "1.20"),
        ("beta", "0.90", "0.80"),
        (None, "0.80", "0.00"),
    ]
    assert [b["by"] for b in body["breakdowns"]] == [["endpoint"], ["project"], ["user"], ["day"]]
    # a range: November 22 only holds #5 (1.60, expired) and #6 (0.80)
    day = get(api, spec, "/api/v1/report", since="2026-11-22", until="2026-11-23")
    assert (day["totals"]["spent"], day["totals"]["held"]) == ("2.40", "0.00")
    assert [d["day"] for d in day["daily"]] == ["2026-11-22"]


def test_holds_in_flight_with_age_and_expiry(api: TestClient, spec: Spec) -> None:
    body = get(api, spec, "/api/v1/holds")
    rows = [
        (h["state"], h["amount"], h["age_seconds"], h["expires_in_seconds"], h["overdue"])
        for h in body["holds"]
    ]
    # #8 at 17:30 (submitted, 0.80): 30 min old, expires at 18:30; #7 at 17:00 (held, 1.20):
    # 60 min old, expires at 18:00, now: not yet overdue (expiry is "before now")
    assert rows == [("submitted", "0.80", 1800, 1800, False), ("held", "1.20", 3600, 0, False)]
    assert body["more"] is False


def test_keys_with_their_spend_and_caps(api: TestClient, spec: Spec) -> None:
    body = get(api, spec, "/api/v1/keys")
    (key,) = body["keys"]
    # hold #9 was made with key k1: 144 frames, 1.20, settled
    assert (key["id"], key["tags"], key["spent"], key["held"], key["requests"]) == (
        KEY_ID,
        {"project": "alpha", "user": "dee"},
        "1.20",
        "0.00",
        1,
    )
    assert [c["cap"] for c in key["caps"]] == ["project=alpha total cap 10.00"]
    assert key["revoked_at"] is None


def test_activity_lists_the_overrun_and_the_reconciliation(api: TestClient, spec: Spec) -> None:
    body = get(api, spec, "/api/v1/activity")
    (overrun,) = body["overruns"]
    # #3: 0.60 held, fal billed 0.90: 0.30 over
    assert (overrun["amount"], overrun["spent"], overrun["overrun"]) == ("0.60", "0.90", "0.30")
    (adjustment,) = body["reconciliation"]["adjustments"]
    assert (adjustment["previous"], adjustment["amount"], adjustment["delta"]) == (
        "0.60",
        "0.90",
        "0.30",
    )
    assert body["reconciliation"]["last_source"] == "billing.csv"


def test_refusals_with_their_reason_and_counts(api: TestClient, spec: Spec) -> None:
    body = get(api, spec, "/api/v1/refusals")
    # dashboard_scene: bob's 0.80 at 17:45 (his week cap), the unknown endpoint at 17:50
    assert [(r["at"][11:16], r["reason"], r["cap"], r["amount"]) for r in body["refusals"]] == [
        ("17:50", "unknown_endpoint", None, "0.00"),
        ("17:45", "cap_exceeded", "user=bob week cap 1.20", "0.80"),
    ]
    assert {(c["endpoint"], c["cap"], c["refusals"]) for c in body["counts"]} == {
        ("fal-ai/magi/image-to-video", "user=bob week cap 1.20", 1),
        ("fal-ai/nope", None, 1),
    }
    one = get(api, spec, "/api/v1/refusals", limit=1)
    assert [r["reason"] for r in one["refusals"]] == ["unknown_endpoint"]
    before = get(api, spec, "/api/v1/refusals", since="2026-11-01", until="2026-11-23")
    assert (before["refusals"], before["counts"]) == ([], [])


def test_history_pages_by_cursor_without_gaps_or_repeats(api: TestClient, spec: Spec) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        body = get(api, spec, "/api/v1/history", **params)
        seen.extend(h["id"] for h in body["holds"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3  # nine holds: 4 + 4 + 1
    assert len(seen) == len(set(seen)) == 9
    settled = get(api, spec, "/api/v1/history", state="settled")
    # #1, #2, #3, #6, #9 were settled
    assert len(settled["holds"]) == 5


def test_history_cursor_keeps_holds_of_the_same_moment() -> None:
    from falbudget.ledger import BucketCharge

    ledger = MemoryLedger()
    for index in range(5):  # five holds reserved at the same moment
        ledger.reserve(
            hold_id=f"h{index}",
            endpoint="fal-ai/x",
            amount=1,
            charges=[BucketCharge("global|total", None)],
            now=NOW,
            expires_at=NOW + 60,
        )
    api = client(create_dashboard(Guard(ledger, clock=lambda: NOW)))
    first = api.get("/api/v1/history", params={"limit": 2}).json()
    second = api.get("/api/v1/history", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    third = api.get("/api/v1/history", params={"limit": 2, "cursor": second["next_cursor"]}).json()
    ids = [h["id"] for page in (first, second, third) for h in page["holds"]]
    assert sorted(ids) == ["h0", "h1", "h2", "h3", "h4"]
    assert third["next_cursor"] is None


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("/api/v1/report", {"since": "yesterday"}, "since='yesterday'"),
        ("/api/v1/report", {"since": "2026-11-23", "until": "2026-11-22"}, "since"),
        ("/api/v1/history", {"limit": "0"}, "limit=0"),
        ("/api/v1/history", {"limit": "ten"}, "limit='ten'"),
        ("/api/v1/history", {"state": "lost"}, "state='lost'"),
        ("/api/v1/history", {"cursor": "not-a-cursor"}, "cursor="),
        # base64 of {"at": "0x1p+2000", "ids": []}: a time no float holds
        ("/api/v1/history", {"cursor": "eyJhdCI6ICIweDFwKzIwMDAiLCAiaWRzIjogW119"}, "cursor="),
        # base64 of {"at": "0x1p+1", "ids": {"a": 1}}: ids not a list
        ("/api/v1/history", {"cursor": "eyJhdCI6ICIweDFwKzEiLCAiaWRzIjogeyJhIjogMX19"}, "cursor="),
        ("/api/v1/refusals", {"limit": "5000"}, "limit=5000"),
        # digits str.isdigit takes and int refuses: 400, not 500
        ("/api/v1/history", {"limit": "\u00b2"}, "limit='\u00b2'"),
        ("/api/v1/refusals", {"limit": "\u00b9"}, "limit='\u00b9'"),
    ],
)
def test_bad_queries_are_400_naming_the_field(
    api: TestClient, spec: Spec, path: str, params: dict[str, str], named: str
) -> None:
    answer = api.get(path, params=params)
    assert answer.status_code == 400
    spec.check(path, answer.json(), 400)
    assert named in answer.json()["error"]
    assert answer.json()["error"].count("\n") == 0


def test_a_ledger_that_cannot_be_read_is_a_documented_503(spec: Spec, tmp_path: Path) -> None:
    from falbudget.ledger.sqlite import SQLiteLedger

    broken = SQLiteLedger(tmp_path / "closed.db")
    broken.close()  # every read now raises LedgerError
    from falbudget.guard.caps import Cap

    guard = Guard(broken, [Cap("1.00")])
    app = create_dashboard(guard, DashboardSettings(audit_log=str(tmp_path / "a")))
    api = client(app, raise_server_exceptions=False)
    for path in spec.document["paths"]:
        if path.endswith("openapi.json"):
            continue
        answer = api.get(path)
        assert answer.status_code == 503, path
        spec.check(path, answer.json(), 503)
        assert "the ledger is closed" in answer.json()["error"]
    assert api.get("/").status_code == 503  # a page: the same, as HTML


def test_an_empty_ledger_renders_with_windows_in_each_caps_zone(spec: Spec, tmp_path: Path) -> None:
    """No hold at all: every page and answer is there, money as strings, never a float; each
    cap's window and reset in the cap's own zone."""
    from falbudget.guard.caps import Cap
    from test_report import Clock

    caps = [
        Cap("5.00", window="month", tz="Asia/Tokyo"),
        Cap("1.00", window="day", tz="America/New_York"),
    ]
    guard = Guard(MemoryLedger(), caps, clock=Clock(NOW))
    api = client(create_dashboard(guard, DashboardSettings(audit_log=str(tmp_path / "a"))))
    for page in ("/", "/spend", "/activity", "/keys", "/api", "/actions/release-expired"):
        assert api.get(page).status_code == 200, page

    def no_float(value: Any, where: str) -> None:
        assert not isinstance(value, float), where
        if isinstance(value, dict):
            for key, item in value.items():
                no_float(item, f"{where}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                no_float(item, f"{where}[{index}]")

    for path in spec.document["paths"]:
        if not path.endswith("openapi.json"):
            no_float(get(api, spec, path), path)
    tokyo, new_york = get(api, spec, "/api/v1/status")["caps"]
    # now 2026-11-23 18:00 UTC = 11-24 03:00 in Tokyo (+09:00): November's window there
    assert (tokyo["window_start"], tokyo["resets_at"]) == (
        "2026-11-01T00:00:00+09:00",
        "2026-12-01T00:00:00+09:00",
    )
    # = 11-23 13:00 in New York (-05:00, winter time): that day
    assert (new_york["window_start"], new_york["resets_at"]) == (
        "2026-11-23T00:00:00-05:00",
        "2026-11-24T00:00:00-05:00",
    )
    assert (tokyo["spent"], tokyo["remaining"]) == ("0.00", "5.00")


def test_pages_show_the_figures_to_the_cent(api: TestClient) -> None:
    caps = api.get("/").text
    assert caps.index("user=bob week cap 1.20") < caps.index("global month cap 10.00")
    assert '<dd class="remaining">1.70</dd>' in caps  # month: 10.00 - 6.30 - 2.00
    # the gauges' figures are decimal too: beta 0.90 spent + 0.80 held is 1.70 (float: 1.7000...2)
    assert 'max="10.00" low="8.000" high="9.9000" optimum="0"\n value="1.70"' in caps
    spend = api.get("/spend").text
    assert '<strong class="total-spent">6.30</strong>' in spend
    # a chart per cap of the report's scope (all): the global day and month caps
    assert spend.count("<svg") == 2
    assert spend.count('class="limit"') == 2
    activity = api.get("/activity").text
    assert '<td class="overrun">0.30</td>' in activity
    assert '<td class="t reason">cap_exceeded</td>' in activity
    keys = api.get("/keys").text
    assert '<td class="spent">1.20</td>' in keys
    for page in ("/", "/spend", "/activity", "/keys", "/api"):
        assert "http://" not in api.get(page).text.replace("http://www.w3.org/2000/svg", "")


def test_the_range_picker_changes_the_chart(api: TestClient) -> None:
    month = api.get("/spend", params={"since": "2026-11-01", "until": "2026-11-24"}).text
    week = api.get("/spend", params={"since": "2026-11-20", "until": "2026-11-24"}).text
    assert 'data-days="23"' in month  # November 1 to 23
    assert 'data-days="4"' in week  # November 20 to 23
    assert 'data-days="23"' not in week


def test_every_value_from_the_ledger_is_escaped(tmp_path: Path) -> None:
    """Tags, endpoints, key tags, adjustment reasons and sources, and cap labels (in the SVG
    too) come from callers: shown as text, never as markup."""
    from falbudget.guard.caps import Cap
    from test_report import MAGI, REQ, Clock

    evil = '<script>alert("x")</script>'
    clock = Clock(NOW)
    ledger = MemoryLedger()
    guard = Guard(ledger, [Cap("1.00", scope=f"user={evil}")], clock=clock, hold_ttl=3600)
    with guard.reserve(MAGI, REQ, user=evil, project=evil, key=evil):
        pass  # 0.80 spent of the 1.00 cap
    with contextlib.suppress(FalbudgetError):
        guard.reserve(MAGI, REQ, user=evil).acquire()  # refused: over the cap
    with contextlib.suppress(FalbudgetError):
        guard.reserve(f"fal-ai/{evil}", {}, user=evil).acquire()  # refused: unknown endpoint
    (hold,) = ledger.holds()
    ledger.adjust(hold.id, 900_000, now=NOW, reason=evil, source=evil)
    ledger.create_key("k2", "0" * 64, {"user": evil}, now=NOW)
    settings = DashboardSettings(admin_token="adm1n", audit_log=str(tmp_path / "audit.jsonl"))
    api = client(create_dashboard(guard, settings))
    pages = ["/", "/spend", "/activity", "/keys", "/keys/k2/revoke", "/actions/release-expired"]
    for path in pages:
        answer = api.get(path)
        assert answer.status_code == 200, path
        assert "<script" not in answer.text, path
    assert "&lt;script&gt;" in api.get("/").text  # the cap label, shown
    activity = api.get("/activity").text
    assert activity.count("&lt;script&gt;") >= 4  # endpoint, tags, reason, source
    assert "user=&lt;script&gt;" in api.get("/keys").text
    assert "&lt;script&gt;" in api.get("/spend").text  # chart titles and breakdowns
    assert api.get("/api/v1/keys").json()["keys"][0]["tags"] == {"user": evil}  # JSON: as is


# -- access -------------------------------------------------------------------------------------


def test_without_a_token_only_loopback_clients_are_answered(scene: tuple[Guard, Any]) -> None:
    app = create_dashboard(scene[0])
    assert client(app, LOOPBACK).get("/api/v1/status").status_code == 200
    far = client(app, ELSEWHERE).get("/api/v1/status")
    assert far.status_code == 403
    assert "loopback" in far.text


def test_loopback_in_each_of_its_forms_and_no_header_makes_a_client_local(
    scene: tuple[Guard, Any],
) -> None:
    app = create_dashboard(scene[0])
    # IPv6 loopback, and 127.0.0.1 as a dual-stack socket shows it (IPv4-mapped)
    for host in ("::1", "::ffff:127.0.0.1", "127.0.0.2"):
        assert client(app, (host, 50000)).get("/api/v1/status").status_code == 200, host
    for host in ("::ffff:192.0.2.7", "2001:db8::1"):
        assert client(app, (host, 50000)).get("/api/v1/status").status_code == 403, host
    # a local client with another site's name in Host: a page of that site after DNS rebinding
    api = client(app)
    for name in ("localhost:8788", "127.0.0.1", "[::1]:8788", "app.localhost", "LOCALHOST."):
        assert api.get("/api/v1/status", headers={"host": name}).status_code == 200, name
    for name in ("evil.example:8788", "evil.example", "127.0.0.1.evil.example", "[::2]:80"):
        answer = api.get("/api/v1/status", headers={"host": name})
        assert answer.status_code == 403, name
        assert "is not allowed without a token" in answer.text
    # with a token, the token decides, whatever the name
    tokened = client(create_dashboard(scene[0], DashboardSettings(token="s3cret")))
    answer = tokened.get("/", headers={"host": "dash.example", "authorization": "Bearer s3cret"})
    assert answer.status_code == 200
    # a remote client claiming to be local in X-Forwarded-For is still remote
    claim = {"x-forwarded-for": "127.0.0.1", "x-real-ip": "127.0.0.1", "forwarded": "for=::1"}
    assert client(app, ELSEWHERE).get("/", headers=claim).status_code == 403


def test_with_a_token_every_request_needs_it(scene: tuple[Guard, Any]) -> None:
    app = create_dashboard(scene[0], DashboardSettings(token="s3cret"))
    far = client(app, ELSEWHERE)
    assert far.get("/").status_code == 401
    assert far.get("/").headers["www-authenticate"].startswith("Basic")
    assert far.get("/", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert far.get("/", headers={"authorization": "Bearer s3cret"}).status_code == 200
    assert far.get("/static/dashboard.css", auth=("anyone", "s3cret")).status_code == 200
    assert far.get("/static/dashboard.css", auth=("anyone", "nope")).status_code == 401
    # the token applies on loopback too
    assert client(app, LOOPBACK).get("/api/v1/status").status_code == 401


def test_write_actions_need_the_admin_token_and_a_confirmation(
    scene: tuple[Guard, Any], tmp_path: Path
) -> None:
    guard, clock = scene
    audit = tmp_path / "audit.jsonl"
    app = create_dashboard(guard, DashboardSettings(admin_token="adm1n", audit_log=str(audit)))
    api = client(app)
    clock.now = utc(2026, 11, 23, 19)  # #7 expired at 18:00, #8 at 18:30
    assert (
        "2 hold(s) shown in flight are past their expiry"
        in api.get("/actions/release-expired").text
    )
    assert api.post("/actions/release-expired", data={"confirm": "yes"}).status_code == 403
    wrong = api.post("/actions/release-expired", data={"admin_token": "x", "confirm": "yes"})
    assert wrong.status_code == 403
    unconfirmed = api.post("/actions/release-expired", data={"admin_token": "adm1n"})
    assert unconfirmed.status_code == 400
    assert len(guard.ledger.holds(states=["held", "submitted"])) == 2  # nothing changed
    done = api.post("/actions/release-expired", data={"admin_token": "adm1n", "confirm": "yes"})
    assert done.status_code == 200
    assert "Closed 2 hold(s)" in done.text
    # #7 was never sent: released; #8 was submitted: expired, counted as spent
    assert sorted(h.state for h in guard.ledger.holds(states=["released", "expired"])) == [
        "expired",
        "expired",
        "released",
        "released",
    ]
    asked = api.get(f"/keys/{KEY_ID}/revoke", params={"admin_token": "adm1n", "confirm": "yes"})
    assert asked.status_code == 200
    assert guard.ledger.api_keys()[0].revoked_at is None  # a GET only asks for confirmation
    revoked = api.post(f"/keys/{KEY_ID}/revoke", data={"admin_token": "adm1n", "confirm": "yes"})
    assert revoked.status_code == 200
    assert guard.ledger.api_keys()[0].revoked_at == utc(2026, 11, 23, 19)
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    # every refusal is recorded, whatever its reason, with who asked
    assert [(e["action"], e["outcome"], e.get("reason")) for e in entries] == [
        ("release-expired", "refused", "the admin token is not right"),
        ("release-expired", "refused", "the admin token is not right"),
        ("release-expired", "refused", "confirm=yes is required: tick the box"),
        ("release-expired", "done", None),
        ("revoke-key", "done", None),
    ]
    assert {e["client"] for e in entries} == {"127.0.0.1"}
    assert entries[4]["key"] == KEY_ID
    assert api.put("/actions/release-expired").status_code == 405


def test_a_write_action_that_cannot_be_done_is_an_answer_and_a_record(
    scene: tuple[Guard, Any], tmp_path: Path
) -> None:
    guard, _ = scene
    audit = tmp_path / "audit.jsonl"
    app = create_dashboard(guard, DashboardSettings(admin_token="adm1n", audit_log=str(audit)))
    api = client(app, raise_server_exceptions=False)
    big = api.post(
        "/actions/release-expired",
        data={"admin_token": "adm1n", "confirm": "yes", "pad": "x" * 5000},
    )
    assert big.status_code == 413
    assert "at most 4096 bytes" in big.text
    gone = api.post("/keys/nope/revoke", data={"admin_token": "adm1n", "confirm": "yes"})
    assert gone.status_code == 404
    from falbudget.ledger.sqlite import SQLiteLedger

    broken = SQLiteLedger(tmp_path / "closed.db")
    broken.close()  # every read or write now raises LedgerError
    app = create_dashboard(
        Guard(broken), DashboardSettings(admin_token="adm1n", audit_log=str(audit))
    )
    failed = client(app, raise_server_exceptions=False).post(
        "/actions/release-expired", data={"admin_token": "adm1n", "confirm": "yes"}
    )
    assert failed.status_code == 503
    assert "the ledger is closed" in failed.text
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(e["action"], e["outcome"], e.get("key")) for e in entries] == [
        ("release-expired", "refused", None),
        ("revoke-key", "refused", "nope"),
        ("release-expired", "failed", None),
    ]


def test_no_admin_token_no_write_action(scene: tuple[Guard, Any], tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    api = client(create_dashboard(scene[0], DashboardSettings(audit_log=str(audit))))
    assert "Write actions are off" in api.get("/actions/release-expired").text
    answer = api.post("/actions/release-expired", data={"admin_token": "", "confirm": "yes"})
    assert answer.status_code == 403
    assert scene[0].ledger.holds(states=["released"]) != []  # #4 only, released before
    assert len(scene[0].ledger.holds(states=["held", "submitted"])) == 2
    (entry,) = [json.loads(line) for line in audit.read_text().splitlines()]
    assert (entry["action"], entry["outcome"]) == ("release-expired", "refused")
    assert entry["reason"].startswith("write actions are off")


# -- the command line and the proxy --------------------------------------------------------------


def test_serve_refuses_another_address_without_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FALBUDGET_DASHBOARD_TOKEN", raising=False)
    monkeypatch.setenv("FALBUDGET_LEDGER", "sqlite:///" + str(tmp_path / "none.db"))
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--host='0.0.0.0' is not allowed without a token" in err
    assert not (tmp_path / "none.db").exists()  # refused before the ledger is opened
    assert main(["serve", "--port", "99999"]) == 2
    assert "--port='99999' is not allowed" in capsys.readouterr().err
    assert main(["serve"]) == 2  # a read-only dashboard never creates a ledger
    assert "none.db" in capsys.readouterr().err


def test_serve_refuses_a_memory_ledger(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A memory ledger is empty in a new process: serving it would show nothing, forever."""
    monkeypatch.delenv("FALBUDGET_DASHBOARD_TOKEN", raising=False)
    monkeypatch.delenv("FALBUDGET_CONFIG", raising=False)
    assert main(["serve", "--port", "0", "--ledger", "memory://"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "ledger memory:// is not allowed for falbudget serve" in err


@pytest.mark.parametrize("command", ["serve", "proxy"])
def test_a_port_another_server_holds_is_exit_2_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    """uvicorn exits 3 with a log line when its port is taken; the commands say so first, as
    a usage error, before opening any ledger."""
    import socket

    monkeypatch.delenv("FALBUDGET_DASHBOARD_TOKEN", raising=False)
    monkeypatch.delenv("FALBUDGET_CONFIG", raising=False)
    monkeypatch.setenv("FAL_KEY", "test-key")
    ledger = tmp_path / "none.db"
    monkeypatch.setenv("FALBUDGET_LEDGER", f"sqlite:///{ledger}")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code = main([command, "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1
    assert f"--port={port} on 127.0.0.1 is not available: Address already in use" in err
    assert not ledger.exists()


@pytest.mark.parametrize("admin", [None, "adm1n"])
def test_serve_never_creates_nor_upgrades_a_ledger(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    admin: str | None,
) -> None:
    """A mistyped ledger path is exit 2 and no file, even with an admin token (the write
    actions need a writable ledger, not a new one); a ledger at an old schema version is
    exit 2 naming the migration, and stays at its version."""
    import sqlite3

    from falbudget.ledger.sqlite import SQLiteLedger

    monkeypatch.delenv("FALBUDGET_DASHBOARD_TOKEN", raising=False)
    if admin is None:
        monkeypatch.delenv("FALBUDGET_DASHBOARD_ADMIN_TOKEN", raising=False)
    else:
        monkeypatch.setenv("FALBUDGET_DASHBOARD_ADMIN_TOKEN", admin)
    import uvicorn

    served: list[object] = []  # a serve that got this far would block: record it instead
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    missing = tmp_path / "typo" / "ledger.db"
    config = tmp_path / "falbudget.yaml"
    config.write_text(f"ledger: sqlite:///{missing}\n")
    for options in (["--config", str(config)], ["--ledger", f"sqlite:///{missing}"]):
        monkeypatch.delenv("FALBUDGET_CONFIG", raising=False)
        assert main(["serve", "--port", "0", *options]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"no ledger at {missing}" in err
        assert list(tmp_path.iterdir()) == [config]  # nothing created, not even the folder
    old = tmp_path / "old.db"
    SQLiteLedger(old).close()
    with contextlib.closing(sqlite3.connect(old)) as conn, conn:
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    assert main(["serve", "--port", "0", "--ledger", f"sqlite:///{old}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "schema is at version 1" in err and "falbudget ledger migrate" in err
    with contextlib.closing(sqlite3.connect(old)) as conn:
        assert conn.execute("SELECT value FROM meta").fetchone() == ("1",)
    assert served == []


def test_a_bad_dashboard_section_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "falbudget.yaml"
    config.write_text(f"ledger: sqlite:///{tmp_path}/l.db\ndashboard:\n  tz: Mars/Olympus\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert "dashboard.tz='Mars/Olympus' is not allowed" in capsys.readouterr().err
    config.write_text(f"ledger: sqlite:///{tmp_path}/l.db\ndashboard:\n  colour: red\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert "dashboard.colour: unknown key" in capsys.readouterr().err


def test_the_proxy_mounts_the_dashboard_when_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from falbudget.proxy.app import load

    monkeypatch.setenv("FAL_KEY", "test-key")
    config = tmp_path / "falbudget.yaml"
    base = f"ledger: sqlite:///{tmp_path}/l.db\ncaps:\n  - {{limit: '5.00'}}\n"
    config.write_text(base)
    off = load(str(config))
    with client(off.app()) as api:
        assert api.get("/dashboard/api/v1/status").status_code == 404
    off.guard.close()
    config.write_text(base + "dashboard:\n  in_proxy: true\n")
    on = load(str(config))
    with client(on.app()) as api:
        status = api.get("/dashboard/api/v1/status").json()
        assert [c["cap"] for c in status["caps"]] == ["global total cap 5.00"]
        page = api.get("/dashboard/").text
        assert 'href="/dashboard/static/dashboard.css"' in page
        assert api.get("/dashboard/static/dashboard.css").status_code == 200
    with client(on.app(), ELSEWHERE) as api:
        assert api.get("/dashboard/").status_code == 403  # no token: loopback only
    on.guard.close()


def test_the_proxy_mount_judges_the_client_behind_a_trusted_reverse_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a reverse proxy on this machine (proxy.trusted_proxies), every peer is 127.0.0.1:
    the dashboard must judge the client the reverse proxy names, as the proxy does."""
    from falbudget.proxy.app import load

    monkeypatch.setenv("FAL_KEY", "test-key")
    monkeypatch.delenv("FALBUDGET_DASHBOARD_TOKEN", raising=False)
    config = tmp_path / "falbudget.yaml"
    config.write_text(
        f"ledger: sqlite:///{tmp_path}/l.db\nproxy:\n  trusted_proxies: ['127.0.0.0/8']\n"
        "dashboard:\n  in_proxy: true\n"
    )
    loaded = load(str(config))
    with client(loaded.app(), LOOPBACK) as local:
        assert local.get("/dashboard/").status_code == 200  # no header: the peer itself
        far = {"x-forwarded-for": "192.0.2.7"}
        assert local.get("/dashboard/", headers=far).status_code == 403
        assert local.get("/dashboard/api/v1/status", headers=far).status_code == 403
        near = {"x-forwarded-for": "127.0.0.1"}  # a browser on the proxy's machine
        assert local.get("/dashboard/", headers=near).status_code == 200
    with client(loaded.app(), ELSEWHERE) as remote:  # not a trusted proxy: its header ignored
        assert (
            remote.get("/dashboard/", headers={"x-forwarded-for": "127.0.0.1"}).status_code == 403
        )
    loaded.guard.close()


def test_one_command_serves_the_ledger(tmp_path: Path) -> None:
    """`falbudget serve --config FILE` in a process of its own answers over HTTP with the
    figures of its ledger (readiness read from its log, not timed)."""
    import os
    import socket
    import subprocess
    import sys
    import threading
    import urllib.request

    from falbudget.ledger import open_ledger

    url = "sqlite:///" + str(tmp_path / "ledger.db")
    ledger = open_ledger(url)
    build(ledger)
    ledger.close()
    config = tmp_path / "falbudget.yaml"
    config.write_text(
        f"ledger: {url}\ncaps:\n  - {{limit: '10.00', window: month}}\n"
        "dashboard:\n  tz: Europe/Paris\n"
    )
    with socket.socket() as probe:  # a free port (uvicorn binds it again)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "FALBUDGET_NOW": "2026-11-23T18:00:00Z"}
    for name in ("FALBUDGET_DASHBOARD_TOKEN", "FALBUDGET_DASHBOARD_ADMIN_TOKEN"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "falbudget", "serve", "--config", str(config), "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "Uvicorn running on" in line:  # logged once the socket listens
            break
    stderr = process.stderr
    threading.Thread(target=lambda: [None for _ in stderr], daemon=True).start()
    try:
        assert any("Uvicorn running on" in line for line in lines), "".join(lines)
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(f"http://127.0.0.1:{port}/api/v1/status") as answer:
            body = json.loads(answer.read())
        with direct.open(f"http://127.0.0.1:{port}/metrics") as answer:
            exposition = answer.read().decode()
    finally:
        process.terminate()
        process.wait(60)
    (cap,) = body["caps"]
    # dashboard_scene: November spent 6.30, held 2.00 -> 10.00 - 8.30 = 1.70 left
    assert (cap["spent"], cap["held"], cap["remaining"]) == ("6.30", "2.00", "1.70")
    assert body["now"] == "2026-11-23T19:00:00+01:00"  # 18:00 UTC in the dashboard's zone
    # the same figures for Prometheus, from the same process (docs/metrics.md)
    from prometheus_client.parser import text_string_to_metric_families

    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name.startswith("falbudget_cap_")
    }
    assert values == {
        "falbudget_cap_spent_usd": 6.30,
        "falbudget_cap_held_usd": 2.00,
        "falbudget_cap_remaining_usd": 1.70,
        "falbudget_cap_limit_usd": 10.00,
    }
