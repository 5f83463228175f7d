"""``orchestrator init``: write the CI templates and the gate profiles into a repository.

Writes ``<forge dir>/workflows/orchestrator-gates.yml`` and ``orchestrator-dispatch.yml``
(``.github/`` or ``.forgejo/``) and ``.orchestrator/gates.yml``, refusing to overwrite
unless forced, and returns the manual steps that are left (accounts, secrets, webhook).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from runner.paths import CONFIG_DIR

FORGE_DIRS = {"github": ".github/workflows", "forgejo": ".forgejo/workflows"}
WORKFLOWS = ("orchestrator-gates.yml", "orchestrator-dispatch.yml")
GATES_FILE = Path(".orchestrator") / "gates.yml"
KINDS = tuple(FORGE_DIRS)


class InitError(Exception):
    """Why init wrote nothing, phrased so the user knows what to do."""


@dataclass
class InitResult:
    kind: str
    written: list[Path] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)


def detect_kind(repo: Path) -> str | None:
    """The forge a checkout is for, judged by the workflow folder it already has."""
    has = [kind for kind, folder in FORGE_DIRS.items() if (repo / folder.split("/")[0]).is_dir()]
    return has[0] if len(has) == 1 else None


def files_for(kind: str, config_dir: Path = CONFIG_DIR) -> list[tuple[Path, Path]]:
    """(template source, destination relative to the repository) for a forge kind."""
    if kind not in FORGE_DIRS:
        raise InitError(f"unknown forge kind {kind!r} (use one of: {', '.join(KINDS)})")
    pairs = [(config_dir / "templates" / kind / name, Path(FORGE_DIRS[kind]) / name)
             for name in WORKFLOWS]
    pairs.append((config_dir / "gates.yml", GATES_FILE))
    return pairs


def manual_steps(kind: str, webhook_url: str | None = None) -> list[str]:
    """What is left for a human after the files are written."""
    secrets_page = ("Settings > Secrets and variables > Actions" if kind == "github"
                    else "Settings > Actions > Secrets")
    token_scopes = ("a fine-grained token with read/write on contents, issues, pull requests "
                    "and commit statuses" if kind == "github"
                    else "a token with the scopes write:repository and write:issue")
    hook = (f"{webhook_url.rstrip('/')}/webhooks/{kind}" if webhook_url
            else f"https://<your runner>/webhooks/{kind}")
    return [
        f"Commit and push the files: git add {FORGE_DIRS[kind].split('/')[0]} .orchestrator "
        "&& git commit -m 'Add the orchestrator' && git push.",
        "Create a bot account for the runner (e.g. orchestrator-bot) and give it admin on "
        "this repository (it pushes branches, opens PRs, sets statuses and labels).",
        f"Create {token_scopes} for the bot, and add it as the repository secret "
        f"ORCHESTRATOR_TOKEN ({secrets_page}); add ANTHROPIC_API_KEY there too if the "
        "dispatch workflow runs the agent.",
        "Set the repository variable ORCHESTRATOR_BOT_USER to the bot's login (the dispatch "
        "workflow ignores its comments), and ORCHESTRATOR_PACKAGE if the orchestrator is "
        "not installed from PyPI as forge-orchestrator.",
        f"If a runner serves webhooks (`orchestrator serve`): add a webhook to {hook}, "
        "content type application/json, events: issues, issue comments, pull requests, "
        "statuses; its secret is the value of the environment variable named by "
        "forges.<name>.webhook_secret_env in orchestrator.yml.",
        "Protect the base branch: require the status checks orchestrator/gates and "
        "orchestrator/ai-review before merging.",
        "Create the labels orchestrator, orchestrator:kill, orchestrator:too-large, "
        "orchestrator:force, orchestrator:allow-ci-changes and gates:strict / gates:standard"
        " / gates:minimal.",
        "Edit .orchestrator/gates.yml so each profile's commands fit this repository.",
    ]


def init_repo(repo: str | os.PathLike[str], kind: str | None = None, *, force: bool = False,
              webhook_url: str | None = None, config_dir: Path = CONFIG_DIR) -> InitResult:
    """Write the templates into the checkout at ``repo``; InitError and nothing written when
    a file exists (unless ``force``), the path is not a git checkout, or the kind is unknown.
    """
    root = Path(repo)
    if not root.is_dir():
        raise InitError(f"{root} is not a directory (give the path of a repository checkout)")
    if not (root / ".git").exists():
        raise InitError(f"{root} is not a git checkout (clone the repository first, then "
                        "run `orchestrator init` inside it)")
    if kind is None:
        kind = detect_kind(root)
        if kind is None:
            raise InitError("cannot tell which forge this repository is on: pass "
                            "--forge github or --forge forgejo")
    pairs = files_for(kind, config_dir)
    missing = [str(src) for src, _ in pairs if not src.is_file()]
    if missing:
        raise InitError(f"template(s) missing from the orchestrator: {', '.join(missing)} "
                        "(run from a complete checkout or installation)")
    existing = [str(dest) for _, dest in pairs if (root / dest).exists()]
    if existing and not force:
        raise InitError(f"{', '.join(existing)} already exist(s) in {root}: nothing written "
                        "(use --force to overwrite)")
    result = InitResult(kind=kind, steps=manual_steps(kind, webhook_url))
    for src, dest in pairs:
        target = root / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
        result.written.append(dest)
    return result
