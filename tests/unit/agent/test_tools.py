"""The agent's tools as the model experiences them: bash output, the file editor's answers."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from runner.agent.base import Comment, Task, load_instructions
from runner.agent.tools import MAX_TOOL_OUTPUT, cut_middle, run_bash, run_editor
from tests.unit.agent.hostsandbox import HostSandbox


@pytest.fixture
def box(tmp_path: Path) -> HostSandbox:
    return HostSandbox(tmp_path)


def edit(box: HostSandbox, **args: object) -> tuple[str, bool]:
    result = run_editor(box, dict(args), threading.Event())
    return result.content, result.is_error


def test_bash_reports_exit_code_and_output(box: HostSandbox) -> None:
    result = run_bash(box, {"command": "echo hello; exit 3"}, threading.Event(), 60)
    assert "hello" in result.content
    assert "[exit code 3]" in result.content


def test_bash_cuts_long_output_and_says_so(box: HostSandbox) -> None:
    result = run_bash(box, {"command": "seq 1 100000"}, threading.Event(), 60)
    assert len(result.content) < MAX_TOOL_OUTPUT + 500
    assert "output truncated" in result.content
    assert result.content.startswith("1\n2\n")
    assert "100000" in result.content  # the end, where the verdict usually is, survives


def test_bash_timeout_is_reported(box: HostSandbox) -> None:
    result = run_bash(box, {"command": "sleep 30", "timeout": 1}, threading.Event(), 60)
    assert "timed out" in result.content


def test_bash_timeout_is_capped_by_the_configured_limit(box: HostSandbox) -> None:
    result = run_bash(box, {"command": "sleep 30", "timeout": 999}, threading.Event(), 1)
    assert "killed after 1 s" in result.content


def test_cut_middle_keeps_short_text() -> None:
    assert cut_middle("short") == "short"


def test_editor_create_view_with_line_numbers(box: HostSandbox, tmp_path: Path) -> None:
    text, err = edit(box, command="create", path="pkg/mod.py", file_text="a = 1\nb = 2\n")
    assert not err and "Created" in text
    assert (tmp_path / "pkg/mod.py").read_text() == "a = 1\nb = 2\n"
    text, err = edit(box, command="view", path="pkg/mod.py")
    assert not err
    assert "     1\ta = 1" in text and "     2\tb = 2" in text
    text, _ = edit(box, command="view", path="pkg/mod.py", view_range=[2, 2])
    assert "b = 2" in text and "a = 1" not in text


def test_editor_lists_a_directory(box: HostSandbox, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src/x.py").write_text("")
    (tmp_path / ".git").mkdir()
    text, err = edit(box, command="view", path=".")
    assert not err
    assert "src/" in text and "src/x.py" in text and ".git" not in text


def test_str_replace_must_match_exactly_once(box: HostSandbox, tmp_path: Path) -> None:
    target = tmp_path / "f.py"
    target.write_text("x = 1\ny = 1\nx = 1\n")
    text, err = edit(box, command="str_replace", path="f.py", old_str="x = 1", new_str="x = 2")
    assert err and "2 times" in text and "lines 1, 3" in text
    assert target.read_text() == "x = 1\ny = 1\nx = 1\n"  # nothing changed
    text, err = edit(box, command="str_replace", path="f.py", old_str="z = 1", new_str="")
    assert err and "not found" in text
    text, err = edit(box, command="str_replace", path="f.py", old_str="y = 1", new_str="y = 5")
    assert not err and "y = 5" in text
    assert target.read_text() == "x = 1\ny = 5\nx = 1\n"


def test_insert_after_a_line(box: HostSandbox, tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("one\ntwo\n")
    _, err = edit(box, command="insert", path="f.txt", insert_line=1, new_str="one and a half")
    assert not err
    assert target.read_text() == "one\none and a half\ntwo\n"
    _, err = edit(box, command="insert", path="f.txt", insert_line=0, new_str="zero\n")
    assert not err
    assert target.read_text().startswith("zero\none\n")
    text, err = edit(box, command="insert", path="f.txt", insert_line=99, new_str="x")
    assert err and "outside" in text


def test_editor_errors_are_actionable(box: HostSandbox) -> None:
    text, err = edit(box, command="view", path="nope.py")
    assert err and "does not exist" in text
    text, err = edit(box, command="delete", path="x")
    assert err and "view, create, str_replace or insert" in text


def test_editor_runs_in_the_sandbox_not_on_the_host(tmp_path: Path) -> None:
    # The sandbox's root is a different folder than the test's: an absolute host path
    # written by the editor lands where the sandbox process puts it, which we can observe.
    inner = tmp_path / "inner"
    inner.mkdir()
    box = HostSandbox(inner)
    (inner / "link").symlink_to(tmp_path / "outside.txt")
    text, err = edit(box, command="view", path="link")
    assert err and "does not exist" in text  # resolved by the sandbox process itself


def test_task_prompt_carries_issue_instructions_comments_and_feedback() -> None:
    task = Task(title="Fix add", body="add() is wrong", repo="o/r", issue=7,
                comments=(Comment("maint", "use integers only"),),
                instructions="Run make test.", instructions_file="AGENTS.md",
                feedback="ci/test failed: test_add", iteration=2)
    prompt = task.prompt()
    for part in ("o/r#7: Fix add", "add() is wrong", "maint wrote:", "use integers only",
                 "AGENTS.md", "Run make test.", "Iteration 2", "ci/test failed"):
        assert part in prompt


def test_instructions_file_is_read_but_a_symlink_is_refused(tmp_path: Path) -> None:
    assert load_instructions(tmp_path) is None
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "AGENTS.md").symlink_to(secret)
    (repo / "CLAUDE.md").write_text("be brief")
    assert load_instructions(repo) == ("CLAUDE.md", "be brief")
