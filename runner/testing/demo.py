"""A whole world on loopback: the forge emulator with a sample repository, the LLM emulator
with an agent that fixes its bug, and a wired runner receiving the forge's webhooks.

``orchestrator demo``, the end-to-end tests and the benchmarks all build this same world, so
what the demo shows is what the tests check.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner.clock import SYSTEM_CLOCK, Clock
from runner.config import Settings
from runner.model import Run, RunState
from runner.review import REVIEWER_MARKER
from runner.server import ServerHandle, serve_in_thread
from runner.store.base import Store
from runner.testing.demo_review import answering, review_round
from runner.testing.forge import Flavour, ForgeEmulator
from runner.testing.llm import LLMEmulator, Policy, Reply, Request, by_system, fix_failing_test

REPO = "acme/calculator"
MAINTAINER, READER, BOT = "alice", "mallory", "orchestrator-bot"
CI_CONTEXT = "ci/tests"
TEST_COMMAND = "python3 test_calc.py"

SAMPLE_FILES = {
    "README.md": "# calculator\n\nA tiny calculator. Run the tests with `python3 test_calc.py`.\n",
    "calc.py": (
        '"""A tiny calculator."""\n\n\n'
        "def add(a, b):\n"
        '    """The sum of a and b."""\n'
        "    return a - b\n\n\n"
        "def mul(a, b):\n"
        "    return a * b\n"
    ),
    "test_calc.py": (
        "from calc import add, mul\n\n"
        "assert mul(3, 4) == 12\n"
        "assert add(2, 3) == 5, f'add(2, 3) is {add(2, 3)}, expected 5'\n"
        "print('all tests pass')\n"
    ),
    "AGENTS.md": "Keep changes small. Run `python3 test_calc.py` before you finish.\n",
    ".gitignore": "__pycache__/\n",
}
BUG = ("calc.py", "    return a - b", "    return a + b")


def fixing_agent() -> Policy:
    """An agent that runs the tests, fixes ``add``, runs them again and finishes."""
    path, old, new = BUG
    return fix_failing_test(test_command=TEST_COMMAND, path=path, old=old, new=new,
                            summary="Fix add() to return the sum")


def approving_reviewer(request: Request) -> Reply:
    """A reviewer that approves with high confidence."""
    return Reply.text(json.dumps({"verdict": "approve", "confidence": 0.95,
                                  "summary": "add() now returns the sum; the test covers it.",
                                  "findings": []}))


def slow_agent(seconds: float = 120.0) -> Policy:
    """An agent whose first command runs for ``seconds`` in its container (to be killed)."""

    def policy(request: Request) -> Reply:
        if request.turn == 0:
            return Reply.bash(f"echo working; sleep {seconds:g}", "This will take a while.")
        return Reply.finish("done")

    return policy


class DemoWorld:
    """Emulators plus a runner, on loopback. Use as a context manager."""

    def __init__(self, workdir: str | Path, *, flavour: Flavour = "github",
                 agent: Policy | None = None, reviewer: Policy | None = None,
                 sandbox: str = "docker", settings: dict[str, Any] | None = None,
                 start_runner: bool = True, app_token_lifetime: float | None = None,
                 host: str = "127.0.0.1", clock: Clock = SYSTEM_CLOCK) -> None:
        self.workdir = Path(workdir)
        self.flavour: Flavour = flavour
        self.agent_policy = agent or fixing_agent()
        self.reviewer_policy = reviewer
        self.sandbox = sandbox
        self.overrides = settings or {}
        self.start_runner = start_runner
        self.clock = clock  # the in-process runner's (tests move a FakeClock forward)
        # GitHub only: the runner acts as a GitHub App whose tokens live this many seconds.
        self.app_token_lifetime = app_token_lifetime
        self.app: Any = None
        self.secret = secrets.token_hex(16)
        # ``host``: where the emulators listen; a Docker network's gateway address lets
        # runners in containers on that network reach them (tests/fleet).
        self.forge = ForgeEmulator(flavour, self.workdir / "forge", host=host)
        self.llm = LLMEmulator(by_system({REVIEWER_MARKER: reviewer or approving_reviewer},
                                         default=self.agent_policy), host=host)
        self.env: dict[str, str] = {}
        self.runner: Any = None
        self.server: ServerHandle | None = None
        self._loop: threading.Thread | None = None
        self._store: Store | None = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> DemoWorld:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> DemoWorld:
        self.forge.start()
        self.llm.start()
        forge = self.forge
        forge.add_user(MAINTAINER)
        forge.add_user(READER)
        bot = forge.add_user(BOT)
        forge.create_repo(REPO, files=SAMPLE_FILES)
        forge.grant(REPO, MAINTAINER, "write")
        forge.grant(REPO, READER, "read")
        forge.grant(REPO, BOT, "admin")
        forge.configure_ci(REPO, TEST_COMMAND, context=CI_CONTEXT)
        self.env = {"DEMO_FORGE_TOKEN": bot.token, "DEMO_WEBHOOK_SECRET": self.secret,
                    "DEMO_LLM_KEY": self.llm.api_key, "DEMO_API_TOKEN": secrets.token_hex(8)}
        if self.app_token_lifetime is not None:
            self.app = forge.add_app("orchestrator", owner=MAINTAINER,
                                     token_lifetime=self.app_token_lifetime)
            forge.install_app(self.app, REPO)
            self.env["DEMO_APP_KEY"] = self.app.private_key_pem
        os.environ.update(self.env)
        if self.start_runner:
            self.start_runner_process()
        return self

    def settings_dict(self) -> dict[str, Any]:
        """The configuration of the runner in this world (what orchestrator.yml would say)."""
        data: dict[str, Any] = {
            "data_dir": str(self.workdir / "data"),
            "forges": {"demo": {"kind": self.flavour, "base_url": self.forge.base_url,
                                "token_env": "DEMO_FORGE_TOKEN",
                                "webhook_secret_env": "DEMO_WEBHOOK_SECRET",
                                "bot_user": BOT}},
            **({"forges": {"demo": {
                "kind": "github", "base_url": self.forge.base_url,
                "app": {"app_id": self.app.id, "private_key_env": "DEMO_APP_KEY"},
                "webhook_secret_env": "DEMO_WEBHOOK_SECRET"}}} if self.app else {}),
            "repos": [{"name": REPO, "forge": "demo", "base_branch": "main",
                       "gate_profile": "demo", "required_contexts": [CI_CONTEXT]}],
            "agent": {"base_url": self.llm.base_url, "api_key_env": "DEMO_LLM_KEY",
                      "max_turns": 20},
            "sandbox": {"backend": self.sandbox, "cpus": 1, "memory": "512m", "pids": 256},
            "store": {"sqlite": str(self.workdir / "state.db")},
            "server": {"host": "127.0.0.1", "port": 0, "api_token_env": "DEMO_API_TOKEN"},
            "limits": {"max_concurrent": 4, "per_repo": 4, "max_iterations": 3,
                       "poll_interval": "30s", "lease_ttl": "5s", "ci_timeout": "120s"},
            "review": {"enabled": True},
        }
        for section, values in self.overrides.items():
            if isinstance(values, dict) and isinstance(data.get(section), dict):
                data[section] = {**data[section], **values}
            else:
                data[section] = values
        return data

    def start_runner_process(self, *, loop: bool = True) -> None:
        """Wire and start the runner in this process: HTTP server and (unless ``loop`` is
        False: ``start_loop`` later, as a runner slow to look) the controller."""
        from runner.wiring import build

        settings = Settings.model_validate(self.settings_dict())
        self.runner = build(settings, worker="demo-runner", serving=True, clock=self.clock)
        self.server = serve_in_thread(self.runner, "127.0.0.1", 0)
        self.forge.add_webhook(REPO, f"{self.server.url}/webhooks/{self.flavour}", self.secret)
        if loop:
            self.start_loop()

    def start_loop(self) -> None:
        """Start the controller of a runner started with ``loop=False``: it looks at what the
        webhooks queued meanwhile, and at every labelled issue."""
        self._loop = threading.Thread(target=self.runner.controller.run,
                                      name="orchestrator-controller", daemon=True)
        self._loop.start()

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.controller.stop()
        if self.server is not None:
            self.server.stop()
        self.llm.stop()
        self.forge.stop()
        for name in self.env:
            os.environ.pop(name, None)

    # ------------------------------------------------------------ acting and waiting

    def open_issue(self, title: str = "add() returns the wrong result",
                   body: str = "`add(2, 3)` returns -1. It should return 5; see test_calc.py.",
                   *, label: bool = True) -> int:
        """Open an issue as the maintainer and (by default) label it ``orchestrator``."""
        number = self.forge.open_issue(REPO, title, body, as_user=MAINTAINER)
        if label:
            self.forge.label(REPO, number, "orchestrator", as_user=MAINTAINER)
        return number

    @property
    def store(self) -> Store:
        """The runner's store: the in-process runner's, or one opened on its configuration
        (when the runner is a separate `serve` process)."""
        if self.runner is not None:
            store: Store = self.runner.store
            return store
        if self._store is None:
            from runner.store import open_store

            self._store = open_store(Settings.model_validate(self.settings_dict()))
        return self._store

    def run_for(self, issue: int) -> Run | None:
        return self.store.latest_run(REPO, issue)

    def wait_for(self, what: Callable[[], Any], timeout: float = 120.0,
                 message: str = "condition") -> Any:
        """Poll ``what`` until it returns something truthy; TimeoutError naming ``message``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = what()
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{message} not reached within {timeout:.0f}s")

    def wait_finished(self, issue: int, timeout: float = 180.0) -> Run:
        """The issue's run once it has ended and cleaned up after itself."""
        run = self.wait_state(issue, RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED,
                              timeout=timeout)
        self.wait_for(lambda: any(e.kind == "cleaned_up" for e in
                                  self.store.events(run.id, limit=10000)),
                      30, f"cleanup of run {run.id}")
        return self.run_for(issue) or run

    def write_config(self, path: Path, **overrides: Any) -> Path:
        """This world's runner configuration as an orchestrator.yml (for `serve` processes)."""
        import yaml

        data = self.settings_dict()
        for section, values in overrides.items():
            data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) \
                else values
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def wait_state(self, issue: int, *states: RunState, timeout: float = 180.0) -> Run:
        """The issue's run once it is in one of ``states``."""
        def reached() -> Run | None:
            run = self.run_for(issue)
            return run if run is not None and run.state in states else None

        try:
            found: Run = self.wait_for(reached, timeout, f"run of #{issue} in {states}")
            return found
        except TimeoutError:
            run = self.run_for(issue)
            events = self.store.events(run.id, limit=1000) if run else []
            tail = "\n".join(f"  {e.kind} {e.data}" for e in events[-15:])
            raise TimeoutError(f"run of #{issue} is {run.state if run else 'absent'}, not "
                               f"{[str(s) for s in states]}; last events:\n{tail}") from None


# ---------------------------------------------------------------- `orchestrator demo`

SLOW_TITLE = "Speed up the calculator"


def demo_agent() -> Policy:
    """Fixes the bug of issue 1; works on issue 2 long enough to be killed."""
    fixing, slow = fixing_agent(), slow_agent(300)

    def policy(request: Request) -> Reply:
        return slow(request) if SLOW_TITLE in request.first_user_text() else fixing(request)

    return policy


def demo_settings(*, real_llm: bool = False) -> dict[str, Any]:
    """The demo's runner settings over a ``DemoWorld``'s: a review's comments gathered for
    one second before its follow-up starts (and the real Anthropic API with ``real_llm``)."""
    overrides: dict[str, Any] = {"limits": {"follow_up_quiet": "1s"}}
    if real_llm:
        overrides["agent"] = {"base_url": None, "api_key_env": "ANTHROPIC_API_KEY"}
    return overrides


def run_demo(workdir: Path, *, flavour: Flavour = "github", real_llm: bool = False,
             say: Callable[[str], None] = print, agent: Policy | None = None,
             reviewer: Policy | None = None,
             keep: Callable[[DemoWorld], None] | None = None) -> bool:
    """The whole flow on loopback: issue 1 becomes a green PR, issue 2 is killed mid-run.

    Returns True when both outcomes are as expected. ``agent`` must answer the review round
    (as ``answering`` does). ``keep`` (``demo --keep``) is called with the world still up
    after the story, which ends when it returns.
    """
    world = DemoWorld(workdir, flavour=flavour, agent=agent or answering(demo_agent()),
                      reviewer=reviewer, settings=demo_settings(real_llm=real_llm))
    started = time.monotonic()

    def stamp() -> str:
        return f"[{time.monotonic() - started:6.1f}s]"

    with world:
        say(f"{stamp()} forge emulator ({flavour}) at {world.forge.url}, repository {REPO}")
        say(f"{stamp()} LLM: {'the real Anthropic API' if real_llm else world.llm.base_url}")
        assert world.server is not None
        say(f"{stamp()} runner listening at {world.server.url}, webhooks from the forge")
        first = world.open_issue()
        say(f"{stamp()} {MAINTAINER} opened #{first} and labelled it `orchestrator`")
        seen: set[RunState] = set()

        def progress(issue: int) -> Run | None:
            run = world.run_for(issue)
            if run is not None and run.state not in seen:
                seen.add(run.state)
                say(f"{stamp()} #{issue} {run.id}: {run.state}"
                    + (f" (PR {run.pr_url})" if run.pr_url and run.state is RunState.GATING
                       else ""))
            return run if run is not None and run.terminal else None

        world.wait_for(lambda: progress(first), 300, f"the run of #{first}")
        done = world.wait_finished(first)
        answered = review_round(world, first, done, say, stamp, MAINTAINER) \
            if done.state is RunState.SUCCEEDED else None
        seen.clear()
        second = world.open_issue(SLOW_TITLE, "Make add() and mul() faster.")
        say(f"{stamp()} {MAINTAINER} opened #{second} and labelled it `orchestrator`")
        def working() -> bool:
            progress(second)
            run = world.run_for(second)
            return run is not None and any(e.kind == "agent.turn" for e in
                                           world.store.events(run.id, limit=1000))

        world.wait_for(working, 120, f"the agent working on #{second}")
        kill_at = time.monotonic()
        world.forge.comment(REPO, second, "/kill this is taking too long", as_user=MAINTAINER)
        say(f"{stamp()} {MAINTAINER} commented `/kill this is taking too long` on #{second}")
        world.wait_for(lambda: progress(second), 60, f"the kill of #{second}")
        kill_s = time.monotonic() - kill_at
        killed = world.wait_finished(second)
        ok = done.state is RunState.SUCCEEDED and killed.state is RunState.CANCELLED and \
            answered is not None and answered.state is RunState.SUCCEEDED
        say("")
        say("What happened:")
        say(f"  #{first}: {done.state} in iteration {done.iteration}; pull request {done.pr_url}"
            f" (CI green, AI review approved); cost ${done.cost_usd:.4f}")
        if answered is not None:
            say(f"  #{first}: review round: follow-up {answered.id} {answered.state}, "
                f"commit {answered.head_sha[:12]} answers the review on the same PR")
        say(f"  #{second}: {killed.state} by @{killed.killed_by} ({killed.reason}) "
            f"{kill_s:.1f}s after the comment; container and worktree removed")
        say("")
        say("Where to look:")
        say(f"  audit log:  orchestrator -c {world.write_config(workdir / 'orchestrator.yml')} "
            f"logs {done.id}")
        say(f"  all runs:   orchestrator -c {workdir / 'orchestrator.yml'} runs")
        say(f"  the files:  {workdir} (forge repositories, mirror, store)")
        if keep is not None:
            keep(world)
        return ok
