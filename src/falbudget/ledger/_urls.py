"""Ledger URLs as they may be shown: in errors, logs and the CLI's output.

The URL is read as libpq reads it, since that is what decides what the password is: the user
information ends at the first ``@`` before any ``/`` (``?`` and ``#`` in it are literal), and a
query parameter's name and value are percent-decoded (``pass%77ord=`` is ``password=``). A
parameter is secret when its decoded name, in any case, contains ``pass`` or ``secret``
(``password``, ``sslpassword``, ``passfile``, ``oauth_client_secret``).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_SECRET_WORDS = ("pass", "secret")
_QUERY_ITEM = re.compile(r"([?&])([^&=?]*)=([^&]*)")


def is_secret_param(name: str) -> bool:
    """Whether a query parameter named ``name`` (as written, percent-escapes and all) holds a
    secret: its decoded name contains ``pass`` or ``secret``, in any case."""
    decoded = unquote(name).lower()
    return any(word in decoded for word in _SECRET_WORDS)


def _userinfo(rest: str) -> tuple[str, str]:
    """(user information, the rest after its ``@``): everything before the last ``@`` that comes
    before the first ``/`` (libpq stops at the first ``@``; the last one also covers a second
    ``user:password@`` written into a host list). ('', rest) when there is none."""
    head = rest.split("/", 1)[0]
    userinfo, at, _ = head.rpartition("@")
    return (userinfo, rest[len(userinfo) + 1 :]) if at else ("", rest)


def redact_url(url: str) -> str:
    """``url`` with its secrets replaced by ``***``: the password of ``user:password@`` and the
    value of every secret query parameter (:func:`is_secret_param`), however it is spelt."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url

    def hide(match: re.Match[str]) -> str:
        sep_, name, value = match.groups()
        return f"{sep_}{name}={'***' if is_secret_param(name) else value}"

    userinfo, hosts = _userinfo(rest)
    rest = _QUERY_ITEM.sub(hide, hosts)
    if ":" in userinfo:
        rest = f"{userinfo.split(':', 1)[0]}:***@{rest}"
    elif userinfo:  # libpq's user name; a query-like text in it is hidden all the same
        rest = f"{_QUERY_ITEM.sub(hide, userinfo)}@{rest}"
    return f"{scheme}://{rest}"


def url_secrets(url: str) -> tuple[str, ...]:
    """Every spelling of every secret in ``url`` (raw and percent-decoded), longest first: what
    to scrub from a message that may quote it (a server's or libpq's)."""
    found: set[str] = set()
    rest = url.partition("://")[2]
    userinfo = _userinfo(rest)[0]
    first = rest.split("/", 1)[0].partition("@")
    candidates = [userinfo]
    if first[1]:
        candidates.append(first[0])  # what libpq reads: up to the first @
    for info in candidates:
        if ":" in info:
            raw = info.split(":", 1)[1]
            found.update({raw, unquote(raw)})
    for match in _QUERY_ITEM.finditer(rest):
        _, name, value = match.groups()
        if is_secret_param(name):
            found.update({value, unquote(value)})
    return tuple(sorted((s for s in found if s), key=len, reverse=True))
