"""ASGI middleware that refuses cross-origin writes and adds safe headers to every answer.

A request that changes or computes something (not GET / HEAD) from a page of another
origin is refused (HTTP 403), so a web site open in the same browser cannot make the
explorer work for it. Every response gets ``nosniff``, no referrer, no caching and, unless
it set its own, the page's Content-Security-Policy (scripts and styles from this server
only; images also as data URLs; nothing fetched from elsewhere).
"""

from __future__ import annotations

PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'self'"
)
SAFE_METHODS = ("GET", "HEAD")


class SafeHeaders:
    """Pure ASGI (no task group around the app, so errors raised while reading pass as is)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if scope["method"] not in SAFE_METHODS and origin is not None:
            host = headers.get(b"host", b"").decode("latin-1")
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
