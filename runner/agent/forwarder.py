"""The gateway's other end: a tiny TCP-to-unix-socket forwarder run inside the sandbox.

CLI agents speak HTTP to a base URL; the sandbox has no network but its own loopback. So a
few lines of Python (the sandbox image has python3) listen on ``127.0.0.1:<free port>`` inside
the container and pipe each connection to the run's gateway socket, bind-mounted from the
runner. It checks the socket answers before it says its port, so a sandbox that cannot reach
the socket (gVisor without ``--host-uds=open``) fails with a message, not a hung agent, and it
exits by itself once the gateway has deleted its socket.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from runner.sandbox.base import Sandbox

START_TIMEOUT = 15.0
EXIT_WAIT = 1.0  # seconds the forwarder has to notice its socket is gone

# argv: the socket path. Prints "<port> <pid>" once it listens, or "ERROR <why>" and exits 3.
SCRIPT = r'''
import asyncio, os, socket, sys
SOCK = sys.argv[1]

async def pipe(reader, writer, half_close):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if half_close and writer.can_write_eof():
            writer.write_eof()
            return
    except Exception:
        pass
    writer.close()

async def handle(client_r, client_w):
    try:
        up_r, up_w = await asyncio.open_unix_connection(SOCK)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pipe(client_r, up_w, True), pipe(up_r, client_w, False))
    up_w.close()
    client_w.close()

async def main():
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(SOCK)
    except OSError as exc:
        print(f"ERROR cannot connect to the gateway socket {SOCK}: {exc}", flush=True)
        sys.exit(3)
    probe.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], os.getpid(), flush=True)
    while os.path.exists(SOCK):  # the gateway deletes its socket when it closes
        await asyncio.sleep(0.2)
    os._exit(0)  # connections still open go with the process

asyncio.run(main())
'''


class ForwarderError(Exception):
    """The forwarder did not start in the sandbox; the message says why."""


class Forwarder:
    """One forwarder process in a sandbox, from ``start`` to ``stop``."""

    def __init__(self, sandbox: Sandbox, socket_path: str) -> None:
        self.sandbox = sandbox
        self.socket_path = socket_path
        self.port = 0
        self.pid = 0
        self._lines: list[str] = []
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: Any = None

    def _output(self, text: str) -> None:
        self._lines.append(text)
        if "\n" in "".join(self._lines):
            self._ready.set()

    def start(self) -> int:
        """Start it; the port it listens on inside the sandbox."""

        def work() -> None:
            try:
                self._result = self.sandbox.exec(["python3", "-c", SCRIPT, self.socket_path],
                                                 on_output=self._output)
            except Exception as exc:  # the sandbox broke: said below  # noqa: BLE001
                self._result = exc
            finally:
                self._ready.set()

        self._thread = threading.Thread(target=work, name="gateway-forwarder", daemon=True)
        self._thread.start()
        self._ready.wait(START_TIMEOUT)
        first = "".join(self._lines).strip().splitlines()
        line = first[0] if first else ""
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            self.port, self.pid = int(parts[0]), int(parts[1])
            return self.port
        self.stop()
        detail = line.removeprefix("ERROR ").strip() or (
            str(self._result) if self._result is not None else "no answer in "
                                                                f"{START_TIMEOUT:g} s")
        raise ForwarderError(
            f"cannot start the model gateway's forwarder in the sandbox: {detail}. The sandbox "
            f"image needs python3; under gVisor, runsc needs --host-uds=open (see "
            f"docs/sandbox.md)")

    def stop(self) -> None:
        """Wait for the process to end (it does once the gateway's socket is gone), killing it
        if it does not. The sandbox may be gone already."""
        if self._thread is not None:
            self._thread.join(EXIT_WAIT)
            if not self._thread.is_alive():
                self._thread, self.pid = None, 0
        if self.pid:
            with contextlib.suppress(Exception):  # bash's kill: the image need not have procps
                self.sandbox.exec(["bash", "-c", 'kill -KILL "$1"', "kill", str(self.pid)],
                                  timeout=10)
            self.pid = 0
        if self._thread is not None:
            self._thread.join(3)
            self._thread = None
