"""`scripts/demo --keep` as a person runs it: it prints URLs that answer, and Ctrl-C (SIGINT
to its process group, as a terminal sends it) stops everything, a run in flight included,
leaving no container, worktree or process. And a `serve` log of one run holds no per-request
HTTP lines from the libraries."""

from __future__ import annotations

import hashlib
import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.testing.demo import REPO, SLOW_TITLE, DemoWorld
from tests.support import Serve, start_serve

pytestmark = [pytest.mark.docker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def instance_containers(docker_client: Any, workdir: Path) -> list[str]:
    """Containers (running or not) of the runner whose data folder is under ``workdir``."""
    instance = hashlib.sha256(str((workdir / "data" / "sandbox").resolve()).encode()
                              ).hexdigest()[:16]
    found = docker_client.api.containers(
        all=True, filters={"label": f"orchestrator.instance={instance}"})
    return [c["Names"][0] for c in found]


def group_members(pgid: int) -> list[str]:
    """Processes still in the process group (the demo started its own session)."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,args="], capture_output=True, text=True,
                         check=True).stdout
    return [line.strip() for line in out.splitlines()
            if len(line.split()) > 2 and line.split()[1] == str(pgid)]


def test_demo_keep_prints_working_urls_and_ctrl_c_leaves_nothing(
        tmp_path: Path, sandbox_image: str, docker_client: Any) -> None:
    proc = subprocess.Popen([str(ROOT / "scripts" / "demo"), "--keep", "--dir", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            env={**os.environ, "COLUMNS": "120"})
    lines: queue.Queue[str | None] = queue.Queue()
    seen: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()

    def until(text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("the demo ended early:\n" + "".join(seen))
            seen.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} within {timeout:.0f}s:\n" + "".join(seen))

    try:
        until("Press Ctrl-C", 600)
        out = "".join(seen)
        assert "You are @alice" in out
        urls = dict(re.findall(r"^\s+([a-z ()]+?):\s+(http://127\.0\.0\.1:\d+\S*)", out, re.M))
        issues, pull, dashboard = (urls["issues (the forge)"], urls["the pull request"],
                                   urls["dashboard"])
        token = re.search(r"sign in with the token (\w+)", out)
        assert token is not None
        with httpx.Client(follow_redirects=True, timeout=30) as web:
            assert web.get(issues).status_code == 200
            answer = web.get(pull)
            assert answer.status_code == 200 and "Files changed" in answer.text
            # the printed dashboard link signs in (once: a second use is refused)
            assert "Signed in" in web.get(dashboard).text
            base = dashboard.split("/sign-in?", 1)[0]
            runs = web.get(f"{base}/runs")
            assert runs.url.path == "/runs" and "r-" in runs.text
            with httpx.Client(timeout=30) as stranger:
                assert stranger.get(dashboard).status_code == 403
                signed = stranger.post(f"{base}/login", data={"token": token.group(1),
                                                              "next": "/runs"})
                assert signed.status_code == 303
            # a run in flight when Ctrl-C comes: opened and labelled from the pages
            forge = issues.removesuffix(f"/{REPO}/issues")
            made = web.post(f"{issues}/new", data={"title": SLOW_TITLE, "body": "faster"},
                            headers={"Origin": forge})
            web.post(f"{made.url}/label", data={"name": "orchestrator"},
                     headers={"Origin": forge})
        deadline = time.monotonic() + 120
        while not any("orchestrator-r-" in n for n in instance_containers(docker_client,
                                                                            tmp_path)):
            assert time.monotonic() < deadline, "the playground's run never started"
            time.sleep(0.5)

        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert proc.wait(timeout=180) == 0, "".join(seen)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    while (line := lines.get(timeout=10)) is not None:
        seen.append(line)
    assert "stopped: no run, container or worktree is left" in "".join(seen)
    assert instance_containers(docker_client, tmp_path) == []
    worktrees = tmp_path / "data" / "worktrees"
    assert not worktrees.is_dir() or list(worktrees.iterdir()) == []
    assert group_members(proc.pid) == []


def test_a_serve_log_of_one_run_has_no_per_request_http_lines(
        tmp_path: Path, sandbox_image: str, processes: list[Serve]) -> None:
    with DemoWorld(tmp_path, start_runner=False) as world:
        serve = start_serve(world, tmp_path, processes)
        issue = world.open_issue()
        serve.finish(world, issue, timeout=300)
        serve.stop()
        log = serve.log.read_text(errors="replace")
    assert "serving on http://" in log
    assert "HTTP Request:" not in log, log
    assert not re.search(r'"(GET|POST|PATCH) /[^"]*" \d{3}', log), log
