"""Ledger URLs never show a secret, however the URL spells it (issue 9, item 9).

libpq percent-decodes a query parameter's name (``pass%77ord=`` is ``password=``) and reads the
user information up to the first ``@`` before any ``/`` (``#`` and ``?`` in it are literal); the
scrubber reads the URL the same way. Expectations are written out by hand.
"""

from __future__ import annotations

import pytest

from falbudget.cli import main
from falbudget.errors import ConfigurationError, LedgerUnavailable
from falbudget.ledger import open_ledger
from falbudget.ledger._urls import is_secret_param, redact_url, url_secrets

# (url, shown, the secrets in it): the spellings libpq accepts for a password and its kin
SPELLINGS = [
    (
        "postgresql://u@h/db?pass%77ord=SECRET2",
        "postgresql://u@h/db?pass%77ord=***",
        ["SECRET2"],
    ),
    (
        "postgresql://u@h/db?%70%61%73%73%77%6F%72%64=SECRET2",
        "postgresql://u@h/db?%70%61%73%73%77%6F%72%64=***",
        ["SECRET2"],
    ),
    (
        "postgresql://u@h/db?schema=a&password=SECRET1",
        "postgresql://u@h/db?schema=a&password=***",
        ["SECRET1"],
    ),
    (
        "postgresql://u@h/db?sslpassword=SECRET3&sslmode=require",
        "postgresql://u@h/db?sslpassword=***&sslmode=require",
        ["SECRET3"],
    ),
    (
        "postgresql://u@h/db?ssl%70assword=SECRET3",
        "postgresql://u@h/db?ssl%70assword=***",
        ["SECRET3"],
    ),
    (
        "postgresql://u@h/db?passfile=/home/u/SECRETPASS&oauth_client_secret=SECRET5",
        "postgresql://u@h/db?passfile=***&oauth_client_secret=***",
        ["/home/u/SECRETPASS", "SECRET5"],
    ),
    (
        "postgresql://u@h/db?password=SECRET%26ONE",
        "postgresql://u@h/db?password=***",
        ["SECRET%26ONE", "SECRET&ONE"],
    ),
    ("postgresql://u:SECRET6@h/db", "postgresql://u:***@h/db", ["SECRET6"]),
    ("postgresql://u:SEC%40RET7@h/db", "postgresql://u:***@h/db", ["SEC%40RET7", "SEC@RET7"]),
    # libpq: '#' and '?' inside the user information are literal, part of the password
    ("postgresql://u:SEC#RET8@h/db", "postgresql://u:***@h/db", ["SEC#RET8"]),
    ("postgresql://u:SEC?RET=9@h/db", "postgresql://u:***@h/db", ["SEC?RET=9"]),
    # libpq: '#' in a query value is literal too
    ("postgresql://u@h/db?password=SEC#RET10", "postgresql://u@h/db?password=***", ["SEC#RET10"]),
    # a second user:password@ written into the host list
    (
        "postgresql://u:SECRET11@h1,v:SECRET12@h2/db",
        "postgresql://u:***@h2/db",
        ["SECRET11", "SECRET12"],
    ),
]


@pytest.mark.parametrize(("url", "shown", "secrets"), SPELLINGS)
def test_every_spelling_of_a_secret_is_redacted(url: str, shown: str, secrets: list[str]) -> None:
    assert redact_url(url) == shown
    found = url_secrets(url)
    for secret in secrets:
        assert any(secret in s for s in found), (secret, found)
        assert secret not in shown


@pytest.mark.parametrize(
    "name",
    ["password", "pass%77ord", "PASSWORD", "sslpassword", "passfile", "oauth_client_secret"],
)
def test_secret_parameter_names(name: str) -> None:
    assert is_secret_param(name)


@pytest.mark.parametrize("name", ["user", "host", "schema", "sslmode", "application_name"])
def test_other_parameters_are_shown(name: str) -> None:
    assert not is_secret_param(name)
    assert redact_url(f"postgresql://u@h/db?{name}=visible") == (
        f"postgresql://u@h/db?{name}=visible"
    )


@pytest.mark.parametrize(("url", "shown", "secrets"), SPELLINGS)
def test_an_unreachable_server_names_no_secret(url: str, shown: str, secrets: list[str]) -> None:
    """The PostgreSQL ledger's errors: the URL shown and libpq's text are both scrubbed."""
    pytest.importorskip("psycopg")
    target = url.replace("@h/", "@127.0.0.1:1/").replace("@h2/", "@127.0.0.1:1/")
    try:
        ledger = open_ledger(target)
    except ConfigurationError as exc:  # libpq refused the URL itself: no secret in that either
        message = str(exc)
    else:
        with pytest.raises((LedgerUnavailable, ConfigurationError)) as info:
            ledger.totals(["global|total"])
        ledger.close()
        message = str(info.value)
    for secret in secrets:
        assert secret not in message, message
    assert "***" in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@127.0.0.1:1/db?pass%77ord=SECRET2",
        "postgresql://u@127.0.0.1:1/db?sslpassword=SECRET3",
        "postgresql://u:SEC#RET8@127.0.0.1:1/db",
    ],
)
def test_the_cli_prints_one_line_without_the_secret(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("psycopg")
    assert main(["budget", "status", "--ledger", url]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "SECRET" not in err and "SEC#RET" not in err
    assert "***" in err
