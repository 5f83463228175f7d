"""CI templates are valid workflows for both forges; `orchestrator init` writes them."""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from gates import ci
from runner.cli import cli
from runner.init import FORGE_DIRS, bare_installs, default_package

ROOT = Path(__file__).resolve().parents[3]
TEMPLATES = ROOT / "config" / "templates"
PIN = "git+https://git.example.com/acme/orchestrator@" + "0123456789abcdef" * 2 + "01234567"


def load_workflow(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True; the Actions runners read it as "on".
    if True in data:
        data["on"] = data.pop(True)
    return data


def run_lines(workflow: dict[str, Any]) -> list[str]:
    return [step["run"] for job in workflow["jobs"].values() for step in job["steps"]
            if "run" in step]


@pytest.mark.parametrize("kind", ["github", "forgejo"])
def test_templates_are_valid_workflows(kind: str) -> None:
    for name in ("orchestrator-gates.yml", "orchestrator-dispatch.yml"):
        wf = load_workflow(TEMPLATES / kind / name)
        assert isinstance(wf["name"], str) and wf["on"] and wf["jobs"]
        for job_id, job in wf["jobs"].items():
            assert job_id.replace("-", "_").isidentifier()
            assert "runs-on" in job and job["steps"]
            for step in job["steps"]:
                assert ("uses" in step) != ("run" in step), step  # exactly one of them
        # Secrets never appear on a command line, only in env.
        for line in run_lines(wf):
            assert "secrets." not in line and "github.token" not in line


@pytest.mark.parametrize("kind", ["github", "forgejo"])
def test_no_template_installs_a_bare_package_name(kind: str, tmp_path: Path) -> None:
    """The workflows hold the forge token and the LLM key: what they install is pinned."""
    for name in ("orchestrator-gates.yml", "orchestrator-dispatch.yml"):
        text = (TEMPLATES / kind / name).read_text()
        assert bare_installs(text) == [], name
        assert 'ORCHESTRATOR_PACKAGE: "__ORCHESTRATOR_PACKAGE__"' in text
    # The check itself: each of these would install whatever a name resolves to today.
    for bad in ['run: pip install gitops-agent-runner',
                'run: python -m pip install -q "gitops-agent-runner>=0.1"',
                'ORCHESTRATOR_PACKAGE: "gitops-agent-runner"',
                'ORCHESTRATOR_PACKAGE: "gitops-agent-runner @ git+https://h/o/r@main"']:
        assert bare_installs(bad), bad
    repo = git_repo(tmp_path / "repo")
    for unpinned in ("gitops-agent-runner", "git+https://h/o/r@main",
                     "git+http://h/o/r@" + "a" * 40):
        result = CliRunner().invoke(cli, ["init", str(repo), "--forge", kind, "--package",
                                          unpinned])
        assert result.exit_code == 2 and "is not pinned" in result.output
    assert not (repo / FORGE_DIRS[kind]).exists()  # nothing written


@pytest.mark.parametrize("kind", ["github", "forgejo"])
def test_gates_workflow_runs_the_gates_on_orchestrator_branches(kind: str) -> None:
    wf = load_workflow(TEMPLATES / kind / "orchestrator-gates.yml")
    assert "pull_request" in wf["on"]
    job = wf["jobs"]["gates"]
    assert job["if"] == "startsWith(github.head_ref, 'orchestrator/')"
    runs = "\n".join(run_lines(wf))
    assert "python -m gates --base" in runs and '--labels "$LABELS"' in runs
    assert "python -m gates.ci labels" in runs and "python -m gates.ci status" in runs
    report = job["steps"][-1]
    assert report["if"] == "always()" and "--results gates.json" in report["run"]
    checkout = job["steps"][0]
    assert checkout["with"]["persist-credentials"] is False


@pytest.mark.parametrize("kind", ["github", "forgejo"])
def test_dispatch_workflow_calls_handle_event(kind: str) -> None:
    wf = load_workflow(TEMPLATES / kind / "orchestrator-dispatch.yml")
    assert wf["on"]["issues"]["types"] == ["labeled"]
    assert wf["on"]["issue_comment"]["types"] == ["created"]
    (command,) = [r for r in run_lines(wf) if "handle-event" in r]
    argv = shlex.split(command)
    assert argv[:2] == ["orchestrator", "handle-event"]
    assert argv[argv.index("--event-name") + 1] == "$GITHUB_EVENT_NAME"
    assert argv[argv.index("--event-file") + 1] == "$GITHUB_EVENT_PATH"


def git_repo(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


@pytest.mark.parametrize("kind,folder", [("github", ".github"), ("forgejo", ".forgejo")])
def test_init_writes_templates_and_prints_manual_steps(tmp_path: Path, kind: str,
                                                       folder: str) -> None:
    repo = git_repo(tmp_path / "repo")
    result = CliRunner().invoke(cli, ["init", str(repo), "--forge", kind,
                                      "--webhook-url", "https://runner.example", "--package", PIN])
    assert result.exit_code == 0, result.output
    for name in ("orchestrator-gates.yml", "orchestrator-dispatch.yml"):
        written = repo / folder / "workflows" / name
        pinned = f'ORCHESTRATOR_PACKAGE: "gitops-agent-runner @ {PIN}"'
        assert written.read_text() == (TEMPLATES / kind / name).read_text().replace(
            'ORCHESTRATOR_PACKAGE: "__ORCHESTRATOR_PACKAGE__"', pinned)
        assert pinned in written.read_text() and bare_installs(written.read_text()) == []
        assert f"wrote {folder}/workflows/{name}" in result.output
    assert (repo / ".orchestrator/gates.yml").read_text() == (ROOT / "config/gates.yml"
                                                              ).read_text()
    out = " ".join(result.output.split())
    assert "bot account" in out and "admin" in out
    assert "ORCHESTRATOR_TOKEN" in out and "ANTHROPIC_API_KEY" in out
    assert f"https://runner.example/webhooks/{kind}" in out and "secret" in out


def test_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    runner = CliRunner()
    first = runner.invoke(cli, ["init", str(repo), "--forge", "forgejo", "--package", PIN])
    assert first.exit_code == 0
    mine = repo / ".forgejo/workflows/orchestrator-gates.yml"
    mine.write_text("# my edits\n")
    again = runner.invoke(cli, ["init", str(repo), "--forge", "forgejo", "--package", PIN])
    assert again.exit_code == 2
    assert "already exist" in again.output and "--force" in again.output
    assert mine.read_text() == "# my edits\n"
    # The forge is detected from the existing .forgejo folder.
    forced = runner.invoke(cli, ["init", str(repo), "--force", "--package", PIN])
    assert forced.exit_code == 0 and mine.read_text() != "# my edits\n"


def test_init_needs_a_checkout_and_a_forge(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = CliRunner().invoke(cli, ["init", str(plain), "--forge", "github", "--package", PIN])
    assert result.exit_code == 2 and "not a git checkout" in result.output
    repo = git_repo(tmp_path / "repo")
    result = CliRunner().invoke(cli, ["init", str(repo), "--package", PIN])
    assert result.exit_code == 2 and "--forge github or --forge forgejo" in result.output


def test_written_dispatch_step_is_accepted_by_handle_event(tmp_path: Path) -> None:
    """The command the dispatch workflow runs parses with the real CLI."""
    repo = git_repo(tmp_path / "repo")
    done = CliRunner().invoke(cli, ["init", str(repo), "--forge", "forgejo", "--package", PIN])
    assert done.exit_code == 0
    wf = load_workflow(repo / ".forgejo/workflows/orchestrator-dispatch.yml")
    (command,) = [r for r in run_lines(wf) if "handle-event" in r]
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"action": "labeled"}))
    argv = shlex.split(command.replace("$GITHUB_EVENT_NAME", "issues")
                       .replace("$GITHUB_EVENT_PATH", str(event)))[1:]
    result = CliRunner().invoke(cli, [*argv, "--help"])
    assert result.exit_code == 0, result.output
    assert "--event-name" in result.output and "--event-file" in result.output


# ---------------------------------------------------------------- gates.ci over HTTP


class _Forge(BaseHTTPRequestHandler):
    calls: list[tuple[str, str, dict[str, str], Any]] = []

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path, dict(self.headers), None))
        if self.path == "/api/v1/repos/o/r/issues/12":
            self._reply(200, {"number": 12, "labels": [{"name": "orchestrator"},
                                                       {"name": "gates:strict"}]})
        else:
            self._reply(404, {"message": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        self.calls.append(("POST", self.path, dict(self.headers), body))
        self._reply(201, body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def forge() -> Iterator[str]:
    _Forge.calls = []
    server = HTTPServer(("127.0.0.1", 0), _Forge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    server.shutdown()


def test_ci_labels_and_status(forge: str, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    env = {"ORCHESTRATOR_TOKEN": "tok-123"}
    assert ci.main(["labels", "--api", forge, "--repo", "o/r", "--branch",
                    "orchestrator/issue-12"], env) == 0
    assert capsys.readouterr().out.strip() == "orchestrator,gates:strict"
    assert _Forge.calls[0][2]["Authorization"] == "token tok-123"
    assert ci.main(["labels", "--api", forge, "--repo", "o/r", "--branch", "feature/x"],
                   env) == 0
    assert capsys.readouterr().out.strip() == ""

    results = tmp_path / "gates.json"
    results.write_text(json.dumps([
        {"gate": "lint", "passed": True, "expected": "exit 0", "actual": "exit 0",
         "message": "ok"},
        {"gate": "tests", "passed": False, "expected": "exit 0", "actual": "exit 1",
         "message": "1 failed"}]))
    assert ci.main(["status", "--api", forge, "--repo", "o/r", "--sha", "abc",
                    "--results", str(results)], env) == 0
    method, path, _headers, body = _Forge.calls[-1]
    assert (method, path) == ("POST", "/api/v1/repos/o/r/statuses/abc")
    assert body == {"state": "failure", "description": "failed: tests",
                    "context": "orchestrator/gates"}
    # A run that produced no results (it crashed) is an error, not a success.
    assert ci.main(["status", "--api", forge, "--repo", "o/r", "--sha", "abc", "--results",
                    str(tmp_path / "missing.json")], env) == 0
    assert _Forge.calls[-1][3]["state"] == "error"
    assert "tok-123" not in capsys.readouterr().out


def test_ci_reports_http_errors_in_one_line(forge: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = ci.main(["labels", "--api", forge, "--repo", "o/r", "--branch",
                    "orchestrator/issue-99"], {})
    assert code == 2
    assert "HTTP 404" in capsys.readouterr().err


def test_init_pins_the_commit_it_was_installed_from(tmp_path: Path) -> None:
    source = git_repo(tmp_path / "source")
    subprocess.run(["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@e",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    subprocess.run(["git", "-C", str(source), "remote", "add", "origin",
                    "git@git.example.com:acme/orchestrator.git"], check=True)
    sha = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert default_package(source) == (
        f"gitops-agent-runner @ git+https://git.example.com/acme/orchestrator.git@{sha}")
