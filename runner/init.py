"""``orchestrator init``: write the CI templates and the gate profiles into a repository.

Writes ``<forge dir>/workflows/orchestrator-gates.yml`` and ``orchestrator-dispatch.yml``
(``.github/`` or ``.forgejo/``) and ``.orchestrator/gates.yml``, refusing to overwrite
unless forced, and returns the manual steps that are left (accounts, secrets, webhook).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from gates import safegit
from runner.paths import CONFIG_DIR

DISTRIBUTION = "gitops-agent-runner"  # on PyPI; the console script is `orchestrator`
PLACEHOLDER = "__ORCHESTRATOR_PACKAGE__"
# What the templates may install: one commit of a repository, over https.
_PINNED = re.compile(rf"^{DISTRIBUTION} @ git\+https://[^\s@]+@[0-9a-f]{{40}}$")
_INSTALL = re.compile(r"pip install\b(?P<args>[^\n]*)")

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


def pinned_package(package: str) -> str:
    """``package`` as the templates install it (``gitops-agent-runner @ git+https://...@SHA``),
    or InitError when it does not name one exact commit."""
    package = package.strip()
    if package.startswith("git+"):
        package = f"{DISTRIBUTION} @ {package}"
    if not _PINNED.match(package):
        raise InitError(f"--package {package!r} is not pinned: give a git reference to one "
                        "commit, git+https://HOST/OWNER/REPO@<40-hex commit> (the workflows "
                        "hold the forge token and the LLM key, so they never install a name "
                        "or a branch that can change under them)")
    return package


def _https(url: str) -> str | None:
    """An https clone URL for ``url`` (``git@host:o/r.git`` -> ``https://host/o/r.git``)."""
    ssh = re.match(r"^(?:ssh://)?git@([^:/]+)[:/](.+)$", url)
    if ssh:
        return f"https://{ssh.group(1)}/{ssh.group(2)}"
    if url.startswith("https://") and "@" not in url.split("//", 1)[1].split("/", 1)[0]:
        return url
    return None


def default_package(source: Path | None = None) -> str:
    """The commit the running orchestrator was installed from, when it is a git checkout
    with an https (or ssh) ``origin``; InitError asking for ``--package`` otherwise."""
    root = source or Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = safegit.run(*args, cwd=root, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    sha = git("rev-parse", "HEAD") if (root / ".git").exists() else ""
    url = _https(git("config", "--get", "remote.origin.url")) if sha else None
    if not sha or not url:
        raise InitError("cannot tell which commit of the orchestrator the workflows should "
                        "install: pass --package git+https://HOST/OWNER/REPO@<commit>")
    return pinned_package(f"git+{url}@{sha}")


def bare_installs(text: str) -> list[str]:
    """The ``pip install`` arguments in ``text`` that are not the pinned ``$ORCHESTRATOR_PACKAGE``
    (a name, or a name with a version range, resolves to whatever is published today)."""
    bad = []
    for match in _INSTALL.finditer(text):
        args = [a for a in match.group("args").split() if not a.startswith("-")]
        if args != ['"$ORCHESTRATOR_PACKAGE"']:
            bad.append(match.group(0).strip())
    for line in text.splitlines():
        if line.strip().startswith("ORCHESTRATOR_PACKAGE:"):
            value = line.split(":", 1)[1].strip().strip('"')
            if value != PLACEHOLDER and not _PINNED.match(value):
                bad.append(line.strip())
    return bad


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
        "workflow ignores its comments). The workflows install the orchestrator from the "
        "commit pinned in them (ORCHESTRATOR_PACKAGE); to upgrade, run init again with "
        "--force (and --package for another commit).",
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
              webhook_url: str | None = None, config_dir: Path = CONFIG_DIR,
              package: str | None = None) -> InitResult:
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
    pin = pinned_package(package) if package else default_package()
    result = InitResult(kind=kind, steps=manual_steps(kind, webhook_url))
    rendered = []
    for src, dest in pairs:
        text = src.read_text(encoding="utf-8").replace(PLACEHOLDER, pin)
        bad = bare_installs(text)
        if bad:
            raise InitError(f"template {src.name} installs an unpinned package ({bad[0]}); "
                            "nothing written")
        rendered.append((dest, text))
    for dest, text in rendered:
        target = root / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        result.written.append(dest)
    return result
