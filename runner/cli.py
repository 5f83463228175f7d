"""The ``orchestrator`` command line: wires adapters to the core from the configuration."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runner import __version__, config
from runner.model import ACTIVE, RunState, is_run_id
from runner.store import open_store
from runner.store.base import Store, StoreError
from runner.store.base import kill_all as kill_every_run
from runner.witness import Witnesses

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line the user can act on and exit, without a traceback."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


@dataclass
class Context:
    config_path: str | None

    def settings(self, *, require_secrets: bool = False) -> config.Settings:
        try:
            return config.load(self.config_path, require_secrets=require_secrets)
        except config.ConfigError as exc:
            fail(str(exc), exc.exit_code)

    def store(self) -> Store:
        try:
            store = open_store(self.settings())
            store.ping()
            return store
        except StoreError as exc:
            fail(str(exc))


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="orchestrator")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              envvar=config.ENV_FILE, help="orchestrator.yml to use [default: ./orchestrator.yml]")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Turn labelled issues into gated pull requests, built by an AI agent in a sandbox."""
    ctx.obj = Context(config_path)


# ------------------------------------------------------------------ config


@cli.group("config")
def config_group() -> None:
    """Check the configuration, or print its JSON Schema."""


@config_group.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@pass_ctx
def config_check(ctx: Context, file: str | None) -> None:
    """Validate FILE (default: the configuration in use), secrets included."""
    path = file or ctx.config_path
    try:
        settings = config.load(path)
    except config.ConfigError as exc:
        fail(str(exc), exc.exit_code)
    where = config.find_config_file(path) or "(defaults)"
    console.print(f"[green]OK[/] {where}: {len(settings.forges)} forge(s), "
                  f"{len(settings.repos)} repo(s), store "
                  f"{'redis' if settings.store.redis else 'sqlite'}, "
                  f"sandbox {settings.sandbox.backend}", highlight=False, soft_wrap=True)


@config_group.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of orchestrator.yml (for editor completion)."""
    click.echo(json.dumps(config.json_schema(), indent=2))


# ------------------------------------------------------------------ runs


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


_STATE_STYLE = {RunState.SUCCEEDED: "green", RunState.FAILED: "red",
                RunState.CANCELLED: "yellow"}


@cli.command("runs")
@click.option("--state", "states", multiple=True,
              type=click.Choice([s.value for s in RunState] + ["active"]),
              help="only runs in this state (repeatable; 'active' = not finished)")
@click.option("--repo", help="only runs of owner/name")
@click.option("-n", "--limit", default=30, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@pass_ctx
def runs_cmd(ctx: Context, states: tuple[str, ...], repo: str | None, limit: int,
             as_json: bool) -> None:
    """List runs, newest first."""
    wanted: set[RunState] | None = None
    if states:
        wanted = set()
        for s in states:
            wanted |= set(ACTIVE) if s == "active" else {RunState(s)}
    store = ctx.store()
    runs = store.list_runs(states=wanted, repo=repo, limit=limit)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        return
    if not runs:
        console.print("no runs yet (label an issue, or try `scripts/demo`)")
        return
    table = Table(box=None, header_style="bold")
    for column in ("RUN", "STATE", "ISSUE", "ITER", "PR", "COST", "AGE", "OWNER", "REASON"):
        table.add_column(column)
    now = time.time()
    for run in runs:
        lease = None if run.terminal else store.current_lease(run.id)
        style = _STATE_STYLE.get(run.state, "cyan")
        table.add_row(run.id, f"[{style}]{run.state}[/]", f"{run.repo}#{run.issue}",
                      str(run.iteration), run.pr_url or (f"#{run.pr_number}" if run.pr_number
                                                         else "-"),
                      f"${run.cost_usd:.2f}", _age(now - run.created_at),
                      lease.worker if lease else "-", run.reason[:60])
    console.print(table)
    from runner.run.spending import spend_today  # the steps' imports only for this command

    for line in spend_today(store, ctx.settings()).lines():
        console.print(line, markup=False)


@cli.command("kill")
@click.argument("run_id", required=False)
@click.option("--all", "kill_all", is_flag=True,
              help="kill every active run and pause dispatch until `orchestrator resume`")
@click.option("-r", "--reason", default="killed from the command line", show_default=True)
@click.option("--actor", default=lambda: f"cli:{os.environ.get('USER', 'unknown')}",
              help="who to record as the killer [default: cli:$USER]")
@pass_ctx
def kill_cmd(ctx: Context, run_id: str | None, kill_all: bool, reason: str, actor: str) -> None:
    """Stop RUN_ID (or --all); the process that owns it stops the agent and cleans up."""
    if bool(run_id) == kill_all:
        fail("give one RUN_ID or --all (see `orchestrator runs`)", 2)
    store = ctx.store()
    if kill_all:
        killed = kill_every_run(store, actor=actor, reason=reason)
        console.print(f"kill requested for {len(killed)} run(s); dispatch paused until "
                      "`orchestrator resume`")
        return
    assert run_id is not None
    if not is_run_id(run_id):
        fail(f"{run_id!r} is not a run id (ids look like r-1a2b3c4d5e6f; see `orchestrator runs`)",
             2)
    try:
        store.request_kill(run_id, actor=actor, reason=reason)
    except StoreError as exc:
        fail(str(exc))
    console.print(f"kill requested for {run_id}: {reason}")


@cli.command("resume")
@click.option("--actor", default=lambda: f"cli:{os.environ.get('USER', 'unknown')}")
@pass_ctx
def resume_cmd(ctx: Context, actor: str) -> None:
    """Resume dispatch after `orchestrator kill --all`."""
    store = ctx.store()
    was = store.paused()
    store.resume(actor=actor)
    console.print("dispatch resumed" if was else "dispatch was not paused; nothing to do")


# ------------------------------------------------------------------ doctor


@dataclass
class Check:
    name: str
    required: bool
    run: Callable[[], str]  # returns a detail line; raises DoctorFail(fix)


class DoctorFail(Exception):
    pass


def _doctor_checks(ctx: Context) -> list[Check]:
    state: dict[str, Any] = {}

    def python() -> str:
        # The package refuses older Pythons at install; this names the one in use.
        return f"Python {platform.python_version()} ({sys.executable})"

    def settings() -> str:
        try:
            state["settings"] = config.load(ctx.config_path)
        except config.ConfigError as exc:
            raise DoctorFail(f"{exc} (then run `orchestrator config check`)") from None
        return str(config.find_config_file(ctx.config_path) or "no file: defaults")

    def store() -> str:
        s = state.get("settings") or config.load(ctx.config_path, require_secrets=False)
        try:
            open_store(s).ping()
        except StoreError as exc:
            raise DoctorFail(str(exc)) from None
        return f"redis {s.store.redis}" if s.store.redis else f"sqlite {s.store.sqlite}"

    def docker_engine() -> str:
        import docker  # only here: the other checks must work without an engine

        try:
            client = docker.from_env(timeout=5)
            version = client.version().get("Version", "?")
            state["docker"] = client
        except Exception as exc:
            raise DoctorFail(f"no Docker engine answers ({type(exc).__name__}): start dockerd, "
                             "set DOCKER_HOST, or set sandbox.backend: local") from None
        return f"engine {version}"

    def image() -> str:
        s = state.get("settings") or config.load(ctx.config_path, require_secrets=False)
        client = state.get("docker")
        if client is None:
            raise DoctorFail("needs the Docker engine (see above)")
        try:
            client.images.get(s.sandbox.image)
        except Exception:
            raise DoctorFail(f"image {s.sandbox.image} is missing: run "
                             "scripts/build-sandbox-image") from None
        return s.sandbox.image

    from runner.forge.app_doctor import app_checks  # PyGithub only when the doctor runs

    def runtime() -> str:
        s = state.get("settings") or config.load(ctx.config_path, require_secrets=False)
        client = state.get("docker")
        if client is None:
            raise DoctorFail("needs the Docker engine (see above)")
        return runtime_status(client, s.sandbox.runtime)

    apps: list[Check] = []
    try:
        loaded = config.load(ctx.config_path, require_secrets=False)
        uses_docker = loaded.sandbox.backend == "docker"
        wants_runtime = uses_docker and loaded.sandbox.runtime is not None
        apps = [Check(c.name, True, c.run) for c in app_checks(loaded)]
    except config.ConfigError:
        uses_docker, wants_runtime = True, False
    return [
        Check("python", True, python),
        Check("config", True, settings),
        Check("store", True, store),
        Check("docker", uses_docker, docker_engine),
        Check("sandbox image", uses_docker, image),
        Check("runtime", wants_runtime, runtime),
        *apps,
    ]


def runtime_status(client: Any, wanted: str | None) -> str:
    """Whether the engine has the sandbox's runtime (``sandbox.runtime``); DoctorFail with the
    fix when a configured one is missing. Without one configured, says if gVisor could be."""
    runtimes = sorted((client.info().get("Runtimes") or {}).keys())
    if wanted is None:
        gvisor = "runsc (gVisor) is available: sandbox.runtime: runsc" if "runsc" in runtimes \
            else "runsc (gVisor) is not registered: scripts/register-runsc"
        return f"the engine's default; {gvisor}"
    if wanted not in runtimes:
        raise DoctorFail(f"sandbox.runtime is {wanted!r} but the engine has only "
                         f"{', '.join(runtimes) or 'its default'}: "
                         + ("run scripts/register-runsc as root (installs runsc and adds it "
                            "to /etc/docker/daemon.json)" if wanted == "runsc" else
                            f"register {wanted} in /etc/docker/daemon.json")
                         + ", or unset sandbox.runtime")
    return f"{wanted} ({'gVisor' if wanted == 'runsc' else 'registered'})"


@cli.command("doctor")
@pass_ctx
def doctor_cmd(ctx: Context) -> None:
    """Check that everything the runner needs is here; one line per check with the fix."""
    from runner.forge.app_doctor import AppProblem

    failed_required = False
    for check in _doctor_checks(ctx):
        try:
            detail = check.run()
            console.print(f"[green]OK  [/] {escape(check.name):<14} {escape(detail)}",
                          highlight=False, soft_wrap=True)  # one line, [bot] not markup
        except (DoctorFail, config.ConfigError, AppProblem) as exc:
            tag = "FAIL" if check.required else "WARN"
            color = "red" if check.required else "yellow"
            console.print(f"[{color}]{tag}[/] {escape(check.name):<14} {escape(str(exc))}",
                          highlight=False,
                          soft_wrap=True)
            failed_required |= check.required
    sys.exit(1 if failed_required else 0)


# ------------------------------------------------------------------ serve, run, logs


def _setup_logging(verbose: bool) -> None:
    import logging

    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        datefmt="[%X]", handlers=[RichHandler(console=err_console,
                                                               show_path=False)])
    for noisy in ("httpx", "urllib3", "docker", "github", "anthropic", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _build(ctx: Context, **kw: Any) -> Any:
    """The wired runner, or a one-line error naming what to fix."""
    from runner import wiring

    settings = ctx.settings(require_secrets=True)
    try:
        return wiring.build(settings, **kw)
    except (wiring.WiringError, StoreError) as exc:
        fail(str(exc))
    except Exception as exc:  # an adapter refusing its configuration
        fail(f"cannot start: {type(exc).__name__}: {exc}")


@cli.command("serve")
@click.option("--host", help="listen address [default: server.host]")
@click.option("--port", type=int, help="listen port [default: server.port]")
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
@pass_ctx
def serve_cmd(ctx: Context, host: str | None, port: int | None, verbose: bool) -> None:
    """Receive webhooks, poll the forges, and work on runs until SIGTERM.

    On SIGTERM or Ctrl-C it stops taking work; runs in flight stay resumable by this or
    another process sharing the store.
    """
    import signal
    import threading

    from runner.server import serve_in_thread

    _setup_logging(verbose)
    runner = _build(ctx, serving=True)
    settings = runner.settings
    server = serve_in_thread(runner, host or settings.server.host,
                             settings.server.port if port is None else port)
    console.print(f"orchestrator {__version__} serving on http://{server.host}:{server.port} "
                  f"as {runner.controller.worker_id}; store "
                  f"{'redis' if settings.store.redis else settings.store.sqlite}", highlight=False)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        runner.controller.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    loop = threading.Thread(target=runner.controller.run, name="orchestrator-controller",
                            daemon=True)
    loop.start()
    while not stop.wait(0.5):
        if not loop.is_alive():
            fail("the controller stopped unexpectedly; see the log above")
    console.print("stopping: no new work is taken; runs in flight stay resumable")
    runner.controller.stop()
    server.stop()


def _parse_issue_ref(ref: str) -> tuple[str, int]:
    repo, sep, number = ref.partition("#")
    if not sep or "/" not in repo or not number.isdigit():
        fail(f"{ref!r} is not OWNER/REPO#NUMBER (e.g. acme/widgets#12)", 2)
    return repo, int(number)


@cli.command("run")
@click.argument("ref", metavar="OWNER/REPO#N")
@click.option("-v", "--verbose", is_flag=True)
@pass_ctx
def run_cmd(ctx: Context, ref: str, verbose: bool) -> None:
    """Work on one issue in the foreground (no label needed), showing progress."""
    repo, number = _parse_issue_ref(ref)
    _setup_logging(verbose)
    runner = _build(ctx)
    try:
        runner.settings.repo(repo)
    except KeyError:
        fail(f"{repo} is not under `repos` in the configuration; add it first", 2)
    forge = runner.forges[runner.settings.repo(repo).forge]
    from runner.run_creation import create_run_for_issue
    from runner.text import UnreadableText

    actor = f"cli:{os.environ.get('USER', 'unknown')}"
    try:
        run, created = create_run_for_issue(runner.store, forge, repo, number, actor=actor,
                                            priority=runner.settings.repo(repo).priority)
    except UnreadableText as exc:
        fail(f"{ref}: {exc}", 2)
    if not created:
        console.print(f"{ref} already has run {run.id} ({run.state}); following it")
    import threading

    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(
        runner.controller.drive_in_foreground(run.id)), daemon=True)
    worker.start()
    seen = 0
    while worker.is_alive():  # progress: the run's audit events as they happen
        seen = _follow(runner.store, run.id, until_terminal=False, already=seen)
        worker.join(0.5)
    _follow(runner.store, run.id, until_terminal=False, already=seen)
    ended = bool(result and result[0])
    final = runner.store.get_run(run.id)
    console.print(f"run {final.id}: [bold]{final.state}[/] {final.reason}"
                  + (f" {final.pr_url}" if final.pr_url else ""), highlight=False)
    sys.exit(0 if ended and final.state is RunState.SUCCEEDED else 1)


def _print_event(event: Any) -> None:
    when = time.strftime("%H:%M:%S", time.localtime(event.at))
    data = event.data
    if event.kind == "transition":
        text = f"{data.get('from')} -> [bold]{data.get('to')}[/] {data.get('reason', '')}"
    else:
        text = " ".join(f"{k}={str(v)[:120]}" for k, v in data.items())
    console.print(f"{when} {event.seq:>4} {event.actor:<14} {event.kind:<16} {text}",
                  highlight=False, soft_wrap=True)


def _follow(store: Store, run_id: str, *, until_terminal: bool, already: int) -> int:
    seen = already
    while True:
        for event in store.events(run_id, after=seen, limit=500):
            _print_event(event)
            seen = event.seq
        if not until_terminal or store.get_run(run_id).terminal:
            for event in store.events(run_id, after=seen, limit=500):
                _print_event(event)
                seen = event.seq
            return seen
        time.sleep(0.5)


@cli.command("logs")
@click.argument("run_id")
@click.option("-f", "--follow", is_flag=True, help="keep printing until the run ends")
@pass_ctx
def logs_cmd(ctx: Context, run_id: str, follow: bool) -> None:
    """Print a run's audit events (model turns, tool calls, gates, transitions, kills)."""
    store = ctx.store()
    try:
        store.get_run(run_id)
    except StoreError as exc:
        fail(str(exc))
    _follow(store, run_id, until_terminal=follow, already=0)


@cli.command("handle-event")
@click.option("--event-name", required=True, envvar=["GITHUB_EVENT_NAME"],
              help="issues, issue_comment, ... [default: $GITHUB_EVENT_NAME]")
@click.option("--event-file", required=True, type=click.Path(exists=True, dir_okay=False),
              envvar=["GITHUB_EVENT_PATH"], help="the event payload [default: $GITHUB_EVENT_PATH]")
@click.option("-v", "--verbose", is_flag=True)
@pass_ctx
def handle_event_cmd(ctx: Context, event_name: str, event_file: str, verbose: bool) -> None:
    """Handle one forge event inside a Forgejo or GitHub Actions job.

    A triggered issue runs to the end inside the job; meanwhile the issue is checked for kill
    signals every few seconds. A /kill or an unlabel only needs this to look at the issue.
    """
    try:
        payload = json.loads(Path(event_file).read_text(encoding="utf-8"))
        repo = payload["repository"]["full_name"]
        number = int(payload["issue"]["number"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        fail(f"{event_file}: not an issue event payload ({type(exc).__name__}: {exc}); "
             "dispatch only issues and issue_comment events to handle-event", 2)
    if event_name not in ("issues", "issue_comment"):
        console.print(f"ignoring {event_name} event: only issues and issue_comment matter")
        return
    _setup_logging(verbose)
    runner = _build(ctx)
    if event_name == "issues":  # the job's own event record: what the trigger saw
        _witness(runner.controller.witnesses, repo, number, payload)
    outcome = runner.controller.handle_one(
        repo, number, trigger_event=_adds_trigger_label(event_name, payload,
                                                        runner.settings.labels.trigger))
    console.print(outcome, highlight=False)


def _witness(witnesses: Witnesses, repo: str, number: int, payload: dict[str, Any]) -> None:
    """Remember who acted on the issue in this event and the text it had then."""
    sender, issue = payload.get("sender"), payload.get("issue")
    if isinstance(sender, dict) and isinstance(issue, dict):
        witnesses.saw(repo, number, str(sender.get("login") or ""),
                      str(payload.get("action") or ""), str(issue.get("title") or ""),
                      str(issue.get("body") or ""))


def _adds_trigger_label(event_name: str, payload: dict[str, Any], trigger: str) -> bool | None:
    """Whether the event is the trigger label being added; None when the payload cannot
    tell (Forgejo's label_updated is sent for additions and removals, often unnamed)."""
    action = payload.get("action")
    if event_name != "issues" or action not in ("labeled", "label_updated"):
        return False
    label = payload.get("label")
    name = label.get("name") if isinstance(label, dict) else None
    if action == "labeled" and name:
        return str(name).lower() == trigger.lower()
    return None


# ------------------------------------------------------------------ demo


@cli.command("demo")
@click.option("--forge", "flavour", type=click.Choice(["github", "forgejo"]), default="github",
              show_default=True, help="which forge the emulator plays")
@click.option("--real-llm", is_flag=True,
              help="use the real Anthropic API ($ANTHROPIC_API_KEY) instead of the emulator")
@click.option("--dir", "workdir", type=click.Path(file_okay=False),
              help="where to keep the demo's files [default: a new temporary folder]")
@click.option("-v", "--verbose", is_flag=True, help="show the runner's log")
def demo_cmd(flavour: str, real_llm: bool, workdir: str | None, verbose: bool) -> None:
    """Show the whole flow on this machine, no account or key needed.

    A forge emulator with a sample repository (a bug and a failing test, CI running the
    tests), an LLM emulator playing the agent, the runner with the embedded store and the
    Docker sandbox: issue 1 becomes a green pull request, issue 2 is killed mid-run.
    """
    import tempfile

    from runner.testing.demo import run_demo

    if real_llm and not os.environ.get("ANTHROPIC_API_KEY"):
        fail("--real-llm needs ANTHROPIC_API_KEY in the environment", 2)
    if verbose:
        _setup_logging(False)
    folder = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="orchestrator-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        ok = run_demo(folder, flavour=flavour, real_llm=real_llm,  # type: ignore[arg-type]
                      say=lambda line: console.print(line, highlight=False, soft_wrap=True))
    except TimeoutError as exc:
        fail(f"the demo stalled: {exc}")
    except Exception as exc:
        fail(f"the demo could not run: {type(exc).__name__}: {exc} (try `orchestrator doctor`)")
    if not ok:
        fail("the demo did not end as expected; see above")
    console.print("[green]demo passed[/]")


# ------------------------------------------------------------------ init


@cli.command("init")
@click.argument("path", default=".", type=click.Path(file_okay=False))
@click.option("--forge", "kind", type=click.Choice(["github", "forgejo"]),
              help="which forge the repository is on [default: from its .github/.forgejo]")
@click.option("--force", is_flag=True, help="overwrite files that already exist")
@click.option("--webhook-url", help="the runner's public URL, for the webhook step")
@click.option("--package", help="what the workflows install: git+https://HOST/OWNER/REPO@<commit> "
              "[default: the commit this orchestrator was installed from]")
def init_cmd(path: str, kind: str | None, force: bool, webhook_url: str | None,
             package: str | None) -> None:
    """Write the gate and dispatch workflows and gates.yml into the checkout at PATH."""
    from runner import init as init_mod

    try:
        result = init_mod.init_repo(path, kind, force=force, webhook_url=webhook_url,
                                    package=package)
    except init_mod.InitError as exc:
        fail(str(exc), 2)
    for written in result.written:
        console.print(f"[green]wrote[/] {written}", highlight=False)
    console.print(f"\n[bold]Left to do by hand ({result.kind}):[/]")
    for number, step in enumerate(result.steps, start=1):
        console.print(f"{number}. {step}", highlight=False)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="orchestrator")


if __name__ == "__main__":
    main()
