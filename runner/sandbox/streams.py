"""Reading a ``docker exec`` stream: Docker's multiplexed frames, decoded as they come, the
tail of the output kept; and the streams open on each container, so a stop can end them."""

from __future__ import annotations

import codecs
import contextlib
import socket
import struct
import threading
from collections.abc import Iterable
from typing import Any

from runner.sandbox.base import OutputCallback

MAX_OUTPUT = 4 * 1024 * 1024  # characters of output kept per command (the tail)

# The exec streams reading from each container now (container id -> sockets). A stopped
# container's streams do not always end (gVisor keeps them open): stop() hangs them up.
_OPEN_STREAMS: dict[str, set[Any]] = {}
_STREAMS_LOCK = threading.Lock()


def opened(container_id: str, raw: socket.socket) -> None:
    """Record an exec stream reading from ``container_id``."""
    with _STREAMS_LOCK:
        _OPEN_STREAMS.setdefault(container_id, set()).add(raw)


def closed(container_id: str, raw: socket.socket) -> None:
    """Forget an exec stream that ended."""
    with _STREAMS_LOCK:
        open_here = _OPEN_STREAMS.get(container_id, set())
        open_here.discard(raw)
        if not open_here:
            _OPEN_STREAMS.pop(container_id, None)


def hang_up(container_id: str) -> None:
    """End the exec streams still open on a container that was stopped."""
    with _STREAMS_LOCK:
        streams = list(_OPEN_STREAMS.get(container_id, ()))
    for stream in streams:
        with contextlib.suppress(OSError):
            stream.shutdown(socket.SHUT_RDWR)


def feed(raw: socket.socket, data: bytes) -> None:
    """Write stdin, then half-close so the command sees end of file."""
    with contextlib.suppress(OSError):
        raw.sendall(data)
        raw.shutdown(socket.SHUT_WR)


def frames(raw: socket.socket) -> Iterable[tuple[int, bytes]]:
    """Docker's multiplexed exec stream: 8-byte headers (stream, size), then the payload."""
    buffer = b""
    while True:
        try:
            data = raw.recv(65536)
        except OSError:
            data = b""
        if not data:
            return
        buffer += data
        while len(buffer) >= 8:
            stream, size = struct.unpack(">BxxxL", buffer[:8])
            if len(buffer) < 8 + size:
                break
            yield stream, buffer[8:8 + size]
            buffer = buffer[8 + size:]


class Collector:
    """Decodes stdout and stderr as they come and keeps the tail of the interleaved text."""

    def __init__(self, on_output: OutputCallback | None) -> None:
        self.on_output = on_output
        self.decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in (1, 2)}
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def add(self, stream: int, chunk: bytes) -> None:
        """Decode a chunk of ``stream`` (1: stdout, 2: stderr) and keep it."""
        text = self.decoders.get(stream, self.decoders[1]).decode(chunk)
        self._keep(text)

    def flush(self) -> None:
        """Keep what the decoders still hold (the end of the output)."""
        for decoder in self.decoders.values():
            self._keep(decoder.decode(b"", final=True))

    def _keep(self, text: str) -> None:
        if not text:
            return
        if self.on_output is not None:
            self.on_output(text)
        self.parts.append(text)
        self.size += len(text)
        while self.size > MAX_OUTPUT and len(self.parts) > 1:
            self.size -= len(self.parts[0])
            self.dropped += len(self.parts.pop(0))

    def text(self) -> str:
        """The output kept, saying how much was dropped from its start."""
        body = "".join(self.parts)
        if self.dropped:
            return f"[orchestrator: {self.dropped} characters of output dropped]\n{body}"
        return body
