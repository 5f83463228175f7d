"""The built-in agent's tools, executed inside the run's sandbox: ``bash``, ``editor``, ``finish``.

Nothing here touches the host's copy of the worktree: the agent controls its files and could
plant a symlink to anywhere on the runner's machine. The editor therefore runs as a small
Python program inside the sandbox (``python3`` must be in the image), with its arguments on
stdin, so every path resolves in the container's view of the world.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from runner.agent.base import CancelToken
from runner.sandbox.base import WORKSPACE, ExecResult, Sandbox

# What the model sees of one tool call; the rest is cut with a note saying so.
MAX_TOOL_OUTPUT = 30_000
HEAD_SHARE = 0.3  # keep the start (the command's context) and the larger end (the verdict)
DEFAULT_BASH_TIMEOUT = 120.0

TOOL_SPECS: list[dict[str, Any]] = [
    {
        "name": "bash",
        "description": (
            "Run a bash command in the repository's sandbox (working directory /workspace, "
            "no network unless the operator allows it). stdout and stderr are returned "
            "interleaved with the exit code. Output longer than 30000 characters is cut in "
            "the middle. Commands are killed after `timeout` seconds (default 120). "
            "Each call is a fresh shell: cd and exports do not carry over."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "the bash command to run"},
                "timeout": {"type": "number", "description": "seconds before it is killed"},
            },
            "required": ["command"],
        },
    },
    {
        "name": "editor",
        "description": (
            "View, create and edit files in the sandbox. Paths are relative to /workspace "
            "or absolute. Commands: `view` (a file with line numbers, optionally "
            "`view_range` [first, last]; a directory lists its files two levels deep), "
            "`create` (write `file_text`, replacing the file), `str_replace` (replace "
            "`old_str` with `new_str`; old_str must occur exactly once, whitespace "
            "included), `insert` (insert `new_str` after line `insert_line`; 0 inserts at "
            "the top)."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "enum": ["view", "create", "str_replace",
                                                       "insert"]},
                "path": {"type": "string"},
                "file_text": {"type": "string"},
                "old_str": {"type": "string"},
                "new_str": {"type": "string"},
                "insert_line": {"type": "integer"},
                "view_range": {"type": "array", "items": {"type": "integer"}},
            },
            "required": ["command", "path"],
        },
    },
    {
        "name": "finish",
        "description": (
            "Call once the task is done (or cannot be done): `summary` says what you changed "
            "and how you checked it, or why you stopped. It becomes the pull request text."
        ),
        "input_schema": {
            "type": "object",
            "properties": {"summary": {"type": "string"}},
            "required": ["summary"],
        },
    },
]


@dataclass(frozen=True)
class ToolResult:
    """What goes back to the model, plus what the audit event records."""

    content: str
    is_error: bool = False
    exit_code: int | None = None
    cancelled: bool = False


def cut_middle(text: str, limit: int = MAX_TOOL_OUTPUT) -> str:
    """``text`` with its middle removed to fit ``limit``, and a note saying what was cut."""
    if len(text) <= limit:
        return text
    head = int(limit * HEAD_SHARE)
    tail = limit - head
    cut = len(text) - head - tail
    note = (f"\n\n[... output truncated: {cut} characters cut from the middle; showing the "
            f"first {head} and the last {tail} of {len(text)}. Narrow the command (grep, "
            f"head, tail) to see the rest ...]\n\n")
    return text[:head] + note + text[-tail:]


def exec_cancellable(sandbox: Sandbox, command: str | list[str], *, timeout: float,
                     cancel: CancelToken, stdin: bytes | None = None,
                     workdir: str = WORKSPACE) -> ExecResult | None:
    """``sandbox.exec`` that gives up waiting when ``cancel`` is set (returns None then).

    The command itself is stopped by whoever cancelled (the kill stops the container); we
    only make sure the agent does not sit in a long command after a kill.
    """
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = sandbox.exec(command, timeout=timeout, stdin=stdin, workdir=workdir)
        except BaseException as exc:  # handed to the waiting thread below  # noqa: BLE001
            box["error"] = exc

    thread = threading.Thread(target=work, name="agent-tool", daemon=True)
    thread.start()
    while thread.is_alive():
        if cancel.wait(0.05):
            return None
        thread.join(0.05)
    if "error" in box:
        raise box["error"]
    result: ExecResult = box["result"]
    return result


def run_bash(sandbox: Sandbox, args: dict[str, Any], cancel: CancelToken,
             max_timeout: float) -> ToolResult:
    """The ``bash`` tool: run the command, report exit code, cut long output."""
    command = args.get("command")
    if not isinstance(command, str) or not command.strip():
        return ToolResult("bash needs a non-empty `command` string.", is_error=True)
    try:
        timeout = float(args.get("timeout") or DEFAULT_BASH_TIMEOUT)
    except (TypeError, ValueError):
        timeout = DEFAULT_BASH_TIMEOUT
    timeout = max(1.0, min(timeout, max_timeout))
    result = exec_cancellable(sandbox, command, timeout=timeout, cancel=cancel)
    if result is None:
        return ToolResult("cancelled", is_error=True, cancelled=True)
    output = cut_middle(result.output)
    if result.timed_out:
        status = f"[killed after {timeout:g} s: the command timed out]"
    else:
        status = f"[exit code {result.exit_code}]"
    body = f"{output.rstrip()}\n{status}" if output.strip() else status
    return ToolResult(body, is_error=False, exit_code=result.exit_code)


# The editor, run by python3 inside the sandbox. Arguments arrive as JSON on stdin; the answer
# leaves as one JSON line after a marker, so shell noise on stderr cannot be mistaken for it.
_MARKER = "@@orchestrator-editor@@"
EDITOR_SCRIPT = r'''
import json, os, sys
MARK = "@@orchestrator-editor@@"
def done(ok, text):
    sys.stdout.write("\n" + MARK + json.dumps({"ok": ok, "text": text}) + "\n")
    sys.exit(0)
def numbered(lines, first):
    return "\n".join("%6d\t%s" % (first + i, line) for i, line in enumerate(lines))
def read(path):
    if not os.path.exists(path):
        done(False, "%s does not exist. Use `create` to make it, or `view` a directory "
                    "to see what is there." % path)
    if os.path.isdir(path):
        done(False, "%s is a directory; `view` it to list its files." % path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except UnicodeDecodeError:
        done(False, "%s is not UTF-8 text; use bash to inspect binary files." % path)
def write(path, text):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
def snippet(text, line, around=4):
    lines = text.split("\n")
    first = max(0, line - around)
    return numbered(lines[first:line + around + 1], first + 1)
args = json.loads(sys.stdin.read())
cmd, path = args.get("command"), args.get("path")
if not isinstance(path, str) or not path:
    done(False, "`path` is required")
path = os.path.normpath(os.path.join(os.getcwd(), path))
if cmd == "view":
    if os.path.isdir(path):
        out = []
        base = path.rstrip("/")
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            depth = root[len(base):].count("/")
            if depth >= 2:
                dirs[:] = []
            for name in sorted(dirs) + sorted(f for f in files if not f.startswith(".")):
                full = os.path.join(root, name)
                out.append(os.path.relpath(full, path) + ("/" if os.path.isdir(full) else ""))
        done(True, "Files in %s (two levels, hidden ones left out):\n%s"
             % (path, "\n".join(sorted(out)) or "(empty)"))
    text = read(path)
    lines = text.split("\n")
    first, last = 1, len(lines)
    rng = args.get("view_range")
    if rng:
        try:
            first, last = int(rng[0]), int(rng[1])
        except Exception:
            done(False, "view_range must be [first, last] line numbers")
        if last == -1:
            last = len(lines)
        if first < 1 or first > len(lines) or last < first:
            done(False, "view_range %r is outside the file's %d lines" % (rng, len(lines)))
    done(True, numbered(lines[first - 1:last], first))
if cmd == "create":
    text = args.get("file_text")
    if not isinstance(text, str):
        done(False, "`create` needs `file_text`")
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    existed = os.path.exists(path)
    write(path, text)
    done(True, "%s %s (%d lines)" % ("Replaced" if existed else "Created", path,
                                    text.count("\n") + 1))
if cmd == "str_replace":
    old, new = args.get("old_str"), args.get("new_str", "")
    if not isinstance(old, str) or old == "":
        done(False, "`str_replace` needs a non-empty `old_str`")
    if not isinstance(new, str):
        done(False, "`new_str` must be a string")
    text = read(path)
    count = text.count(old)
    if count == 0:
        done(False, "old_str was not found in %s; nothing changed. `view` the file and copy "
                    "the text exactly (whitespace and indentation matter)." % path)
    if count > 1:
        lines, at, start = [], 0, 0
        while True:
            at = text.find(old, start)
            if at < 0:
                break
            lines.append(str(text.count("\n", 0, at) + 1))
            start = at + 1
        done(False, "old_str occurs %d times in %s (lines %s); nothing changed. Include "
                    "more surrounding lines so it matches exactly once."
             % (count, path, ", ".join(lines)))
    at = text.find(old)
    text = text.replace(old, new, 1)
    write(path, text)
    line = text.count("\n", 0, at)
    done(True, "Edited %s. The lines around the change:\n%s" % (path, snippet(text, line)))
if cmd == "insert":
    new = args.get("new_str")
    if not isinstance(new, str):
        done(False, "`insert` needs `new_str`")
    try:
        at = int(args.get("insert_line"))
    except Exception:
        done(False, "`insert` needs `insert_line` (0 inserts at the top)")
    text = read(path)
    lines = text.split("\n")
    if at < 0 or at > len(lines):
        done(False, "insert_line %d is outside the file's %d lines" % (at, len(lines)))
    added = new.split("\n")
    if new.endswith("\n"):
        added = added[:-1]
    lines[at:at] = added
    text = "\n".join(lines)
    write(path, text)
    done(True, "Inserted %d lines after line %d of %s:\n%s"
         % (len(added), at, path, snippet(text, at)))
done(False, "unknown command %r: use view, create, str_replace or insert" % (cmd,))
'''


def run_editor(sandbox: Sandbox, args: dict[str, Any], cancel: CancelToken,
               timeout: float = 60.0) -> ToolResult:
    """The ``editor`` tool, run by ``python3`` inside the sandbox."""
    payload = json.dumps(args).encode()
    result = exec_cancellable(sandbox, ["python3", "-c", EDITOR_SCRIPT], timeout=timeout,
                              cancel=cancel, stdin=payload)
    if result is None:
        return ToolResult("cancelled", is_error=True, cancelled=True)
    marker_at = result.output.rfind(_MARKER)
    if marker_at < 0:
        hint = ""
        if result.exit_code == 127:
            hint = " The editor needs python3 in the sandbox image; use bash meanwhile."
        return ToolResult(f"The editor failed (exit code {result.exit_code}).{hint}\n"
                          f"{cut_middle(result.output, 4000)}", is_error=True,
                          exit_code=result.exit_code)
    line = result.output[marker_at + len(_MARKER):].strip().splitlines()[0]
    answer = json.loads(line)
    return ToolResult(cut_middle(str(answer["text"])), is_error=not answer["ok"])
