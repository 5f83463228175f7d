"""The 50% rule: no single issue may need more than half of the agent's context window.

Pure: the caller passes the issue text (already stripped of hidden text), its comments, the
labels that an authorised user added, and the window size; nothing here reads or writes.

An issue may declare its own need in a block the author writes::

    ## Context Estimate
    - runner/config.py, runner/cli.py (read), tests/unit/test_cli.py (write)
    Total estimated: 45,000 tokens

Otherwise it is estimated: 7,000 tokens for each file the issue names, plus the tokens of the
body and the comments (4 characters a token), all times 1.3 for the agent's own overhead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

TOO_LARGE_LABEL = "orchestrator:too-large"
FORCE_LABEL = "orchestrator:force"
TOKENS_PER_FILE = 7_000
CHARS_PER_TOKEN = 4
OVERHEAD = 1.3
MAX_SHARE = 0.5

_HEADING = re.compile(r"^(#{1,6})\s*context\s+estimate\b.*$", re.IGNORECASE | re.MULTILINE)
_ANY_HEADING = re.compile(r"^(#{1,6})\s", re.MULTILINE)
_TOTAL = re.compile(
    r"total\s+estimated\s*[:*_ ]*\s*~?\s*(\d[\d,._ ]*)\s*([km])?\s*tokens", re.IGNORECASE)
_URL = re.compile(r"\b(?:https?|ftp)://\S+|\b[\w.+-]+@[\w-]+\.[\w.-]+")
_PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-][\w.-]*\.([A-Za-z0-9]{1,10}))(?![\w/-])")
_BARE_NAMES = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*(?:Dockerfile|Makefile|Justfile|"
                         r"Containerfile|Gemfile|Procfile))(?![\w.-])")
CODE_EXTENSIONS = frozenset({
    "py", "pyi", "pyx", "js", "jsx", "mjs", "cjs", "ts", "tsx", "go", "rs", "java", "kt", "kts",
    "c", "h", "cc", "cpp", "cxx", "hpp", "hh", "cs", "rb", "php", "swift", "scala", "sh", "bash",
    "zsh", "fish", "ps1", "yml", "yaml", "json", "jsonc", "toml", "ini", "cfg", "conf", "md",
    "rst", "txt", "html", "htm", "css", "scss", "sass", "less", "sql", "proto", "graphql", "xml",
    "gradle", "lock", "vue", "svelte", "tf", "hcl", "lua", "pl", "pm", "r", "jl", "ex", "exs",
    "erl", "hs", "ml", "mli", "clj", "dart", "nim", "zig", "sol", "env", "csv", "tsv", "ipynb",
})


@dataclass(frozen=True)
class Estimate:
    """How many tokens an issue is expected to need, and how that was worked out."""

    tokens: int
    source: str  # "declared" (a Context Estimate block) or "heuristic"
    files: tuple[str, ...] = ()
    text_tokens: int = 0


@dataclass(frozen=True)
class SizingDecision:
    """Whether the issue may run. When not: the comment to post and the label to add."""

    allowed: bool
    estimate: Estimate
    limit: int
    forced: bool = False
    comment: str = ""
    label: str | None = None

    @property
    def reason(self) -> str:
        """One line for the audit record."""
        verdict = "forced past the limit" if self.forced else (
            "within the limit" if self.allowed else "too large")
        return (f"context estimate {self.estimate.tokens:,} tokens ({self.estimate.source}) vs "
                f"limit {self.limit:,}: {verdict}")


def parse_declared(body: str) -> int | None:
    """The ``Total estimated: N tokens`` of a ``## Context Estimate`` section, if there is one.

    Accepts ``45,000``, ``45000``, ``45k`` and ``**Total estimated:** 45000 tokens``.
    """
    for heading in _HEADING.finditer(body):
        level = len(heading.group(1))
        section_end = len(body)
        for nxt in _ANY_HEADING.finditer(body, heading.end()):
            if len(nxt.group(1)) <= level:
                section_end = nxt.start()
                break
        match = _TOTAL.search(body, heading.end(), section_end)
        if match:
            digits = re.sub(r"[,_ ]", "", match.group(1)).rstrip(".")
            try:
                number = float(digits)
            except ValueError:
                continue
            scale = {"k": 1_000, "m": 1_000_000}.get((match.group(2) or "").lower(), 1)
            return int(number * scale)
    return None


def named_files(text: str) -> list[str]:
    """File paths the text names (``runner/cli.py``, ``README.md``), each once, in order."""
    cleaned = _URL.sub(" ", text)
    found: list[str] = []
    for match in _PATH.finditer(cleaned):
        path, ext = match.group(1), match.group(2).lower()
        if ext in CODE_EXTENSIONS and not re.fullmatch(r"[\d.]+", path) and path not in found:
            found.append(path)
    for match in _BARE_NAMES.finditer(cleaned):
        if match.group(1) not in found:
            found.append(match.group(1))
    return found


def estimate(body: str, comments: Iterable[str] = ()) -> Estimate:
    """The issue's declared estimate if it has one, else the heuristic (see module docs)."""
    declared = parse_declared(body)
    if declared is not None:
        return Estimate(tokens=declared, source="declared")
    comments = list(comments)
    text = "\n".join([body, *comments])
    files = tuple(named_files(text))
    text_tokens = math.ceil(len(text) / CHARS_PER_TOKEN)
    tokens = math.ceil((len(files) * TOKENS_PER_FILE + text_tokens) * OVERHEAD)
    return Estimate(tokens=tokens, source="heuristic", files=files, text_tokens=text_tokens)


def decide(body: str, comments: Iterable[str], context_window: int,
           labels: Iterable[str] = ()) -> SizingDecision:
    """Apply the 50% rule.

    ``labels`` must only hold labels an authorised user added (the caller checks who added
    ``orchestrator:force``); that label lets an oversized issue run anyway.
    """
    if context_window <= 0:
        raise ValueError(f"context_window must be above 0, not {context_window}")
    est = estimate(body, comments)
    limit = int(context_window * MAX_SHARE)
    if est.tokens <= limit:
        return SizingDecision(True, est, limit)
    if any(label.lower() == FORCE_LABEL for label in labels):
        return SizingDecision(True, est, limit, forced=True)
    return SizingDecision(False, est, limit, comment=too_large_comment(est, limit),
                          label=TOO_LARGE_LABEL)


def too_large_comment(est: Estimate, limit: int) -> str:
    """The comment asking the author to split the issue."""
    if est.source == "declared":
        how = "the issue's `## Context Estimate` block declares it"
    else:
        files = f"{len(est.files)} file(s) named x {TOKENS_PER_FILE:,}" if est.files else \
            "no files named"
        how = (f"estimated from the issue: {files}, plus {est.text_tokens:,} tokens of text, "
               f"x {OVERHEAD}")
    return "\n".join([
        f"**This issue is too large for one agent run.** It needs about {est.tokens:,} tokens "
        f"of context ({how}); one run may use at most {limit:,}, half of the agent's context "
        "window, so that the agent has room to work.",
        "",
        "Please split it into smaller issues that each change a few files, and label those "
        "instead. If the estimate is wrong, add a block like this to the issue body:",
        "",
        "```markdown",
        "## Context Estimate",
        "- the files the change reads and writes",
        "Total estimated: 40,000 tokens",
        "```",
        "",
        f"A maintainer can also add the label `{FORCE_LABEL}` to run it anyway. "
        f"(Labelled `{TOO_LARGE_LABEL}`; nothing was started.)",
    ])
