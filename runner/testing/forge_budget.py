"""GitHub's request budget in the forge emulator: rate-limit headers, a primary limit that can
run out, and conditional requests (``ETag`` / ``If-None-Match`` -> 304).

As ``github/recorded-pygithub/rate-limit.json`` shows: every answer carries
``x-ratelimit-limit/-remaining/-used/-reset/-resource``; a spent budget answers 403 "API rate
limit exceeded ..." with remaining 0; a 304 has no body, the strong form of the etag, and
does not count against the budget.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field

SECONDARY = ("You have exceeded a secondary rate limit. Please wait a few minutes before you "
             "try again.")


def etag_of(payload: bytes) -> str:
    """A strong etag of a response body (GitHub's form: a quoted hex digest)."""
    return f'"{hashlib.sha256(payload).hexdigest()[:40]}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """``If-None-Match`` names ``etag`` (a weak ``W/"..."`` matches its strong form too)."""
    if not if_none_match:
        return False
    wanted = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in wanted or "*" in wanted


@dataclass
class _Window:
    used: int = 0
    reset: float = 0.0


@dataclass
class RequestBudget:
    """Requests per login per window; enforced only once ``limit`` is set by a test."""

    limit: int = 5000
    window: float = 3600.0
    enforce: bool = False
    charged: int = 0  # requests that counted, every login
    not_modified: int = 0  # 304 answers (free)
    _windows: dict[str, _Window] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def configure(self, limit: int, reset_in: float) -> None:
        """Enforce ``limit`` requests per login, the first window ending in ``reset_in`` s."""
        with self._lock:
            self.limit, self.enforce = limit, True
            self.window = max(reset_in, 1.0)
            self._windows.clear()
            self._first_reset = time.time() + reset_in

    def _get(self, login: str) -> _Window:
        now = time.time()
        found = self._windows.get(login)
        if found is None or now >= found.reset:
            start = getattr(self, "_first_reset", 0.0) if found is None else 0.0
            found = _Window(0, start if start > now else now + self.window)
            self._windows[login] = found
        return found

    def exhausted(self, login: str) -> bool:
        """True when ``login`` has no request left in this window."""
        with self._lock:
            return self.enforce and self._get(login).used >= self.limit

    def charge(self, login: str, counts: bool) -> dict[str, str]:
        """Count one request (unless ``counts`` is False: a 304) and give its headers."""
        with self._lock:
            win = self._get(login)
            if counts:
                win.used += 1
                self.charged += 1
            else:
                self.not_modified += 1
            remaining = max(self.limit - win.used, 0)
            return {"x-ratelimit-limit": str(self.limit),
                    "x-ratelimit-remaining": str(remaining),
                    "x-ratelimit-used": str(win.used),
                    "x-ratelimit-reset": str(int(win.reset)),
                    "x-ratelimit-resource": "core"}

    def spent_headers(self, login: str) -> dict[str, str]:
        """The headers of the 403 a spent budget answers."""
        with self._lock:
            win = self._get(login)
            return {"x-ratelimit-limit": str(self.limit), "x-ratelimit-remaining": "0",
                    "x-ratelimit-used": str(win.used), "x-ratelimit-reset": str(int(win.reset)),
                    "x-ratelimit-resource": "core"}
