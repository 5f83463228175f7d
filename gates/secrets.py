"""Secret scan of the lines a diff adds: detect-secrets' precise detectors plus our own.

A finding names the file, the line and the kind of secret, never the secret itself: the
report goes to CI logs, PR comments and the agent, all of which an attacker may read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

from gates.model import Diff

# Token formats detect-secrets does not know, or knows only in an older form. The
# Forgejo/Gitea token is 40 hex digits, the shape of a commit SHA, so it is only reported next
# to a word that says "token", "authorization" and the like.
CUSTOM_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("Anthropic API key", re.compile(r"\bsk-ant-[a-z]+[0-9]*-[A-Za-z0-9_\-]{20,}")),
    ("OpenAI API key", re.compile(r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{20,}")),
    ("OpenAI API key", re.compile(r"\bsk-[A-Za-z0-9]{48}\b")),
    ("GitHub token", re.compile(r"\bgh[oprsu]_[A-Za-z0-9]{36,}")),
    ("GitHub token", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{50,}")),
    ("Forgejo/Gitea token", re.compile(
        r"(?i)(?:token|authorization|bearer|api[_-]?key|secret|password|passwd|\bpat\b)"
        r"[^\n]{0,40}?(?<![0-9a-fA-F])[0-9a-f]{40}(?![0-9a-fA-F])")),
)

# detect-secrets' names, aligned with ours so one secret is reported once.
_RENAME = {"GitHub Token": "GitHub token", "OpenAI Token": "OpenAI API key"}

# Only detectors with few false positives: the keyword and entropy detectors fire on ordinary
# code and would teach maintainers to ignore this gate.
_DETECTORS: tuple[Any, ...] = (
    AWSKeyDetector(), GitHubTokenDetector(), GitLabTokenDetector(), OpenAIDetector(),
    PrivateKeyDetector(), SlackDetector(), StripeDetector(), TwilioKeyDetector(),
    SendGridDetector(), NpmDetector(), PypiTokenDetector(), DiscordBotTokenDetector(),
    ArtifactoryDetector(), AzureStorageKeyDetector(),
)


@dataclass(frozen=True)
class SecretFinding:
    """Where a secret was added, and what kind; deliberately without its value."""

    path: str
    line: int
    kind: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}"


def scan_line(line: str) -> list[str]:
    """The kinds of secret found in one line (no values), one entry per kind."""
    kinds: list[str] = []
    for kind, pattern in CUSTOM_PATTERNS:
        if kind not in kinds and pattern.search(line):
            kinds.append(kind)
    for detector in _DETECTORS:
        kind = _RENAME.get(detector.secret_type, detector.secret_type)
        # analyze_string, not analyze_line: the latter may try to verify a key over the network.
        if kind not in kinds and any(True for _ in detector.analyze_string(line)):
            kinds.append(kind)
    return kinds


def scan_lines(path: str, lines: Iterable[tuple[int, str]]) -> Iterator[SecretFinding]:
    """Findings in ``(line number, text)`` pairs of one file."""
    for number, text in lines:
        if len(text) > 20_000:  # minified blobs: scan, but in pieces to keep regexes linear
            chunks = [text[i:i + 20_000] for i in range(0, len(text), 19_000)]
        else:
            chunks = [text]
        seen: set[str] = set()
        for chunk in chunks:
            for kind in scan_line(chunk):
                if kind not in seen:
                    seen.add(kind)
                    yield SecretFinding(path, number, kind)


def scan_diff(diff: Diff) -> list[SecretFinding]:
    """Every secret the diff adds, in file order."""
    findings: list[SecretFinding] = []
    for file in diff.files:
        findings.extend(scan_lines(file.path, file.added))
    return findings


def _hide_hex(label: str, match: re.Match[str]) -> str:
    return re.sub(r"[0-9a-f]{40}", label, match.group(0))


def redact(text: str) -> str:
    """``text`` with every secret it holds replaced by ``[redacted <kind>]``.

    For audit events and logs: what an agent typed may hold a credential it planted or found.
    """
    for kind, pattern in CUSTOM_PATTERNS:
        if kind.startswith("Forgejo"):  # keep the context words, hide the 40 hex digits
            text = pattern.sub(partial(_hide_hex, f"[redacted {kind}]"), text)
        else:
            text = pattern.sub(f"[redacted {kind}]", text)
    for detector in _DETECTORS:
        kind = _RENAME.get(detector.secret_type, detector.secret_type)
        for value in set(detector.analyze_string(text)):
            if value and len(value) >= 8:
                text = text.replace(value, f"[redacted {kind}]")
    return text
