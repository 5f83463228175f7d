"""Real git repositories for tests: an "upstream" bare repo and a clone to push to it from."""

from __future__ import annotations

import subprocess
from pathlib import Path

ENV_ID = ["-c", "user.name=Maintainer", "-c", "user.email=maintainer@example.com",
          "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"]


def git(cwd: Path, *args: str) -> str:
    """Run git as the maintainer; the output."""
    proc = subprocess.run(["git", *ENV_ID, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise AssertionError(f"git {' '.join(args)}: {proc.stderr}")
    return proc.stdout


class Upstream:
    """A bare repository standing in for the forge, and a maintainer's clone of it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "upstream.git"
        self.clone = root / "maintainer"
        git(root, "init", "--quiet", "--bare", str(self.bare))
        git(root, "init", "--quiet", str(self.clone))
        self.write({"README.md": "# demo\n", "src/app.py": "def answer():\n    return 41\n"},
                   "initial")

    @property
    def url(self) -> str:
        return str(self.bare)

    def write(self, files: dict[str, str], message: str, branch: str = "main") -> str:
        """Commit ``files`` on ``branch`` in the clone and push; the new SHA."""
        git(self.clone, "checkout", "--quiet", "-B", branch)
        for name, text in files.items():
            path = self.clone / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(self.clone, "add", "--all")
        git(self.clone, "commit", "--quiet", "-m", message)
        git(self.clone, "push", "--quiet", "--force", str(self.bare), f"{branch}:{branch}")
        return git(self.clone, "rev-parse", "HEAD").strip()

    def show(self, ref: str, path: str) -> str:
        return git(self.bare, "show", f"{ref}:{path}")

    def log(self, ref: str, fmt: str = "%an <%ae>|%s|%b") -> list[str]:
        out = git(self.bare, "log", f"--format={fmt}%x00", ref)
        return [e.strip() for e in out.split("\0") if e.strip()]

    def branches(self) -> list[str]:
        out = git(self.bare, "for-each-ref", "--format=%(refname:short)", "refs/heads/")
        return out.split()
