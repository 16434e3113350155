"""What keeps the page safe, since it can move and delete people's files: loopback unless a
password is set, signed session cookies (Starlette's SessionMiddleware, itsdangerous), a
rate-limited login, a CSRF token on every state-changing request, and headers that forbid
inline scripts, framing and type sniffing."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request

from caixa.errors import CaixaError

CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
LOGIN_TRIES = 5  # failed logins from one address...
LOGIN_WINDOW = 60.0  # ...within this many seconds, then it waits
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# No inline script or style anywhere: everything the page runs is a file under /static.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; object-src 'self'; frame-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# A file from the outputs: no script of its own; a PDF may sit in a frame of the page itself.
FILE_POLICY = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'self'"
SANDBOXED_FILE_POLICY = FILE_POLICY + "; sandbox"


class BindRefusedError(CaixaError):
    """`caixa web` would be reachable from other machines with no password."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, password: str | None) -> None:
    """Refuse to serve anything but loopback without a password."""
    if not is_loopback(host) and not password:
        raise BindRefusedError(
            f"caixa web would listen on {host}, where other machines reach it, with no password:"
            " set CAIXA_WEB_PASSWORD (or bind 127.0.0.1 and reach it through an SSH tunnel)"
        )


def csrf_token(request: Request) -> str:
    """This session's CSRF token, made on first use."""
    token = request.session.get(CSRF_FIELD)
    if not token:
        token = request.session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


def check_csrf(request: Request, given: str | None) -> None:
    """A state-changing request must carry the session's token (form field or header)."""
    expected = request.session.get(CSRF_FIELD)
    given = given or request.headers.get(CSRF_HEADER)
    if not expected or not given or not hmac.compare_digest(str(given), str(expected)):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")


class LoginLimiter:
    """Failed logins per client address, in a sliding window."""

    def __init__(self, tries: int = LOGIN_TRIES, window: float = LOGIN_WINDOW) -> None:
        self.tries = tries
        self.window = window
        self._failed: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, who: str, now: float) -> deque[float]:
        seen = self._failed.setdefault(who, deque())
        while seen and seen[0] < now - self.window:
            seen.popleft()
        return seen

    def blocked(self, who: str) -> float:
        """Seconds `who` must wait before trying again; 0 when it may try now."""
        now = time.monotonic()
        with self._lock:
            seen = self._recent(who, now)
            return seen[0] + self.window - now if len(seen) >= self.tries else 0.0

    def failed(self, who: str) -> None:
        with self._lock:
            self._recent(who, time.monotonic()).append(time.monotonic())

    def passed(self, who: str) -> None:
        with self._lock:
            self._failed.pop(who, None)


def password_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


Scope = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


class Headers:
    """Adds the security headers to every response (ASGI middleware: streams pass through)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", PAGE_POLICY.encode()))
                    headers.append((b"x-frame-options", b"DENY"))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
