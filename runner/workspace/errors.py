"""What a workspace operation raises: errors the user can act on, and the run's cancel."""

from __future__ import annotations


class WorkspaceError(Exception):
    """A git operation on a mirror or worktree failed; the message says what to do."""


class Interrupted(WorkspaceError):
    """The run's cancel event stopped a git command (or a wait for the mirror's lock).

    The git process group was stopped and every lock released; a worktree left half-made
    is made again by the next ``prepare``, a fetch left half-done is redone by the next one.
    """
