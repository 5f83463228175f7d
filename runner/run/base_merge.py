"""A conflict follow-up's first move: merge the moved base branch into the run's branch.

The merge is committed at once, conflict markers and all, so that the branch records the
base as a parent whatever the agent does next; the agent is then told which files hold
markers and resolves them, and the gates and CI judge the result like any change. Every git
command is the runner's hardened git (``gates.safegit``): the run's own ``GIT_DIR`` and work
tree, no hooks, no fsmonitor, in a process group a kill stops.
"""

from __future__ import annotations

import subprocess
from typing import Any

from gates.safegit import git_argv, git_env
from runner import process
from runner.run.context import Cancelled, RunContext, RunFailed

REMOTE = "origin"  # the mirror's name for the forge (``runner.workspace.REMOTE``)
GIT_TIMEOUT_S = 600.0


def _git(ctx: RunContext, wt: Any, *args: str, ok: tuple[int, ...] = (0,)
         ) -> subprocess.CompletedProcess[str]:
    identity = getattr(ctx.services.workspaces, "identity", None)
    name = getattr(identity, "name", "orchestrator[bot]")
    email = getattr(identity, "email", "orchestrator-bot@users.noreply.localhost")
    env = {**git_env(), "LC_ALL": "C", "GIT_DIR": str(wt.git_dir),
           "GIT_WORK_TREE": str(wt.path), "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
           "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
    try:
        proc = process.run(git_argv(*args), env=env, cwd=str(wt.path), timeout=GIT_TIMEOUT_S,
                           cancel=ctx.handle.cancel, errors="surrogateescape")
    except process.ProcessInterrupted:
        raise Cancelled() from None
    if proc.returncode not in ok:
        detail = (proc.stderr or proc.stdout).strip()[-1000:]
        raise RunFailed(f"could not merge {ctx.repo.base_branch} into the branch: git "
                        f"{args[0]} failed ({detail}); merge it by hand")
    return proc


def merge_base(ctx: RunContext, wt: Any) -> list[str]:
    """Merge the latest base branch into the run's branch and commit the merge; the paths
    left with conflict markers ([] when it merged cleanly, or was merged already)."""
    url = ctx.forge.clone_url(ctx.run.repo)
    # Fetches the base first; the paths are those a merge will leave conflicted.
    conflicted = ctx.services.workspaces.conflicts(wt, url=url, token=ctx.token,
                                                   cancel=ctx.handle.cancel)
    base = f"refs/remotes/{REMOTE}/{ctx.repo.base_branch}"
    merged = _git(ctx, wt, "merge-base", "--is-ancestor", base, "HEAD", ok=(0, 1))
    if merged.returncode == 0:
        return []  # an earlier claim of this run merged it already
    message = (f"Merge {ctx.repo.base_branch} into {ctx.run.branch} (#{ctx.run.issue})\n\n"
               f"Refs #{ctx.run.issue}")
    result = _git(ctx, wt, "merge", "--no-ff", "--no-edit", "--no-verify", "-m", message,
                  base, ok=(0, 1))
    if result.returncode == 1:
        unmerged = _git(ctx, wt, "diff", "--name-only", "--diff-filter=U", "-z").stdout
        conflicted = sorted({p for p in unmerged.split("\0") if p} | set(conflicted))
        _git(ctx, wt, "add", "--all", "--", ".")
        _git(ctx, wt, "commit", "--quiet", "--no-verify", "--no-gpg-sign", "--no-edit",
             "-m", message)
    else:
        conflicted = []
    ctx.event("base_merged", {"base": ctx.repo.base_branch, "conflicts": conflicted})
    return conflicted
