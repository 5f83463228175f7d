"""The local backend: the same protocol by subprocess in the worktree, with a warning."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from runner.config import Settings
from runner.sandbox import make_backend, make_warm_pool, secret_env_names
from runner.sandbox.base import SandboxError, SandboxSpec
from runner.sandbox.local import LocalBackend, LocalSandbox


@pytest.fixture
def sandbox(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> LocalSandbox:
    worktree = tmp_path / "wt"
    worktree.mkdir()
    with caplog.at_level(logging.WARNING):
        made = LocalBackend().start(SandboxSpec(run_id="r-10ca1", repo="a/b", issue=1,
                                                worktree=worktree))
    assert "WITHOUT isolation" in caplog.text
    return made


def test_streams_output_exit_code_stdin_and_workdir(sandbox: LocalSandbox):
    chunks: list[tuple[float, str]] = []
    t0 = time.monotonic()
    result = sandbox.exec("echo one; sleep 1; echo two >&2; exit 3",
                          on_output=lambda s: chunks.append((time.monotonic() - t0, s)))
    assert (result.exit_code, result.output) == (3, "one\ntwo\n")
    assert chunks[0] == (pytest.approx(chunks[0][0]), "one\n") and chunks[0][0] < 0.9
    assert sandbox.exec("wc -c", stdin=b"x" * 100_000).output.strip() == "100000"
    (sandbox.worktree / "sub").mkdir()
    assert sandbox.exec("pwd", workdir="/workspace/sub").output.strip() == str(
        sandbox.worktree / "sub")
    with pytest.raises(SandboxError, match="outside"):
        sandbox.exec("pwd", workdir="/workspace/../..")


def test_runner_secrets_are_not_in_the_environment(sandbox: LocalSandbox,
                                                   monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    assert "sk-secret" not in sandbox.exec("env").output


def test_timeout_kills_the_group_even_when_sigterm_is_ignored(sandbox: LocalSandbox):
    t0 = time.monotonic()
    result = sandbox.exec("trap '' TERM; sleep 300 & wait", timeout=0.5)
    assert result.timed_out and result.exit_code == -1
    assert time.monotonic() - t0 < 5


def test_stop_ends_running_commands(sandbox: LocalSandbox):
    results = []
    thread = threading.Thread(target=lambda: results.append(sandbox.exec("sleep 300")))
    thread.start()
    time.sleep(0.3)
    sandbox.stop(grace=0.5)
    thread.join(5)
    assert not thread.is_alive() and not results[0].ok
    with pytest.raises(SandboxError, match="stopped"):
        sandbox.exec("true")
    sandbox.remove()
    sandbox.remove()


def test_make_backend_follows_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    local = make_backend(Settings.model_validate({"sandbox": {"backend": "local"}}))
    assert isinstance(local, LocalBackend)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-live")
    settings = Settings.model_validate({"data_dir": str(tmp_path)})
    from runner.sandbox.docker import DockerBackend

    docker_backend = make_backend(settings)
    assert isinstance(docker_backend, DockerBackend)
    assert "ANTHROPIC_API_KEY" in secret_env_names(settings)
    assert "sk-live" in docker_backend.containers._secrets
    # Warm sandboxes are the Docker backend's: local processes start at once.
    from runner.sandbox.warm import WarmPool

    assert make_warm_pool(local) is None
    pool = make_warm_pool(docker_backend)
    assert isinstance(pool, WarmPool) and pool.containers is docker_backend.containers
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-live"
