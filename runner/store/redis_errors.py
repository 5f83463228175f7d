"""Redis being away, as the store's callers understand it: StoreUnavailable, never redis-py's
own connection errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from runner.store.base import StoreUnavailable

T = TypeVar("T")

DOWN = (redis.ConnectionError, redis.TimeoutError)


def translated(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` raising StoreUnavailable where redis-py raises its own connection errors."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except DOWN as exc:
            where = getattr(self, "url", None)
            what = f"Redis at {where}" if where else "the configured Redis"
            raise StoreUnavailable(f"{what} does not answer: {exc}") from None

    return call


def store_errors(cls: type[T]) -> type[T]:
    """Every public method of ``cls`` says StoreUnavailable when Redis is away.

    Callers (the controller's bus listener, heartbeat and worker slots) handle StoreError and
    carry on; a raw redis.ConnectionError escaping from a method that lacked its own handler
    killed those threads while Redis restarted, and kills stopped arriving.
    """
    for name, value in list(vars(cls).items()):
        if callable(value) and (not name.startswith("_") or name == "__init__"):
            setattr(cls, name, translated(value))
    return cls
