"""A forge's request budget as one adapter sees it: requests made, conditional reads answered
304 (free on GitHub), what the forge says is left, and the waits for rate limits; plus the
cache of ETags that makes periodic reads conditional.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ForgeStats:
    """Counters of one adapter (thread-safe); read by ``/metrics`` and the benchmarks."""

    requests: int = 0
    not_modified: int = 0
    waits: int = 0
    wait_seconds: float = 0.0
    remaining: int | None = None
    limit: int | None = None
    reset: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def request(self) -> None:
        with self._lock:
            self.requests += 1

    def hit(self) -> None:
        """A conditional read answered 304: nothing new, no budget spent."""
        with self._lock:
            self.not_modified += 1

    def waited(self, seconds: float) -> None:
        with self._lock:
            self.waits += 1
            self.wait_seconds += seconds

    def budget(self, remaining: int, limit: int, reset: float | None) -> None:
        """What the forge's last answer said of the budget (negative: it did not say)."""
        if remaining < 0 or limit <= 0:
            return
        with self._lock:
            self.remaining, self.limit, self.reset = remaining, limit, reset

    def low(self, share: float = 0.1) -> bool:
        """True when less than ``share`` of the budget is left before its reset."""
        with self._lock:
            if self.remaining is None or not self.limit:
                return False
            if self.reset is not None and self.reset <= time.time():
                return False
            return self.remaining < self.limit * share


def budget_line(stats: ForgeStats) -> str:
    """The budget in one line, for the dashboard's health page."""
    with stats._lock:
        parts = []
        if stats.remaining is not None and stats.limit:
            reset = (time.strftime(" until %H:%M UTC", time.gmtime(stats.reset))
                     if stats.reset else "")
            parts.append(f"budget {stats.remaining:,} of {stats.limit:,} left{reset}"
                         + (" (low: polling slowed)" if stats.remaining < stats.limit * 0.1
                            else ""))
        parts.append(f"{stats.requests:,} requests, {stats.not_modified:,} unchanged (304)")
        if stats.waits:
            parts.append(f"{stats.waits} rate-limit waits ({stats.wait_seconds:.0f} s)")
    return "; ".join(parts)


def poll_every(interval: float, forges: Any, stretch: float = 4.0) -> float:
    """The poll interval: ``stretch`` times longer while a forge's budget runs low (under a
    tenth left before its reset), so polling never spends what runs need."""
    low = any(isinstance(getattr(f, "stats", None), ForgeStats) and f.stats.low()
              for f in forges)
    return interval * stretch if low else interval


class EtagCache:
    """The last answer and its ETag per URL (bounded, least recently used dropped first)."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[str, Any] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: str, etag: str, value: Any) -> None:
        with self._lock:
            self._items[key] = (etag, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def metric_lines(forges: Mapping[str, Any]) -> list[str]:
    """Prometheus lines for every forge adapter that keeps ``ForgeStats`` (``stats``)."""
    rows: dict[str, list[str]] = {
        "orchestrator_forge_requests_total": [], "orchestrator_forge_not_modified_total": [],
        "orchestrator_forge_rate_limit_waits_total": [],
        "orchestrator_forge_rate_limit_wait_seconds_total": [],
        "orchestrator_forge_budget_remaining": [], "orchestrator_forge_budget_limit": []}
    for name, forge in sorted(forges.items()):
        stats = getattr(forge, "stats", None)
        if not isinstance(stats, ForgeStats):
            continue
        label = '{forge="' + name.replace("\\", "\\\\").replace('"', '\\"') + '"}'
        rows["orchestrator_forge_requests_total"].append(f"{label} {stats.requests}")
        rows["orchestrator_forge_not_modified_total"].append(f"{label} {stats.not_modified}")
        rows["orchestrator_forge_rate_limit_waits_total"].append(f"{label} {stats.waits}")
        rows["orchestrator_forge_rate_limit_wait_seconds_total"].append(
            f"{label} {stats.wait_seconds:g}")
        if stats.remaining is not None:
            rows["orchestrator_forge_budget_remaining"].append(f"{label} {stats.remaining}")
            rows["orchestrator_forge_budget_limit"].append(f"{label} {stats.limit}")
    helps = {
        "orchestrator_forge_requests_total": ("counter", "Forge API requests made."),
        "orchestrator_forge_not_modified_total": (
            "counter", "Conditional reads the forge answered 304 (free of budget)."),
        "orchestrator_forge_rate_limit_waits_total": ("counter", "Waits for a rate limit."),
        "orchestrator_forge_rate_limit_wait_seconds_total": (
            "counter", "Seconds spent waiting for rate limits."),
        "orchestrator_forge_budget_remaining": (
            "gauge", "Requests left in the forge's rate-limit window, as it last said."),
        "orchestrator_forge_budget_limit": ("gauge", "The forge's rate limit per window."),
    }
    out: list[str] = []
    for metric, lines in rows.items():
        if not lines:
            continue
        kind, text = helps[metric]
        out += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        out += [f"{metric}{line}" for line in lines]
    return out
