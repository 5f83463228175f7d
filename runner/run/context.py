"""What a step works with: the adapters (``Services``) and one claimed run (``RunContext``).

A context lives as long as one claim: from the moment a worker slot takes the run until the
run waits, ends or is left to another owner. Nothing in it survives a wait except what it
wrote to the store (the run and its ``details``) and to disk (the worktree).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from gates.model import Diff
from gates.profiles import GatesConfig, Profile
from gates.secrets import redact as redact_secrets
from runner.agent.base import Agent
from runner.clock import SYSTEM_CLOCK, Clock
from runner.config import RepoConfig, Settings
from runner.forge.base import Forge
from runner.model import Run, RunDetails, RunState
from runner.run.handle import RunHandle
from runner.run.status import StatusWriter, render
from runner.sandbox.base import Sandbox, SandboxBackend, SandboxError, SandboxSpec
from runner.sandbox.refill import WarmRefill
from runner.store.base import LeaseLost, Store, StoreError, StoreUnavailable

log = logging.getLogger("orchestrator.run")
# How long a forge write waits for an unreachable store to confirm this process's lease.
STORE_WAIT_S = 600.0


class Cancelled(Exception):
    """The run's cancel event fired (a kill, or the lease was lost): stop at once."""


class RunFailed(Exception):
    """The run cannot go on; the message is the reason shown on the issue."""


class Workspace(Protocol):
    """What the steps need of ``workspace.Workspaces``."""

    # ``cancel``: a kill stops the git command in flight (its process group) at once.
    def prepare(self, run_id: str, repo: str, issue: int, url: str, *, base_branch: str = ...,
                token: str | None = ..., fetch: bool = ..., fresh_after: float | None = ...,
                cancel: threading.Event | None = ...) -> Any: ...

    def commit(self, wt: Any, message: str | None = ..., *,
               cancel: threading.Event | None = ...) -> str | None: ...

    def head(self, wt: Any) -> str: ...

    def diff(self, wt: Any, *, cancel: threading.Event | None = ...) -> str: ...

    def changes(self, wt: Any, *, cancel: threading.Event | None = ...) -> Diff: ...

    def conflicts(self, wt: Any, *, url: str | None = ..., token: str | None = ...,
                  cancel: threading.Event | None = ...) -> list[str]: ...

    def push(self, wt: Any, url: str, *, token: str | None = ..., force: bool = ...,
             cancel: threading.Event | None = ...) -> str: ...

    def reset_to(self, wt: Any, sha: str) -> None: ...

    def open(self, run_id: str, repo: str, issue: int, *, base_branch: str = ...) -> Any: ...

    def remove(self, wt: Any) -> None: ...

    def remove_orphans(self, live_run_ids: Iterable[str]) -> list[str]: ...

    def list_worktrees(self) -> list[Any]: ...

    def fill_spare(self, repo: str, base_branch: str = ...) -> bool: ...

    def base_file(self, repo: str, url: str, base_branch: str, name: str, *,
                  token: str | None = ..., fresh_after: float | None = ...,
                  cancel: threading.Event | None = ...) -> str | None: ...

    def worktree_path(self, run_id: str) -> Path: ...

    def discard(self, run_id: str) -> None: ...


@dataclass
class Services:
    """The adapters the steps work through, wired by ``wiring.py`` from the configuration."""

    settings: Settings
    store: Store
    forges: dict[str, Forge]
    workspaces: Workspace
    sandboxes: SandboxBackend
    make_agent: Callable[[], Agent]
    gates: GatesConfig
    continuation_template: str
    review_client: Any = None  # an anthropic client for the reviewer; None: no AI review
    links: Callable[[Run], str] = field(default=lambda run: "")
    # The forges that deliver webhooks to this runner: a waiting run of theirs looks at the
    # forge only as a fallback, on the longest backoff.
    webhooks: frozenset[str] = frozenset()
    warm: WarmRefill | None = None
    clock: Clock = SYSTEM_CLOCK  # the steps' deadlines and waits go by it

    def spec(self, run_id: str, repo: str, issue: int, worktree: Path) -> SandboxSpec:
        """The sandbox a run gets, with the configured limits."""
        cfg, agent = self.settings.sandbox, self.settings.agent
        # A command agent reaches its model gateway through a channel into the sandbox.
        gateway = agent.kind == "command" and agent.gateway.enabled
        return SandboxSpec(run_id=run_id, repo=repo, issue=issue, worktree=worktree,
                           image=cfg.image, cpus=cfg.cpus, memory=cfg.memory, pids=cfg.pids,
                           network=cfg.network, runtime=cfg.runtime, gateway=gateway,
                           env=dict(cfg.env))


@dataclass
class RunContext:
    """One claimed run and what its steps carry between them while the claim lasts."""

    services: Services
    handle: RunHandle
    run: Run
    repo: RepoConfig
    forge: Forge
    gates: GatesConfig
    profile: Profile
    skip_gates: bool
    yolo_note: str
    status: StatusWriter
    worktree: Any = None
    sandbox: Sandbox | None = None
    warm: bool = False  # the run took a sandbox started ahead of it
    last_active: RunState = RunState.QUEUED  # for the checklist of a run that ended early
    comments: tuple[int, list[tuple[str, str]]] | None = None  # (iteration, writers' comments)

    @property
    def store(self) -> Store:
        return self.services.store

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def clock(self) -> Clock:
        return self.services.clock

    @property
    def fence(self) -> int:
        return self.handle.lease.token

    @property
    def token(self) -> str:
        """The forge token git uses, asked for at each use: a GitHub App's is renewed."""
        return self.forge.push_credentials(self.run.repo).token

    @property
    def details(self) -> RunDetails:
        return self.run.details

    # ------------------------------------------------------------ cancel

    def check_cancel(self) -> None:
        """Cancelled if a kill arrived or the lease was lost."""
        if self.handle.cancel.is_set():
            raise Cancelled()

    def before_write(self) -> None:
        """Before a forge write: no kill, and this process still owns the run (fencing).

        Only the store can say who owns the run: while it is out of reach (a runner cut off
        from it) the write waits for its answer, up to STORE_WAIT_S, rather than guess. A
        lease lost meanwhile refuses the write, with a ``write_refused`` audit event."""
        self.check_cancel()
        deadline = self.clock.monotonic() + STORE_WAIT_S
        while True:
            try:
                self.store.check_fence(self.run.id, self.fence)
                break
            except StoreUnavailable:
                if self.clock.monotonic() >= deadline:
                    raise
                # A kill ends the wait; a lost lease is told by the store's next answer.
                if self.handle.lease_lost:
                    self.clock.sleep(1.0)
                elif self.clock.wait(self.handle.cancel, 1.0) and self.handle.kill is not None:
                    raise Cancelled() from None
            except LeaseLost:
                self._refused_write()
                raise
        self.check_cancel()

    def _refused_write(self) -> None:
        """Audit a forge write this process was about to make for a run it no longer owns."""
        owner = None
        with contextlib.suppress(StoreError):
            owner = self.store.current_lease(self.run.id)
        log.warning("run %s: write refused, lease %d lost to %s", self.run.id, self.fence,
                    owner.worker if owner else "nobody")
        with contextlib.suppress(StoreError):
            self.event("write_refused", {
                "reason": "lease lost", "worker": self.handle.lease.worker,
                "fence": self.fence, "owner": owner.worker if owner else None,
                "owner_fence": owner.token if owner else None,
                "state": str(self.run.state)})

    # ------------------------------------------------------------ the record

    def move(self, target: RunState, reason: str = "", actor: str = "runner") -> None:
        """The run's next state, audited; the status comment follows."""
        self.check_cancel()
        self.run = self.store.transition(self.run.id, self.run.state, target, actor=actor,
                                         reason=reason, fence=self.fence)
        if not target.terminal:
            self.last_active = target
            self.show_status()

    def update(self, **fields: Any) -> None:
        """Change the run's fields (fenced: only while this process owns it)."""
        self.run = self.store.update_run(self.run.id, fence=self.fence, **fields)

    def note(self, **changes: Any) -> None:
        """Change the run's ``details``."""
        self.update(details=replace(self.run.details, **changes))

    def event(self, kind: str, data: dict[str, Any] | None = None, actor: str = "runner") -> None:
        """An audit event of the run, with credentials scrubbed from its data."""
        self.store.append_event(self.run.id, kind, redacted(data or {}), actor=actor)

    def show_status(self) -> None:
        """The status comment, rendered from the run as it is now (written in the background)."""
        self.status.update(render(self.run, last_active=self.last_active,
                                  max_iterations=self.settings.limits.max_iterations,
                                  skip_gates=self.skip_gates, yolo_note=self.yolo_note,
                                  link=self.services.links(self.run),
                                  trigger_label=self.settings.labels.trigger,
                                  kill_label=self.settings.labels.kill))

    # ------------------------------------------------------------ what the run holds

    def find_sandbox(self) -> Sandbox | None:
        """The run's container, if the engine knows one (None also when it cannot tell)."""
        try:
            return self.services.sandboxes.find(self.run.id)
        except SandboxError:
            return None

    def stop_sandbox(self) -> None:
        """Stop the run's container (SIGTERM, a short grace, SIGKILL)."""
        sandbox = self.sandbox or self.services.sandboxes.find(self.run.id)
        if sandbox is not None:
            sandbox.stop(grace=1.0)


def redacted(value: Any) -> Any:
    """Audit data with every credential-looking string hidden: what the agent types or
    prints may hold a secret it planted or found, and the audit log is shown on dashboards."""
    if isinstance(value, str):
        return redact_secrets(value)
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    return value
