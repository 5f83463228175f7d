"""Run records, audit events, leases, kill requests and the cross-process bus."""

from __future__ import annotations

from pathlib import Path

from runner.clock import SYSTEM_CLOCK, Clock
from runner.config import Settings
from runner.store.base import Store


def open_store(settings: Settings, *, base: Path | None = None,
               clock: Clock = SYSTEM_CLOCK) -> Store:
    """The store the configuration names: Redis when ``store.redis`` is set, else SQLite.
    ``clock``: what SQLite's leases and wake times go by (Redis expires leases itself)."""
    if settings.store.redis:
        from runner.store.redis import RedisStore

        return RedisStore(settings.store.redis)
    from runner.store.sqlite import SqliteStore

    path = Path(settings.store.sqlite)
    if base is not None and not path.is_absolute():
        path = base / path
    return SqliteStore(path, clock=clock)
