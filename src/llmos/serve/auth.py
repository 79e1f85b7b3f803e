"""API-key check and Host check, as one ASGI middleware in front of every route.

With a key set, only `/health` and the static web UI (whose own API calls carry the key) answer
without `Authorization: Bearer <key>`. Keys are compared as SHA-256 digests with
`hmac.compare_digest`, so neither the content nor the length of the key leaks through timing.
A server bound to loopback also refuses Host headers other than loopback names, so a web page
cannot reach it through DNS rebinding.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from llmos.serve.errors import error_body

PUBLIC_PATHS = frozenset({"/health", "/", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _digest(value: str | bytes) -> bytes:
    return hashlib.sha256(value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")).digest()


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    def __init__(self, app: Any, api_key: str | None, loopback_only: bool) -> None:
        self.app = app
        self.key_digest = _digest(api_key) if api_key else None
        self.loopback_only = loopback_only

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.loopback_only:
            host = headers.get(b"host", b"").decode("latin-1").lower()
            if host and _host_name(host) not in LOOPBACK_NAMES:
                await _reply(send, 403, error_body("this server only answers requests addressed to localhost",
                                                   "permission_error", None, "host_not_allowed"))
                return
        if self.key_digest is not None and not is_public(scope["path"]):
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            ok = scheme.lower() == b"bearer" and hmac.compare_digest(_digest(token.strip()), self.key_digest)
            if not ok:
                await _reply(send, 401, error_body(
                    "Incorrect or missing API key: send it as 'Authorization: Bearer <key>'.",
                    "authentication_error", None, "invalid_api_key"), {"www-authenticate": "Bearer"})
                return
        await self.app(scope, receive, send)


async def _reply(send: Any, status: int, body: dict, extra: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
