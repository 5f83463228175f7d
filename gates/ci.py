"""Helpers the CI templates call: the issue's labels for a PR branch, and a commit status.

``python -m gates.ci labels --api URL --repo OWNER/NAME --branch orchestrator/issue-12``
prints the issue's labels, comma-separated (nothing for a branch that names no issue).
``python -m gates.ci status --api URL --repo OWNER/NAME --sha SHA --results gates.json``
posts the commit status ``orchestrator/gates`` (``--state pending`` before the run).

The token comes from the environment (``ORCHESTRATOR_TOKEN``, else ``GITHUB_TOKEN``), never
from the command line, where CI logs and process listings would show it. The same requests
work on GitHub (``$GITHUB_API_URL``) and Forgejo/Gitea (``<server>/api/v1``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from gates.model import GateResult, GatesError
from gates.profiles import ALLOW_CI_CHANGES_LABEL

STATUS_CONTEXT = "orchestrator/gates"
_BRANCH = re.compile(r"^orchestrator/issue-(\d+)(?:[-/].*)?$")
TOKEN_ENVS = ("ORCHESTRATOR_TOKEN", "GITHUB_TOKEN")


def issue_number(branch: str) -> int | None:
    """The issue a runner branch belongs to: ``orchestrator/issue-12`` -> 12."""
    match = _BRANCH.match(branch.removeprefix("refs/heads/"))
    return int(match.group(1)) if match else None


def _token(environ: dict[str, str]) -> str:
    return next((environ[name] for name in TOKEN_ENVS if environ.get(name)), "")


def _call(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> Any:
    if not url.startswith(("https://", "http://")):
        raise GatesError(f"{url}: the forge's API URL must start with https:// (or http://)")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (http(s) only)
    request.add_header("Accept", "application/json")
    request.add_header("User-Agent", "orchestrator-gates")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (http(s) only)
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise GatesError(f"{method} {url}: HTTP {exc.code} {exc.reason} (does the token "
                         "have access to the repository?)") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise GatesError(f"{method} {url}: cannot connect ({reason})") from None
    return json.loads(raw) if raw.strip() else None


def fetch_labels(api: str, repo: str, number: int, token: str) -> list[str]:
    """The names of the labels on issue ``number``."""
    issue = _call("GET", f"{api.rstrip('/')}/repos/{repo}/issues/{number}", token)
    return [str(label["name"]) for label in (issue or {}).get("labels") or []]


def describe(results: Sequence[GateResult]) -> tuple[str, str]:
    """The commit status state and description for a list of gate results."""
    if not results:
        return "error", "the gates produced no results"
    failed = [r.gate for r in results if not r.passed]
    if failed:
        return "failure", f"failed: {', '.join(failed)}"[:140]
    return "success", f"all {len(results)} gates passed"


def post_status(api: str, repo: str, sha: str, state: str, description: str, token: str,
                target_url: str = "", context: str = STATUS_CONTEXT) -> None:
    """Set a commit status (GitHub and Forgejo share this endpoint and body)."""
    body = {"state": state, "description": description[:140], "context": context}
    if target_url:
        body["target_url"] = target_url
    _call("POST", f"{api.rstrip('/')}/repos/{repo}/statuses/{sha}", token, body)


def _results(path: str) -> list[GateResult]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return [GateResult.from_dict(item) for item in data]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError) as exc:
        raise GatesError(f"{path}: not the JSON of `python -m gates --json` ({exc})") from None


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """Entry point of ``python -m gates.ci``; returns the exit status."""
    environ = dict(os.environ) if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m gates.ci")
    sub = parser.add_subparsers(dest="command", required=True)
    labels = sub.add_parser("labels", help="print the labels of the branch's issue")
    status = sub.add_parser("status", help="post the orchestrator/gates commit status")
    for p in (labels, status):
        p.add_argument("--api", required=True, help="API root ($GITHUB_API_URL, <forgejo>/api/v1)")
        p.add_argument("--repo", required=True, help="owner/name")
    labels.add_argument("--branch", required=True, help="the PR's head branch")
    status.add_argument("--sha", required=True)
    status.add_argument("--results", help="the file `python -m gates --json-out` wrote")
    status.add_argument("--state", choices=["pending", "success", "failure", "error"])
    status.add_argument("--description", default="")
    status.add_argument("--target-url", default="")
    args = parser.parse_args(argv)
    token = _token(environ)
    try:
        if args.command == "labels":
            number = issue_number(args.branch)
            names = fetch_labels(args.api, args.repo, number, token) if number else []
            # A label value must survive being passed on as one comma-separated argument.
            print(",".join(n.replace(",", " ") for n in names))
            return 0
        if args.state:
            state, description = args.state, args.description or f"gates {args.state}"
        else:
            state, description = describe(_results(args.results or "gates.json"))
        post_status(args.api, args.repo, args.sha, state, description, token, args.target_url)
        print(f"{STATUS_CONTEXT}: {state}: {description}")
        return 0
    except GatesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


__all__ = ["ALLOW_CI_CHANGES_LABEL", "STATUS_CONTEXT", "describe", "fetch_labels",
           "issue_number", "main", "post_status"]

if __name__ == "__main__":
    sys.exit(main())
