"""Who is spending: a JWT the app issues, checked with the configured key; its claims become tags.

The token's time claims are checked against the guard's clock (not the library's own reading of
the wall clock), so that tests and FALBUDGET_NOW decide what "now" is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from falbudget.errors import ConfigurationError, install_hint
from falbudget.proxy.config import JwtIdentity


class TokenRefused(Exception):
    """The token is not one the proxy accepts; the message says why (never the token)."""


class JwtVerifier:
    def __init__(
        self, config: JwtIdentity, base_dir: str, clock: Callable[[], float], source: str
    ) -> None:
        try:
            import jwt  # noqa: F401
        except ImportError:  # pragma: no cover - the extra is missing
            raise ConfigurationError(
                f"proxy.jwt needs PyJWT with cryptography: {install_hint('proxy')}"
            ) from None
        self.config = config
        self._clock = clock
        self._key: str | bytes
        if config.algorithm == "HS256":
            name = config.secret_env or ""
            secret = os.environ.get(name, "")
            if len(secret) < 32:
                raise ConfigurationError(
                    f"{source}: proxy.jwt.secret_env: set {name} to the app's HS256 secret, at"
                    " least 32 characters"
                )
            self._key = secret
        else:
            path = Path(base_dir) / (config.public_key_file or "")
            try:
                pem = path.read_bytes()
            except OSError as exc:
                raise ConfigurationError(
                    f"{source}: proxy.jwt.public_key_file: cannot read {path}: {exc.strerror}"
                ) from None
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            try:
                load_pem_public_key(pem)
            except ValueError:
                raise ConfigurationError(
                    f"{source}: proxy.jwt.public_key_file: {path} is not a PEM public key"
                ) from None
            self._key = pem

    def tags(self, token: str) -> dict[str, str]:
        """The tags the token's claims map to, or TokenRefused."""
        import jwt

        config = self.config
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[config.algorithm],
                audience=config.audience,
                issuer=config.issuer,
                options={
                    "require": ["exp"],
                    "verify_exp": False,  # checked below against the guard's clock
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": config.audience is not None,
                },
            )
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"the token is not valid: {exc}") from None
        now = self._clock()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise TokenRefused("the token's exp claim is not a number")
        if now > exp + config.leeway:
            raise TokenRefused("the token has expired")
        if nbf is not None:
            if not isinstance(nbf, int | float) or isinstance(nbf, bool):
                raise TokenRefused("the token's nbf claim is not a number")
            if now + config.leeway < nbf:
                raise TokenRefused("the token is not valid yet")
        tags = {}
        for claim, tag in config.claims.items():
            value = claims.get(claim)
            if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
                raise TokenRefused(f"the token has no usable {claim!r} claim (mapped to {tag!r})")
            tags[tag] = str(value)
        return tags
