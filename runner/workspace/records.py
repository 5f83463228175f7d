"""The records a workspace hands out: who commits, a run's worktree, a worktree on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REMOTE = "origin"
FETCH_STAMP = "orchestrator-fetch-began"  # in the mirror: when its last completed fetch began


@dataclass(frozen=True)
class Identity:
    """Who the runner's commits are by (the bot account)."""

    name: str = "orchestrator[bot]"
    email: str = "orchestrator-bot@users.noreply.localhost"


@dataclass(frozen=True)
class Worktree:
    """One run's checkout. ``git_dir`` is inside the mirror, out of the agent's reach."""

    run_id: str
    repo: str  # owner/name
    issue: int
    path: Path
    branch: str
    git_dir: Path
    mirror: Path
    base_branch: str
    resumed: bool = False  # cut from the remote branch of an earlier run


@dataclass(frozen=True)
class WorktreeInfo:
    """A worktree found on disk, for cleanup."""

    run_id: str
    repo: str
    path: Path
    branch: str | None
