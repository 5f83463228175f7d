"""The ``orchestrator`` command line: wires adapters to the core from the configuration."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape

from runner import __version__, cli_output, config
from runner.model import ACTIVE, RunState, is_run_id
from runner.store import open_store
from runner.store.base import Store, StoreError
from runner.store.base import kill_all as kill_every_run

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
    wanted = {x for s in states for x in (ACTIVE if s == "active" else {RunState(s)})} or None
    store = ctx.store()
    runs = store.list_runs(states=wanted, repo=repo, limit=limit)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        return
    if not runs:
        console.print("no runs yet (label an issue, or try `scripts/demo`)")
        return
    for line in cli_output.runs_table(runs, cli_output.owners(store, runs), console.width):
        console.print(line, highlight=False, soft_wrap=True)
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
    assert run_id is not None  # set on every path that reaches here  # noqa: S101
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


@cli.command("doctor")
@pass_ctx
def doctor_cmd(ctx: Context) -> None:
    """Check that everything the runner needs is here; one line per check with the fix."""
    from runner.doctor import DoctorFail, doctor_checks
    from runner.forge.app_doctor import AppProblem

    failed_required = False
    for check in doctor_checks(ctx.config_path):
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
    cli_output.setup_logging(err_console, verbose)


def _build(ctx: Context, **kw: Any) -> Any:
    """The wired runner, or a one-line error naming what to fix."""
    from runner import wiring

    settings = ctx.settings(require_secrets=True)
    try:
        return wiring.build(settings, **kw)
    except (wiring.WiringError, StoreError) as exc:
        fail(str(exc))
    except Exception as exc:  # an adapter refusing its configuration  # noqa: BLE001
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
@click.option("-v", "--verbose", is_flag=True, help="debug logging and every tool's output")
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
    progress, seen = cli_output.Progress(console, full=verbose), 0
    while worker.is_alive():  # progress: the run's audit events as they happen
        seen = cli_output.follow(runner.store, run.id, progress, until_terminal=False,
                                 already=seen)
        worker.join(0.5)
    cli_output.follow(runner.store, run.id, progress, until_terminal=False, already=seen)
    ended = bool(result and result[0])
    final = runner.store.get_run(run.id)
    console.print(f"run {final.id}: [bold]{final.state}[/] {final.reason}"
                  + (f" {final.pr_url}" if final.pr_url else ""), highlight=False)
    sys.exit(0 if ended and final.state is RunState.SUCCEEDED else 1)


@cli.command("logs")
@click.argument("run_id")
@click.option("-f", "--follow", is_flag=True, help="keep printing until the run ends")
@click.option("--full", is_flag=True, help="every tool's whole output and every change")
@pass_ctx
def logs_cmd(ctx: Context, run_id: str, follow: bool, full: bool) -> None:
    """Print a run's audit events (model turns, tool calls, gates, transitions, kills)."""
    store = ctx.store()
    try:
        store.get_run(run_id)
    except StoreError as exc:
        fail(str(exc))
    cli_output.follow(store, run_id, cli_output.Progress(console, full=full),
                      until_terminal=follow, already=0)


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
    if isinstance(payload["issue"], dict) and payload["issue"].get("pull_request"):
        # A PR's number is no issue's: PR commands need `orchestrator serve` (webhooks).
        console.print("ignoring a comment on a pull request: `serve` handles pull requests")
        return
    from runner.event_payload import adds_trigger_label, witness_event

    _setup_logging(verbose)
    runner = _build(ctx)
    if event_name == "issues":  # the job's own event record: what the trigger saw
        witness_event(runner.controller.witnesses, repo, number, payload)
    outcome = runner.controller.handle_one(
        repo, number, trigger_event=adds_trigger_label(event_name, payload,
                                                       runner.settings.labels.trigger))
    console.print(outcome, highlight=False)


# ------------------------------------------------------------------ demo


@cli.command("demo")
@click.option("--forge", "flavour", type=click.Choice(["github", "forgejo"]), default="github",
              show_default=True, help="which forge the emulator plays")
@click.option("--real-llm", is_flag=True,
              help="use the real Anthropic API ($ANTHROPIC_API_KEY) instead of the emulator")
@click.option("--dir", "workdir", type=click.Path(file_okay=False),
              help="where to keep the demo's files [default: a new temporary folder]")
@click.option("-v", "--verbose", is_flag=True, help="show the runner's log")
@click.option("--keep", is_flag=True,
              help="then keep everything up to be clicked (forge pages, dashboard) until Ctrl-C")
def demo_cmd(flavour: str, real_llm: bool, workdir: str | None, verbose: bool,
             keep: bool) -> None:
    """Show the whole flow on this machine, no account or key needed.

    A forge emulator with a sample repository (a bug and a failing test, CI running the
    tests), an LLM emulator playing the agent, the runner with the embedded store and the
    Docker sandbox: issue 1 becomes a green pull request, issue 2 is killed mid-run.
    With --keep, it all stays up for you to try until Ctrl-C.
    """
    import functools
    import shutil
    import tempfile

    from runner.testing import playground
    from runner.testing.demo import run_demo

    if real_llm and not os.environ.get("ANTHROPIC_API_KEY"):
        fail("--real-llm needs ANTHROPIC_API_KEY in the environment", 2)
    if verbose:
        _setup_logging(False)
    folder = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="orchestrator-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    say = functools.partial(console.print, highlight=False, soft_wrap=True, markup=False)
    try:
        ok = run_demo(folder, flavour=flavour, real_llm=real_llm,  # type: ignore[arg-type]
                      say=say, **(playground.demo_options(say) if keep else {}))
        if keep and not workdir:  # the playground's files go with it
            shutil.rmtree(folder, ignore_errors=True)
    except TimeoutError as exc:
        fail(f"the demo stalled: {exc}")
    except Exception as exc:  # the demo's last word: any failure becomes a message, not a traceback  # noqa: BLE001
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
