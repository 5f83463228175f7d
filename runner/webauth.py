"""Who is calling: the API token as a bearer header, or the dashboard's session cookie.

The cookie never holds the token itself but an HMAC of it, so it is useless elsewhere and
changing the token logs every browser out. It is HttpOnly and SameSite=Strict; besides,
a state-changing request authenticated by the cookie must carry ``X-Orchestrator-Dashboard``
(a header no cross-site form can set) and, when the browser sends one, a same-origin
``Origin``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "orchestrator_session"
CSRF_HEADER = "x-orchestrator-dashboard"
SESSION_SECONDS = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Caller:
    """An authenticated caller; ``actor`` is what the audit log records."""

    actor: str
    via: Literal["bearer", "cookie"]


class Auth:
    """Checks bearer tokens and session cookies against the token in ``$<token_env>``."""

    def __init__(self, token_env: str) -> None:
        self.token_env = token_env

    @property
    def name(self) -> str:
        """The token's name as audited: the env var's name, lowercased."""
        return self.token_env.lower()

    def _token(self) -> str:
        return os.environ.get(self.token_env, "")

    def configured(self) -> bool:
        """False when the token env var is unset: then nobody can log in or call the API."""
        return bool(self._token())

    def check_token(self, given: str) -> bool:
        """Constant-time comparison of ``given`` with the configured token."""
        expected = self._token()
        return bool(expected) and hmac.compare_digest(given.strip().encode(), expected.encode())

    def session_value(self) -> str:
        """The cookie value for a logged-in browser."""
        return hmac.new(self._token().encode(), b"orchestrator-dashboard-session",
                        hashlib.sha256).hexdigest()

    def caller(self, request: Request) -> Caller | None:
        """The caller if the request carries the token or a valid session cookie."""
        if not self.configured():
            return None
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            if self.check_token(header[7:]):
                return Caller(f"api:{self.name}", "bearer")
            return None
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self.session_value().encode()):
            return Caller(f"dashboard:{self.name}", "cookie")
        return None

    @staticmethod
    def csrf_problem(request: Request, caller: Caller) -> str | None:
        """Why a cookie-authenticated state change is refused, or None when it is fine."""
        if caller.via != "cookie" or request.method in SAFE_METHODS:
            return None
        if request.headers.get(CSRF_HEADER) != "1":
            return (f"a dashboard request that changes state needs the header "
                    f"{CSRF_HEADER.title()}: 1 (or use a bearer token)")
        origin = request.headers.get("origin")
        if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
            return f"cross-site request from {origin} refused"
        return None

    def log_in(self, response: Response, request: Request) -> None:
        """Set the session cookie on ``response``."""
        response.set_cookie(COOKIE, self.session_value(), max_age=SESSION_SECONDS, path="/",
                            httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")

    @staticmethod
    def log_out(response: Response) -> None:
        """Clear the session cookie."""
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
