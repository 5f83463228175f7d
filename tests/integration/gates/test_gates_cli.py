"""`python -m gates` on real git repositories: each gate passes and fails for its reason."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.gates.conftest import SampleRepo

PY = sys.executable

# Planted secrets are assembled at run time so that this file itself holds none.
AWS_KEY = "AKIA" + "Z7QX4J2M8KDW3PLB"
GITHUB_TOKEN = "ghp_" + "k3J9dLq2Zx7Vb1Nw8Rt5Yu4Io6Pa0Sd2Fg7H"
ANTHROPIC_KEY = "sk-ant-api03-" + "Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nM3qW5eR7tY9uI0oP-aSdF_gHjK"


def config_text(commands: dict[str, object] | None = None, extra: str = "") -> str:
    as_yaml = json.dumps(commands or {})  # JSON is YAML, and spares us quoting shell
    return f"""
default_profile: standard
profiles:
  standard:
    limits: {{max_files: 5, max_lines: 50}}
    commands: {as_yaml}
{extra}
"""


@pytest.fixture
def plain(gates_config: Callable[[str], Path]) -> Path:
    return gates_config(config_text())


def test_clean_change_passes_every_gate(sample_repo: SampleRepo, plain: Path) -> None:
    sample_repo.write("src/app.py", "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n"
                      "    return a - b\n")
    sample_repo.commit()
    code, results = sample_repo.gates_json(config=plain)
    assert code == 0
    assert set(results) == {"secrets", "protected-paths", "diff-size"}
    assert all(r["passed"] for r in results.values())
    assert set(results["diff-size"]) >= {"gate", "passed", "expected", "actual", "message"}
    assert results["diff-size"]["actual"] == "1 files, 4 lines"  # two blank lines, def, return


@pytest.mark.parametrize("name,line,kind", [
    ("aws", f'AWS_ACCESS_KEY_ID = "{AWS_KEY}"\n', "AWS Access Key"),
    ("github", f'token = "{GITHUB_TOKEN}"\n', "GitHub token"),
    ("anthropic", f'client = Anthropic(api_key="{ANTHROPIC_KEY}")\n', "Anthropic API key"),
])
def test_planted_secret_is_found_and_never_printed(sample_repo: SampleRepo, plain: Path,
                                                   name: str, line: str, kind: str) -> None:
    secret = line.split('"')[1]
    sample_repo.write("src/settings.py", "import os\n\n" + line)
    sample_repo.commit()
    table = sample_repo.gates(config=plain)
    code, results = sample_repo.gates_json(config=plain)
    assert table.returncode == 1 and code == 1
    finding = results["secrets"]
    assert not finding["passed"]
    assert "src/settings.py:3" in finding["message"] and kind in finding["message"]
    for output in (table.stdout, table.stderr, json.dumps(results)):
        assert secret not in output
        assert secret[8:24] not in output  # not even a fragment of it
    assert "src/settings.py:3" in table.stdout


def test_uncommitted_and_untracked_work_is_scanned(sample_repo: SampleRepo, plain: Path) -> None:
    # The pre-push gates see the agent's work before the runner commits it.
    sample_repo.write("notes/new.txt", f"first\nkey {GITHUB_TOKEN}\n")
    code, results = sample_repo.gates_json(config=plain)
    assert code == 1
    assert "notes/new.txt:2" in results["secrets"]["message"]


def test_secret_only_in_the_base_is_not_blamed_on_the_change(sample_repo: SampleRepo,
                                                             plain: Path) -> None:
    from tests.integration.gates.conftest import git
    git(sample_repo.root, "checkout", "-q", "main")
    sample_repo.write("old.py", f'K = "{AWS_KEY}"\n')
    sample_repo.commit("old secret")
    git(sample_repo.root, "checkout", "-q", "-b", "orchestrator/issue-2")
    sample_repo.write("src/app.py", "def add(a, b):\n    return b + a\n")
    sample_repo.commit()
    code, results = sample_repo.gates_json(config=plain)
    assert code == 0, results["secrets"]["message"]


def test_a_commit_sha_is_not_a_forgejo_token(sample_repo: SampleRepo, plain: Path) -> None:
    sample_repo.write("CHANGELOG.md", "fixed in commit 3f786850e387550fdab836ed7e6dc881de23001b\n")
    sample_repo.write("deploy.sh", "curl -H 'Authorization: token "
                      + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b" + "' https://forge\n")
    sample_repo.commit()
    code, results = sample_repo.gates_json(config=plain)
    assert code == 1
    message = results["secrets"]["message"]
    assert "deploy.sh:1: Forgejo/Gitea token" in message
    assert "CHANGELOG" not in message


def test_diff_size_limits(sample_repo: SampleRepo, plain: Path) -> None:
    for i in range(6):
        sample_repo.write(f"src/m{i}.py", "x = 1\n")
    sample_repo.commit()
    code, results = sample_repo.gates_json(config=plain)
    assert code == 1
    assert results["diff-size"]["actual"] == "6 files, 6 lines"
    assert "6 files changed, the limit is 5" in results["diff-size"]["message"]

    sample_repo.write("src/big.py", "".join(f"v{i} = {i}\n" for i in range(60)))
    for i in range(6):
        (sample_repo.root / f"src/m{i}.py").unlink()
    sample_repo.commit()
    code, results = sample_repo.gates_json(config=plain)
    assert "60 lines changed, the limit is 50" in results["diff-size"]["message"]


@pytest.mark.parametrize("path", [".github/workflows/ci.yml", ".forgejo/workflows/x.yml",
                                  ".orchestrator/gates.yml", "config/prompts/reviewer.md"])
def test_protected_paths_need_the_label(sample_repo: SampleRepo, plain: Path, path: str) -> None:
    sample_repo.write(path, "changed: true\n")
    sample_repo.commit()
    code, results = sample_repo.gates_json(config=plain)
    assert code == 1
    assert path in results["protected-paths"]["message"]
    assert "orchestrator:allow-ci-changes" in results["protected-paths"]["message"]
    code, results = sample_repo.gates_json("--labels", "bug,orchestrator:allow-ci-changes",
                                           config=plain)
    assert code == 0
    assert results["protected-paths"]["passed"]


def test_deleting_a_protected_file_is_also_refused(sample_repo: SampleRepo, plain: Path) -> None:
    from tests.integration.gates.conftest import git
    git(sample_repo.root, "checkout", "-q", "main")
    sample_repo.write(".github/workflows/ci.yml", "on: push\n")
    sample_repo.commit()
    git(sample_repo.root, "checkout", "-q", "-b", "orchestrator/issue-3")
    (sample_repo.root / ".github/workflows/ci.yml").unlink()
    sample_repo.commit()
    code, results = sample_repo.gates_json(config=plain)
    assert code == 1 and ".github/workflows/ci.yml" in results["protected-paths"]["message"]


def script(tmp_path: Path, name: str, body: str) -> str:
    """A command that runs a small Python script (written outside the checkout)."""
    file = tmp_path / f"{name}.py"
    file.write_text(body)
    return f"{PY} {file}"


def test_commands_pass_fail_and_time_out(sample_repo: SampleRepo, tmp_path: Path,
                                         gates_config: Callable[[str], Path]) -> None:
    config = gates_config(config_text({
        "lint": {"run": script(tmp_path, "lint", "print('ok')"), "fast": True},
        "tests": script(tmp_path, "tests", "import sys\nprint('2 failed')\nsys.exit(3)"),
        "slow": {"run": script(tmp_path, "slow", "import time\ntime.sleep(30)"),
                 "timeout": 1},
    }))
    start = time.monotonic()
    code, results = sample_repo.gates_json(config=config)
    assert time.monotonic() - start < 20  # the slow command was stopped at its timeout
    assert code == 1
    assert results["lint"]["passed"] and results["lint"]["fast"]
    assert results["tests"]["actual"] == "exit 3"
    assert "2 failed" in results["tests"]["message"]
    assert results["slow"]["actual"] == "timed out after 1s"

    code, results = sample_repo.gates_json("--fast", config=config)
    assert set(results) == {"secrets", "protected-paths", "diff-size", "lint"}
    assert code == 0


def test_missing_tool_says_so(sample_repo: SampleRepo,
                              gates_config: Callable[[str], Path]) -> None:
    config = gates_config(config_text({"lint": "no-such-linter-xyz ."}))
    code, results = sample_repo.gates_json(config=config)
    assert code == 1
    assert "command not found" in results["lint"]["message"]


def coverage_config(gates_config: Callable[[str], Path], tmp_path: Path, percent: float,
                    write: bool = True) -> Path:
    report = json.dumps({"totals": {"percent_covered": percent}})
    body = f"open('coverage.json', 'w').write({report!r})" if write else "pass"
    return gates_config(config_text({"tests": script(tmp_path, "cov", body)},
                                    "    coverage: {threshold: 80}"))


def test_coverage_threshold(sample_repo: SampleRepo, tmp_path: Path,
                            gates_config: Callable[[str], Path]) -> None:
    (sample_repo.root / ".gitignore").write_text("coverage.json\n")
    sample_repo.commit()
    code, results = sample_repo.gates_json(config=coverage_config(gates_config, tmp_path, 85.5))
    assert code == 0, results
    assert results["coverage"]["actual"] == "85.5%"
    code, results = sample_repo.gates_json(config=coverage_config(gates_config, tmp_path, 61.0))
    assert code == 1
    assert results["coverage"]["expected"] == ">= 80%"
    assert "61.0%, below 80%" in results["coverage"]["message"]


def test_coverage_is_not_checked_when_tests_fail(sample_repo: SampleRepo, tmp_path: Path,
                                                 gates_config: Callable[[str], Path]) -> None:
    config = gates_config(config_text({"tests": script(tmp_path, "t", "raise SystemExit(1)")},
                                      "    coverage: {threshold: 10}"))
    code, results = sample_repo.gates_json(config=config)
    assert code == 1
    assert results["coverage"]["actual"] == "not measured"


def test_stale_coverage_report_does_not_pass(sample_repo: SampleRepo, tmp_path: Path,
                                             gates_config: Callable[[str], Path]) -> None:
    report = sample_repo.root / "coverage.json"
    report.write_text(json.dumps({"totals": {"percent_covered": 99.0}}))
    old = time.time() - 3600
    import os
    os.utime(report, (old, old))
    (sample_repo.root / ".gitignore").write_text("coverage.json\n")
    code, results = sample_repo.gates_json(
        config=coverage_config(gates_config, tmp_path, 0, write=False))
    assert code == 1
    assert results["coverage"]["actual"] == "stale report"


def test_label_chooses_the_profile(sample_repo: SampleRepo,
                                   gates_config: Callable[[str], Path]) -> None:
    config = gates_config(config_text() + f"""
  strict:
    limits: {{max_files: 1}}
    commands: {{lint: "{PY} -V"}}
""")
    code, results = sample_repo.gates_json("--labels", "gates:strict", config=config)
    assert code == 0
    assert "lint" in results
    _, results = sample_repo.gates_json(config=config)
    assert "lint" not in results


@pytest.mark.parametrize("args,expected", [
    (["--profile", "nope"], "no gate profile 'nope'"),
    (["--labels", "gates:a,gates:b"], "several gate profile labels"),
    (["--base", "no-such-branch"], "base 'no-such-branch' is not a commit"),
    (["--config", "/nonexistent/gates.yml"], "no such file"),
    (["--bogus"], "unrecognized arguments"),
])
def test_usage_errors_exit_2_with_one_line(sample_repo: SampleRepo, plain: Path,
                                           args: list[str], expected: str) -> None:
    has_config = any(a == "--config" for a in args)
    proc = sample_repo.gates(*args, config=None if has_config else plain)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_config_error_names_file_line_and_key(sample_repo: SampleRepo,
                                              gates_config: Callable[[str], Path]) -> None:
    config = gates_config("profiles:\n  standard:\n    limits:\n      max_files: many\n")
    proc = sample_repo.gates(config=config)
    assert proc.returncode == 2
    assert f"{config}:4: profiles.standard.limits.max_files" in proc.stderr


def test_not_a_checkout(tmp_path: Path, plain: Path) -> None:
    import subprocess
    proc = subprocess.run([PY, "-m", "gates", "--config", str(plain)], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "not a git checkout" in proc.stderr


def test_bundled_profiles_run(sample_repo: SampleRepo) -> None:
    # No --config: the orchestrator's own config/gates.yml; minimal has no commands.
    proc = sample_repo.gates("--profile", "minimal")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all gates passed" in proc.stdout


def test_library_api(sample_repo: SampleRepo, plain: Path) -> None:
    import gates
    sample_repo.write("x.py", f"k = '{GITHUB_TOKEN}'\n")
    config = gates.load_config(plain)
    results = gates.run_profile(sample_repo.root, "standard", "main", [], config=config)
    assert [r.gate for r in results] == ["secrets", "protected-paths", "diff-size"]
    assert not gates.all_passed(results)
    diff = gates.collect_diff(sample_repo.root, "main")
    assert [f.path for f in diff.files] == ["x.py"]
    fast = gates.check_diff(diff, config.profile("standard"), [], config)
    assert [r.passed for r in fast] == [False, True, True]
