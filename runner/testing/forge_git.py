"""Real git behind the forge emulator: bare repositories and smart HTTP via ``git http-backend``.

Pushes and clones go through git's own CGI program, so what a client sees is exactly what a
git server says. Authentication happens before the CGI runs (token as HTTP Basic password or
as a Bearer token); ``REMOTE_USER`` is set so that ``git-receive-pack`` is enabled.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gates.safegit import git_argv

ZERO_SHA = "0" * 40


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> str:
    """Run git with the hardened flags (``gates.safegit``) and a clean, non-interactive
    environment; return stdout."""
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1",
                **(env or {})}
    done = subprocess.run(git_argv(*args), cwd=cwd, env=full_env, capture_output=True,
                          text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def init_bare(path: Path, default_branch: str) -> None:
    """A new bare repository whose HEAD names ``default_branch``."""
    path.mkdir(parents=True, exist_ok=True)
    git("init", "--bare", "--quiet", f"--initial-branch={default_branch}", str(path))
    # Pushes over HTTP are refused unless enabled; the emulator authenticates them itself.
    git("config", "http.receivepack", "true", cwd=path)


def seed(path: Path, branch: str, files: dict[str, str], author: str) -> str:
    """Commit ``files`` as the first commit of ``branch`` in the bare repo; return its SHA."""
    env = {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": f"{author}@example.invalid",
           "GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": f"{author}@example.invalid",
           "GIT_DIR": str(path)}
    # A throwaway index builds the tree, so that paths in sub-folders ("src/app.py") work.
    with tempfile.TemporaryDirectory(prefix="forge-seed-") as scratch:
        env["GIT_INDEX_FILE"] = str(Path(scratch) / "index")
        for name, content in sorted(files.items()):
            blob = subprocess.run(git_argv("hash-object", "-w", "--stdin"), input=content,
                                  text=True, capture_output=True, env={**os.environ, **env},
                                  check=True).stdout.strip()
            git("update-index", "--add", "--cacheinfo", f"100644,{blob},{name}", env=env)
        tree = git("write-tree", env=env).strip()
        del env["GIT_INDEX_FILE"]
    sha = git("commit-tree", tree, "-m", "Initial commit", env=env).strip()
    git("update-ref", f"refs/heads/{branch}", sha, env=env)
    return sha


def refs(path: Path) -> dict[str, str]:
    """Branch name -> SHA for every branch."""
    out = git("for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads",
              cwd=path, check=False)
    pairs = (line.split(" ", 1) for line in out.splitlines() if " " in line)
    return {name: sha for name, sha in pairs}


@dataclass(frozen=True)
class CGIResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def http_backend(project_root: Path, path_info: str, method: str, query: str,
                 headers: dict[str, str], body: bytes, remote_user: str | None) -> CGIResponse:
    """Run ``git http-backend`` for one request and parse its CGI answer."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_PROJECT_ROOT": str(project_root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(project_root),
        "PATH_INFO": path_info,
        "REQUEST_METHOD": method,
        "QUERY_STRING": query,
        "CONTENT_TYPE": headers.get("content-type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    if remote_user:
        env["REMOTE_USER"] = remote_user
    if "content-encoding" in headers:
        env["HTTP_CONTENT_ENCODING"] = headers["content-encoding"]
    if "git-protocol" in headers:
        env["GIT_PROTOCOL"] = headers["git-protocol"]
    done = subprocess.run(git_argv("http-backend"), input=body, env=env, capture_output=True,
                          check=False)
    raw = done.stdout
    head, _, payload = raw.partition(b"\r\n\r\n")
    if not _:
        head, _, payload = raw.partition(b"\n\n")
    status = 200
    out_headers: list[tuple[str, str]] = []
    for line in head.decode("latin-1").splitlines():
        if ":" not in line:
            continue
        key, value = (part.strip() for part in line.split(":", 1))
        if key.lower() == "status":
            status = int(value.split()[0])
        else:
            out_headers.append((key, value))
    if done.returncode != 0 and not raw:
        return CGIResponse(500, [("Content-Type", "text/plain")], done.stderr)
    return CGIResponse(status, out_headers, payload)


def checkout(git_dir: Path, sha: str, into: Path) -> None:
    """A detached working copy of ``sha`` at ``into`` (for the CI hook)."""
    git("clone", "--quiet", "--no-checkout", str(git_dir), str(into))
    git("checkout", "--quiet", "--detach", sha, cwd=into)
