"""Workspaces: a warm bare mirror per repository and a git worktree per run.

Layout under the data directory::

    mirrors/<owner>/<name>.git        bare repository; origin's branches under refs/remotes/origin/
    mirrors/<owner>/<name>.git.*lock  the mirror's locks (locks.py)
    spares/<owner>/<name>/            a checkout of the base branch made ahead of a run (spares.py)
    worktrees/<run_id>/               the run's working files, on branch orchestrator/issue-<n>

The worktree is handed to an untrusted agent. Every git command the runner runs for it goes
through the one hardened git (git.py): it names the run's git directory inside the mirror
explicitly, turns hooks and fsmonitor off, and never reads the ``.git`` entry in the
worktree, which the agent may have replaced (worktrees.py reads worktrees from the mirror's
side). The modules: ``git`` (the hardened runner), ``locks``, ``mirror``, ``worktrees``,
``spares``, ``branches`` (commit, diff, conflicts, push), ``workspaces`` (the facade the run
steps use).
"""

from __future__ import annotations

from runner.workspace.errors import Interrupted, WorkspaceError
from runner.workspace.records import FETCH_STAMP, REMOTE, Identity, Worktree, WorktreeInfo
from runner.workspace.workspaces import Workspaces

__all__ = [
    "FETCH_STAMP",
    "REMOTE",
    "Identity",
    "Interrupted",
    "WorkspaceError",
    "Workspaces",
    "Worktree",
    "WorktreeInfo",
]
