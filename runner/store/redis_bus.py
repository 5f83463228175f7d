"""The bus of a Redis store: one pub/sub channel every runner process subscribes to."""

from __future__ import annotations

import json
import time
from typing import Any

from runner.store.base import BusMessage
from runner.store.redis_errors import store_errors


@store_errors
class RedisSubscription:
    """The store's bus as one subscriber reads it."""

    def __init__(self, client: Any, channel: str) -> None:
        self._pubsub = client.pubsub()
        self._pubsub.subscribe(channel)
        # Wait for the server's confirmation: messages published after we return must arrive.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            reply = self._pubsub.get_message(timeout=0.1)
            if reply and reply.get("type") == "subscribe":
                break

    def get(self, timeout: float) -> BusMessage | None:
        """The next message, or None after ``timeout`` seconds without one."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            message = self._pubsub.get_message(timeout=remaining)
            if message and message.get("type") == "message":
                return dict(json.loads(message["data"]))

    def close(self) -> None:
        """Unsubscribe."""
        self._pubsub.close()
