"""The ``orchestrator`` command line: wires adapters to the core from the configuration."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from runner import __version__, config
from runner.model import ACTIVE, RunState, is_run_id
from runner.store import open_store
from runner.store.base import Store, StoreError

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
        store.pause(actor=actor, reason=reason)
        targets = store.list_runs(states=ACTIVE, limit=100000)
        for run in targets:
            try:
                store.request_kill(run.id, actor=actor, reason=reason)
            except StoreError:
                continue  # finished meanwhile
        console.print(f"kill requested for {len(targets)} run(s); dispatch paused until "
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

    try:
        uses_docker = config.load(ctx.config_path, require_secrets=False).sandbox.backend == \
            "docker"
    except config.ConfigError:
        uses_docker = True
    return [
        Check("python", True, python),
        Check("config", True, settings),
        Check("store", True, store),
        Check("docker", uses_docker, docker_engine),
        Check("sandbox image", uses_docker, image),
    ]


@cli.command("doctor")
@pass_ctx
def doctor_cmd(ctx: Context) -> None:
    """Check that everything the runner needs is here; one line per check with the fix."""
    failed_required = False
    for check in _doctor_checks(ctx):
        try:
            detail = check.run()
            console.print(f"[green]OK  [/] {check.name:<14} {detail}", highlight=False)
        except (DoctorFail, config.ConfigError) as exc:
            tag = "FAIL" if check.required else "WARN"
            color = "red" if check.required else "yellow"
            console.print(f"[{color}]{tag}[/] {check.name:<14} {exc}", highlight=False,
                          soft_wrap=True)
            failed_required |= check.required
    sys.exit(1 if failed_required else 0)


# ------------------------------------------------------------------ init


@cli.command("init")
@click.argument("path", default=".", type=click.Path(file_okay=False))
@click.option("--forge", "kind", type=click.Choice(["github", "forgejo"]),
              help="which forge the repository is on [default: from its .github/.forgejo]")
@click.option("--force", is_flag=True, help="overwrite files that already exist")
@click.option("--webhook-url", help="the runner's public URL, for the webhook step")
def init_cmd(path: str, kind: str | None, force: bool, webhook_url: str | None) -> None:
    """Write the gate and dispatch workflows and gates.yml into the checkout at PATH."""
    from runner import init as init_mod

    try:
        result = init_mod.init_repo(path, kind, force=force, webhook_url=webhook_url)
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
