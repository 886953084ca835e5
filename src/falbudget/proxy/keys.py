"""Virtual keys of ``falbudget proxy``: made here, shown once, stored in the ledger as a digest.

A key reads ``fbk_<id>_<secret>``: ``id`` (12 hex digits) is public and names the key in lists
and in the ``key`` tag; ``secret`` is 256 random bits. The ledger keeps the SHA-256 of the whole
key, never the key: a key has too much entropy for its digest to be guessed back, so a slow
password hash would only slow every request.
"""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "fbk_"
RESERVED_TAGS = ("endpoint", "ip", "key")
"""Tags the proxy sets itself; a key cannot carry them."""


def new_key() -> tuple[str, str]:
    """A fresh (key id, key)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def digest(key: str) -> str:
    """What the ledger stores and looks a key up by."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def looks_like_key(token: str) -> bool:
    return token.startswith(PREFIX)
