"""Which targets the proxy forwards to, and what each request to them does to a budget.

A target is the URL in the ``x-fal-target-url`` header. Only fal's own hosts are allowed
(``fal.run``, ``queue.fal.run``, and on ``rest.fal.ai`` only the storage upload initiation), over
https, without a user name, password or other port; or a URL under one of the configured upstream
base URLs (tests), read as the fal host it stands for. Everything else is refused, so the proxy
cannot be used to reach another host (SSRF).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from falbudget.proxy.config import FAL_HOSTS

Kind = Literal["submit", "run", "stream", "status", "result", "cancel", "upload"]
SPENDING: tuple[Kind, ...] = ("submit", "run", "stream")
UPLOAD_PATHS = ("/storage/upload/initiate", "/storage/upload/complete-multipart")


class TargetRefused(Exception):
    """The target is not one the proxy forwards to; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Target:
    kind: Kind
    host: str  # the fal host: fal.run, queue.fal.run or rest.fal.ai
    path: str  # as fal sees it, with a leading '/'
    query: str
    url: str  # where the proxy sends it (fal's URL, or the configured upstream's)
    endpoint: str  # the application ("fal-ai/magi/image-to-video"); "" for uploads
    request_id: str | None = None


def resolve(url: str, method: str, upstreams: Mapping[str, str]) -> Target:
    """The target ``url`` called with ``method``, or TargetRefused."""
    host, path, query = _host_path(url, upstreams)
    base = upstreams.get(host, f"https://{host}").rstrip("/")
    upstream = f"{base}{path}" + (f"?{query}" if query else "")
    method = method.upper()
    if host == "rest.fal.ai":
        if method == "POST" and path in UPLOAD_PATHS:
            return Target("upload", host, path, query, upstream, "")
        raise TargetRefused(403, f"{host}{path}: only the storage upload initiation is proxied")
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2:
        raise TargetRefused(403, f"{host}{path}: not a fal application path (owner/name)")
    if host == "fal.run":
        if method != "POST":
            raise TargetRefused(405, f"{method} to {host} is not proxied: only POST runs an app")
        if parts[-1] == "stream":
            return Target("stream", host, path, query, upstream, "/".join(parts[:-1]))
        return Target("run", host, path, query, upstream, "/".join(parts))
    # queue.fal.run
    if "requests" not in parts:
        if method != "POST":
            raise TargetRefused(405, f"{method} to {host}{path} is not proxied: submit is a POST")
        return Target("submit", host, path, query, upstream, "/".join(parts))
    at = parts.index("requests")
    app, tail = "/".join(parts[:at]), parts[at + 1 :]
    if tail and method == "GET" and len(tail) == 1:
        return Target("result", host, path, query, upstream, app, tail[0])
    if len(tail) >= 2 and tail[1] == "status" and method == "GET":
        return Target("status", host, path, query, upstream, app, tail[0])
    if len(tail) == 2 and tail[1] == "cancel" and method == "PUT":
        return Target("cancel", host, path, query, upstream, app, tail[0])
    raise TargetRefused(405, f"{method} to {host}{path} is not proxied")


def _host_path(url: str, upstreams: Mapping[str, str]) -> tuple[str, str, str]:
    for host, base in upstreams.items():
        prefix = base.rstrip("/") + "/"
        if url.startswith(prefix) and ".." not in url and "@" not in url[: len(prefix)]:
            rest = urlsplit("http://x/" + url[len(prefix) :])
            return host, rest.path, rest.query
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError:
        raise TargetRefused(412, f"x-fal-target-url {url!r} is not a URL") from None
    host = (split.hostname or "").lower()
    if host not in FAL_HOSTS:
        raise TargetRefused(
            412,
            f"x-fal-target-url: host {host or '(none)'!r} is not allowed: one of"
            f" {', '.join(FAL_HOSTS)}",
        )
    if split.scheme != "https" or port not in (None, 443) or split.username or split.password:
        raise TargetRefused(
            412, "x-fal-target-url: only https://HOST/... on the default port, no user name"
        )
    if ".." in split.path.split("/"):
        raise TargetRefused(412, "x-fal-target-url: a path with '..' is not allowed")
    return host, split.path or "/", split.query
