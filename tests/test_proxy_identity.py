"""Who is spending, through `falbudget proxy`: JWTs the app issues (HS256 with a shared secret,
RS256 with the app's public key), their claims mapped to tags so that per-user caps apply; every
bad token is a 401 that never reaches fal. Time claims are read against the guard's clock.

MAGI defaults = 0.80 (DESIGN.md section 1).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fakefal import FakeFal
from falbudget import Cap, ConfigurationError, Guard
from falbudget.proxy.app import create_app
from proxyserver import FAL_KEY, QUEUE, ProxyServer, settings_for, target_headers

MAGI = "fal-ai/magi/image-to-video"
ARGS = {"prompt": "a fox", "image_url": "https://example.invalid/fox.png"}
NOW = 1_790_000_000  # the guard's clock; tokens expire relative to it, not to today
SECRET = "s" * 40
SUBMIT = f"{QUEUE}/{MAGI}"


@pytest.fixture
def rsa_key(tmp_path: Path) -> rsa.RSAPrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "app.pem").write_bytes(pem)
    return key


@pytest.fixture
def serve(fake_fal: FakeFal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("APP_JWT_SECRET", SECRET)
    servers: list[ProxyServer] = []

    def start(guard: Guard, jwt_section: dict[str, Any], **section: Any) -> ProxyServer:
        settings = settings_for(fake_fal, anonymous=False, jwt=jwt_section, **section)
        server = ProxyServer(guard, settings, base_dir=str(tmp_path)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def guard_with(*caps: Cap) -> Guard:
    return Guard("memory://", list(caps), clock=lambda: float(NOW))


HS = {"algorithm": "HS256", "secret_env": "APP_JWT_SECRET", "claims": {"sub": "user"}}
RS = {
    "algorithm": "RS256",
    "public_key_file": "app.pem",
    "claims": {"sub": "user", "org": "project"},
}


def submit(server: ProxyServer, token: str | None, scheme: str = "Bearer") -> httpx.Response:
    headers = {} if token is None else {"authorization": f"{scheme} {token}"}
    return httpx.post(server.url, content=json.dumps(ARGS), headers=target_headers(SUBMIT, headers))


def hs(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode({"exp": NOW + 600, **claims}, secret, algorithm="HS256")


def test_hs256_claims_become_tags_and_per_user_caps_apply(serve: Any, fake_fal: FakeFal) -> None:
    guard = guard_with(Cap("1.60", scope="user"))
    server = serve(guard, HS)
    ann = hs({"sub": "ann"})
    assert submit(server, ann).status_code == 200
    assert submit(server, ann).status_code == 200
    refused = submit(server, ann)
    assert refused.status_code == 402 and refused.json()["cap"] == "user=ann total cap 1.60"
    assert submit(server, hs({"sub": "bob"})).status_code == 200
    assert fake_fal.count("submit") == 3
    assert sorted(h.tags["user"] for h in guard.ledger.holds()) == ["ann", "ann", "bob"]
    sent = next(r for r in fake_fal.requests if r.kind == "submit")
    assert sent.headers["authorization"].startswith("Key ")  # the app's token stays here


def test_tokens_and_keys_never_reach_logs_or_answers(
    serve: Any, fake_fal: FakeFal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="falbudget")
    server = serve(guard_with(Cap("0.80")), HS)
    token = hs({"sub": "ann"})
    answers = [submit(server, token), submit(server, token), submit(server, token + "x")]
    assert [a.status_code for a in answers] == [200, 402, 401]
    for answer in answers:
        assert token not in answer.text and FAL_KEY not in answer.text
        assert FAL_KEY not in str(answer.headers)
    assert token not in caplog.text and FAL_KEY not in caplog.text and SECRET not in caplog.text
    assert '"tags": {"ip": "127.0.0.1", "user": "ann"}' in caplog.text


def test_rs256_with_the_apps_public_key(
    serve: Any, fake_fal: FakeFal, rsa_key: rsa.RSAPrivateKey
) -> None:
    guard = guard_with(Cap("10.00", scope="project"))
    server = serve(guard, RS)
    token = jwt.encode({"sub": "ann", "org": "web", "exp": NOW + 60}, rsa_key, algorithm="RS256")
    assert submit(server, token).status_code == 200
    [hold] = guard.ledger.holds()
    assert (hold.tags["user"], hold.tags["project"]) == ("ann", "web")


@pytest.mark.parametrize(
    ("token", "says"),
    [
        (hs({"sub": "ann"}, secret="x" * 40), "not valid"),  # another secret
        (hs({"sub": "ann", "exp": NOW - 31}), "expired"),  # past exp + 30 s leeway
        (hs({"sub": "ann", "nbf": NOW + 31}), "not valid yet"),
        (jwt.encode({"sub": "ann"}, SECRET, algorithm="HS256"), "exp"),  # no exp
        (hs({"name": "ann"}), "'sub'"),  # the mapped claim is missing
        (hs({"sub": ""}), "'sub'"),
        (hs({"sub": True}), "Subject must be a string"),
        (jwt.encode({"sub": "ann", "exp": NOW + 60}, None, algorithm="none"), "not valid"),
        ("not-a-jwt", "not valid"),
    ],
)
def test_bad_tokens_are_401_and_never_reach_fal(
    serve: Any, fake_fal: FakeFal, token: str, says: str
) -> None:
    guard = guard_with(Cap("10.00"))
    server = serve(guard, HS)
    answer = submit(server, token)
    assert answer.status_code == 401
    assert says in answer.json()["detail"]
    assert token not in answer.text or token == "not-a-jwt"
    assert fake_fal.count() == 0 and guard.ledger.holds() == []


def test_a_token_within_the_leeway_is_accepted(serve: Any, fake_fal: FakeFal) -> None:
    server = serve(guard_with(Cap("10.00")), HS)
    assert submit(server, hs({"sub": "ann", "exp": NOW - 29})).status_code == 200


def test_no_token_and_other_schemes_are_401(serve: Any, fake_fal: FakeFal) -> None:
    server = serve(guard_with(Cap("10.00")), HS)
    assert submit(server, None).status_code == 401
    assert submit(server, "fal-key-of-someone", scheme="Key").status_code == 401
    assert fake_fal.count() == 0


def test_rs256_refuses_a_token_signed_with_its_public_key_as_an_hmac_secret(
    serve: Any, fake_fal: FakeFal, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    # algorithm confusion: only RS256 is accepted when RS256 is configured
    server = serve(guard_with(Cap("10.00")), RS)
    pem = (tmp_path / "app.pem").read_bytes()
    import base64
    import hmac
    from hashlib import sha256

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "ann", "org": "web", "exp": NOW + 60}).encode())
    signature = b64(hmac.new(pem, f"{header}.{body}".encode(), sha256).digest())
    answer = submit(server, f"{header}.{body}.{signature}")
    assert answer.status_code == 401
    assert fake_fal.count() == 0


@pytest.mark.parametrize(
    ("section", "env", "says"),
    [
        (HS, {"APP_JWT_SECRET": "short"}, "at least 32 characters"),
        ({**HS, "public_key_file": "app.pem"}, {}, "HS256 needs secret_env"),
        ({"algorithm": "RS256", "public_key_file": "missing.pem"}, {}, "cannot read"),
        ({"algorithm": "RS256"}, {}, "RS256 needs public_key_file"),
        ({"algorithm": "ES256", "secret_env": "X"}, {}, "proxy.jwt.algorithm"),
        ({**HS, "claims": {}}, {}, "map at least one claim"),
    ],
)
def test_jwt_configuration_errors_name_the_field(
    fake_fal: FakeFal,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    section: dict[str, Any],
    env: dict[str, str],
    says: str,
) -> None:
    monkeypatch.setenv("APP_JWT_SECRET", SECRET)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        settings = settings_for(fake_fal, jwt=section)
        create_app(guard_with(), settings, "k", base_dir=str(tmp_path), source="f.yaml")
    assert says in str(info.value)
