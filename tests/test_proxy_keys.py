"""Virtual keys of `falbudget proxy`: the ledger stores a digest per key (memory, SQLite,
PostgreSQL), `falbudget keys` prints a key once, lists and revokes; a request with a key carries
its tags and key=ID, so per-user and per-key caps apply; a revoked or unknown key is a 401.

MAGI defaults = 0.80 (DESIGN.md section 1).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakefal import FakeFal
from falbudget import Cap, Guard, LedgerError
from falbudget.cli import main
from falbudget.errors import KeyNotFound
from falbudget.ledger import ApiKey, Ledger, open_ledger
from falbudget.proxy.keys import digest, new_key
from ledger_backends import BACKENDS, backend_params, make_ledger_factory
from proxyserver import QUEUE, ProxyServer, settings_for, target_headers

MAGI = "fal-ai/magi/image-to-video"
ARGS = {"prompt": "a fox", "image_url": "https://example.invalid/fox.png"}
NOW = 1_790_000_000.0
D1, D2 = "a" * 64, "b" * 64


@pytest.fixture(params=backend_params(BACKENDS))
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    return make_ledger_factory(request.param, tmp_path)()


# -- the ledger: every backend ------------------------------------------------------------------


def test_keys_are_recorded_found_by_digest_listed_and_revoked(ledger: Ledger) -> None:
    ann = ledger.create_key("k1", D1, {"user": "ann", "project": "web"}, now=NOW)
    assert ann == ApiKey("k1", D1, {"user": "ann", "project": "web"}, NOW, None)
    ledger.create_key("k2", D2, {"user": "bob"}, now=NOW + 1)
    assert ledger.find_key(D1) == ann
    assert ledger.find_key("c" * 64) is None
    assert [k.id for k in ledger.api_keys()] == ["k1", "k2"]
    revoked = ledger.revoke_key("k1", now=NOW + 10)
    assert revoked.revoked_at == NOW + 10
    assert ledger.revoke_key("k1", now=NOW + 20).revoked_at == NOW + 10  # first time kept
    found = ledger.find_key(D1)
    assert found is not None and found.revoked_at == NOW + 10
    with pytest.raises(KeyNotFound, match="'nope'"):
        ledger.revoke_key("nope", now=NOW)


def test_an_id_or_digest_is_recorded_once(ledger: Ledger) -> None:
    ledger.create_key("k1", D1, {"user": "ann"}, now=NOW)
    for key_id, key_digest in (("k1", D2), ("k9", D1)):
        with pytest.raises(LedgerError, match="already recorded"):
            ledger.create_key(key_id, key_digest, {"user": "x"}, now=NOW)
    assert [k.id for k in ledger.api_keys()] == ["k1"]


@pytest.mark.parametrize(
    ("key_id", "key_digest", "tags", "says"),
    [
        ("k-1", D1, {"u": "a"}, "letters or digits"),
        ("k1", "A" * 64, {"u": "a"}, "64 lower-case hex"),
        ("k1", D1[:10], {"u": "a"}, "64 lower-case hex"),
        ("k1", D1, {"u": ""}, "non-empty strings"),
    ],
)
def test_bad_key_fields_are_refused(
    ledger: Ledger, key_id: str, key_digest: str, tags: dict[str, str], says: str
) -> None:
    with pytest.raises(LedgerError, match=says):
        ledger.create_key(key_id, key_digest, tags, now=NOW)
    assert ledger.api_keys() == []


def test_a_sqlite_ledger_holds_the_digest_never_the_key(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}")
    key_id, key = new_key()
    ledger.create_key(key_id, digest(key), {"user": "ann"}, now=NOW)
    ledger.close()
    raw = path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("ledger.db-*"))
    assert key.encode() not in raw
    assert key.split("_", 2)[2].encode() not in raw
    assert digest(key) == hashlib.sha256(key.encode()).hexdigest()


# -- the CLI ------------------------------------------------------------------------------------


def test_keys_create_prints_the_key_once_list_and_revoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    assert (
        main(["keys", "create", "--tag", "user=ann", "--tag", "project=web", "--ledger", url]) == 0
    )
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("fbk_") and out.count("\n") == 1
    key_id = key.split("_")[1]
    assert err == f"falbudget: key {key_id} (user=ann, project=web): shown once, store it now\n"
    assert main(["keys", "list", "--ledger", url, "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["id"], row["tags"], row["revoked_at"]) == (
        key_id,
        {"user": "ann", "project": "web"},
        None,
    )
    assert main(["keys", "list", "--ledger", url]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "project=web, user=ann" in listed and key not in listed
    assert main(["keys", "revoke", key_id, "--ledger", url]) == 0
    assert capsys.readouterr().out.startswith(f"key {key_id} revoked at ")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["keys", "create"], "at least one --tag"),
        (["keys", "create", "--tag", "user"], "--tag='user' is not allowed"),
        (["keys", "create", "--tag", "ip=1.2.3.4"], "sets endpoint, ip, key itself"),
        (["keys", "create", "--tag", "user=a", "--tag", "user=b"], "given twice"),
        (["keys", "revoke", "nope"], "no key has id 'nope'"),
        (["keys"], "a command is required"),
    ],
)
def test_keys_cli_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    assert main([*argv, "--ledger", url] if len(argv) > 1 else argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err


# -- through the proxy --------------------------------------------------------------------------


@pytest.fixture
def serve(fake_fal: FakeFal) -> Iterator[Any]:
    servers: list[ProxyServer] = []

    def start(guard: Guard) -> ProxyServer:
        server = ProxyServer(guard, settings_for(fake_fal, anonymous=False)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def submit(server: ProxyServer, key: str) -> httpx.Response:
    return httpx.post(
        server.url,
        content=json.dumps(ARGS),
        headers=target_headers(f"{QUEUE}/{MAGI}", {"authorization": f"Bearer {key}"}),
    )


def make_key(ledger: Ledger, **tags: str) -> tuple[str, str]:
    key_id, key = new_key()
    ledger.create_key(key_id, digest(key), tags, now=NOW)
    return key_id, key


def test_a_key_carries_its_tags_and_caps_per_user_and_per_key_apply(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    guard = Guard(ledger, [Cap("1.60", scope="user"), Cap("0.80", scope="key")], clock=lambda: NOW)
    ann_id, ann = make_key(ledger, user="ann", project="web")
    ann2_id, ann2 = make_key(ledger, user="ann")
    server = serve(guard)
    assert submit(server, ann).status_code == 200
    refused = submit(server, ann)  # this key's 0.80 is spent
    assert refused.status_code == 402 and refused.json()["cap"] == f"key={ann_id} total cap 0.80"
    assert submit(server, ann2).status_code == 200  # another key of ann: 1.60 for the user
    _, third = make_key(ledger, user="ann")
    refused = submit(server, third)
    assert refused.status_code == 402 and refused.json()["cap"] == "user=ann total cap 1.60"
    assert fake_fal.count("submit") == 2
    tags = sorted((h.tags["key"], h.tags["user"]) for h in guard.ledger.holds())
    assert tags == sorted([(ann_id, "ann"), (ann2_id, "ann")])


def test_revoked_and_unknown_keys_are_401(serve: Any, fake_fal: FakeFal, ledger: Ledger) -> None:
    guard = Guard(ledger, [Cap("10.00")], clock=lambda: NOW)
    key_id, key = make_key(ledger, user="ann")
    server = serve(guard)
    assert submit(server, key).status_code == 200
    ledger.revoke_key(key_id, now=NOW)
    answer = submit(server, key)
    assert answer.status_code == 401 and "revoked" in answer.json()["detail"]
    forged = key[:-4] + "AAAA"
    assert submit(server, forged).json()["detail"] == "unknown key"
    assert fake_fal.count("submit") == 1
