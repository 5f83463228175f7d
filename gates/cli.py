"""``python -m gates``: run a gate profile on the checkout in the current directory.

Exit status: 0 every gate passed, 1 a gate failed, 2 a usage or configuration mistake (one
line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gates.choose import choose_profile
from gates.model import GateResult, GatesError
from gates.profiles import find_config, load_config
from gates.run import all_passed, run_profile


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's default prints the whole usage; one actionable line is easier to act on.
        self.exit(2, f"error: {message} (see `python -m gates --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m gates", description=(
        "Run the mechanical gates of a profile on this checkout: secret scan and size of the "
        "diff against the base, protected paths, and the profile's commands."))
    parser.add_argument("--profile", help="profile in gates.yml; a gates:<name> label in "
                        "--labels overrides it [default: the file's default_profile]")
    parser.add_argument("--base", default=None,
                        help="ref to diff against [default: $GATES_BASE or origin/main]")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--json-out", metavar="FILE",
                        help="also write the JSON results to FILE (the table still prints)")
    parser.add_argument("--config", help="gates.yml to use [default: $ORCHESTRATOR_GATES_CONFIG"
                        ", .orchestrator/gates.yml, the bundled config/gates.yml]")
    parser.add_argument("--labels", default="",
                        help="the issue's labels, comma-separated (profile choice, and "
                        "orchestrator:allow-ci-changes)")
    parser.add_argument("--fast", action="store_true",
                        help="only the pre-push part: in-process checks and fast commands")
    parser.add_argument("-C", "--repo", default=".", help="checkout to check [default: .]")
    return parser


def _table(results: list[GateResult], profile: str) -> Table:
    table = Table(title=f"gates: profile {profile}", header_style="bold", title_justify="left")
    for column in ("GATE", "RESULT", "EXPECTED", "ACTUAL", "MESSAGE"):
        table.add_column(column, overflow="fold")
    for r in results:
        verdict = Text("pass", style="green") if r.passed else Text("FAIL", style="bold red")
        table.add_row(r.gate, verdict, r.expected, r.actual, r.message)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    labels = [lbl.strip() for lbl in args.labels.split(",") if lbl.strip()]
    base = args.base or os.environ.get("GATES_BASE") or "origin/main"
    try:
        config = load_config(find_config(args.repo, args.config))
        choice = choose_profile(labels, args.profile or config.default_profile,
                                known=config.profiles)
        results = run_profile(args.repo, config.profile(choice.name), base, labels,
                              config=config, only_fast=args.fast)
    except GatesError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        return exc.exit_code
    if args.json_out:
        try:
            with open(args.json_out, "w", encoding="utf-8") as fh:
                json.dump([r.to_dict() for r in results], fh, indent=2)
        except OSError as exc:
            err.print(f"[bold red]error:[/] cannot write {args.json_out}: {exc}")
            return 2
    if args.json:
        sys.stdout.write(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    else:
        out = Console(highlight=False, width=max(Console().width, 120))
        out.print(_table(results, f"{choice.name} ({choice.source})"))
        failed = [r.gate for r in results if not r.passed]
        out.print("[green]all gates passed[/]" if not failed else
                  f"[bold red]{len(failed)} gate(s) failed:[/] {', '.join(failed)}")
    return 0 if all_passed(results) else 1


if __name__ == "__main__":
    sys.exit(main())
