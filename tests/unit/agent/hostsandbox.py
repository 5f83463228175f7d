"""A small real sandbox for the agent's tests: commands run as host processes in a folder.

No isolation at all; it stands in for the Docker sandbox where a test is about the agent
loop, not about containment. ``/workspace`` (the default workdir) maps to the folder, and
processes get a minimal environment, so a secret of the test process cannot leak into them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from runner.sandbox.base import WORKSPACE, ExecResult, OutputCallback


class HostSandbox:
    """Runs commands in ``root`` on the host (see the module docstring)."""

    def __init__(self, root: Path, run_id: str = "test-run",
                 channel_dir: Path | None = None) -> None:
        self.root = root
        self.channel_dir = channel_dir
        self.run_id = run_id
        self.name = f"host-{run_id}"
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root),
                    "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}

    def exec(self, command: str | list[str], *, timeout: float | None = None,
             on_output: OutputCallback | None = None, workdir: str = WORKSPACE,
             stdin: bytes | None = None) -> ExecResult:
        argv = ["bash", "-lc", command] if isinstance(command, str) else list(command)
        cwd = self.root if workdir == WORKSPACE else Path(workdir)
        proc = subprocess.Popen(argv, cwd=cwd, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT,
                                stdin=subprocess.PIPE if stdin is not None else
                                subprocess.DEVNULL, start_new_session=True)
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        chunks: list[str] = []

        def pump() -> None:
            stream: Any = proc.stdout  # a BufferedReader: read1 returns what is there
            for raw in iter(lambda: stream.read1(4096), b""):
                text = raw.decode("utf-8", errors="replace")
                chunks.append(text)
                if on_output is not None:
                    on_output(text)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started, by its id
            proc.wait()
        reader.join(5)
        return ExecResult(-1 if timed_out else proc.returncode, "".join(chunks), timed_out)

    def stop(self, grace: float = 5.0) -> None:
        """Nothing keeps running between execs."""

    def channel(self) -> tuple[Path, str] | None:
        """The model gateway's directory, when the test gave one (same path both sides)."""
        if self.channel_dir is None:
            return None
        self.channel_dir.mkdir(exist_ok=True)
        return self.channel_dir, str(self.channel_dir)

    def remove(self) -> None:
        """The folder belongs to the test's tmp_path."""
