"""Who is calling: the API token as a bearer header, or the dashboard's session cookie.

The cookie never holds the token itself but an HMAC of it, so it is useless elsewhere and
changing the token logs every browser out. It is HttpOnly and SameSite=Strict; besides,
a state-changing request authenticated by the cookie must carry ``X-Orchestrator-Dashboard``
(a header no cross-site form can set) and, when the browser sends one, a same-origin
``Origin``.

A sign-in link (``/sign-in?ticket=...``) signs a browser in without pasting the token: the
ticket is an expiry and a nonce signed with an HMAC keyed by the token (so whoever holds the
token can make one, and nobody else), good for ``SIGN_IN_SECONDS`` and once: the server
remembers each nonce it redeemed until the ticket expires. The token is never in a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "orchestrator_session"
CSRF_HEADER = "x-orchestrator-dashboard"
SESSION_SECONDS = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SIGN_IN_PATH = "/sign-in"
SIGN_IN_SECONDS = 15 * 60


@dataclass(frozen=True)
class Caller:
    """An authenticated caller; ``actor`` is what the audit log records."""

    actor: str
    via: Literal["bearer", "cookie"]


class SignInRefused(Exception):
    """A sign-in link that does not sign in; the message says why and what to do instead."""


@dataclass
class _Redeemed:
    """Nonces of the sign-in tickets used so far, each kept until its ticket expires."""

    nonces: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def first_use(self, nonce: str, expires: float, now: float) -> bool:
        with self.lock:
            for old in [n for n, until in self.nonces.items() if until < now]:
                del self.nonces[old]
            if nonce in self.nonces:
                return False
            self.nonces[nonce] = expires
            return True


class Auth:
    """Checks bearer tokens and session cookies against the token in ``$<token_env>``."""

    def __init__(self, token_env: str) -> None:
        self.token_env = token_env
        self._redeemed = _Redeemed()

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

    # ------------------------------------------------------------ sign-in links

    def _ticket_mac(self, payload: str) -> str:
        return hmac.new(self._token().encode(), f"orchestrator-sign-in:{payload}".encode(),
                        hashlib.sha256).hexdigest()

    def sign_in_ticket(self, now: float | None = None) -> str:
        """A one-time ticket for ``/sign-in``, good for ``SIGN_IN_SECONDS`` from ``now``."""
        if not self.configured():
            raise SignInRefused(f"no API token is configured: set ${self.token_env}")
        expires = int((time.time() if now is None else now) + SIGN_IN_SECONDS)
        payload = f"{expires}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._ticket_mac(payload)}"

    def sign_in_url(self, base_url: str, next_path: str = "/runs",
                    now: float | None = None) -> str:
        """A link to the dashboard at ``base_url`` that signs in once and opens ``next_path``."""
        query = urlencode({"ticket": self.sign_in_ticket(now), "next": next_path})
        return f"{base_url.rstrip('/')}{SIGN_IN_PATH}?{query}"

    def redeem(self, ticket: str, now: float | None = None) -> None:
        """Accept ``ticket`` once; SignInRefused when it is forged, expired or used already."""
        at = time.time() if now is None else now
        expires, _, rest = ticket.partition(".")
        nonce, _, mac = rest.partition(".")
        genuine = (self.configured() and expires.isdigit() and bool(nonce) and bool(mac)
                   and hmac.compare_digest(mac.encode(),
                                           self._ticket_mac(f"{expires}.{nonce}").encode()))
        if not genuine:
            raise SignInRefused("This sign-in link is not valid (cut short, or made with "
                                "another token). Sign in with the API token.")
        if int(expires) < at:
            raise SignInRefused("This sign-in link has expired. Sign in with the API token, "
                                "or open a new link.")
        if not self._redeemed.first_use(nonce, float(expires), at):
            raise SignInRefused("This sign-in link was used already: a link signs in once. "
                                "Sign in with the API token, or open a new link.")

    # ------------------------------------------------------------ requests

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
