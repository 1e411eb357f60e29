"""ASGI middleware that checks the Host, refuses cross-origin writes and adds safe headers.

A request whose ``Host`` is not one of the allowed names (by default the loopback names
the server listens on) gets HTTP 400: a page elsewhere cannot reach the explorer by
pointing a DNS name of its own at 127.0.0.1 (DNS rebinding). A request that changes or
computes something (not GET / HEAD) from a page of another origin is refused (HTTP 403),
so a web site open in the same browser cannot make the explorer work for it. Every
response gets ``nosniff``, no referrer, no caching and, unless it set its own, the page's
Content-Security-Policy (scripts and styles from this server only; images also as data
URLs; nothing fetched from elsewhere).
"""

from __future__ import annotations

PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'self'"
)
SAFE_METHODS = ("GET", "HEAD")


def host_name(value: str) -> str:
    """The name in a ``Host`` header: ``[::1]:80`` -> ``::1``, ``localhost:80`` -> ``localhost``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class SafeHeaders:
    """Pure ASGI (no task group around the app, so errors raised while reading pass as is).

    ``allowed_hosts``: the names a request's ``Host`` may carry; None allows any.
    """

    def __init__(self, app, allowed_hosts: tuple[str, ...] | None = None) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        if self.allowed is not None and host_name(host) not in self.allowed:
            from starlette.responses import JSONResponse

            detail = f"host {host!r} is not served here (DNS rebinding?)"
            await JSONResponse({"detail": detail}, 400)(scope, receive, send)
            return
        origin = headers.get(b"origin")
        if scope["method"] not in SAFE_METHODS and origin is not None:
            if origin.decode("latin-1").split("://", 1)[-1].rstrip("/") != host:
                from starlette.responses import JSONResponse

                detail = f"cross-origin request from {origin.decode('latin-1')} refused"
                await JSONResponse({"detail": detail}, 403)(scope, receive, send)
                return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                names = {k.lower() for k, _ in raw}
                if b"content-security-policy" not in names:
                    raw.append((b"content-security-policy", PAGE_POLICY.encode()))
                if b"cache-control" not in names:
                    raw.append((b"cache-control", b"no-store"))
                raw += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_with_headers)
