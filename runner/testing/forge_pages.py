"""The forge emulator's pages for people: issues, an issue, a pull request, a CI log.

Server-rendered from Jinja2 templates (``runner/testing/templates/forge/``) with autoescape
on, in the dashboard's look, with no script. Comments are Markdown rendered by markdown-it-py
with raw HTML off, so a comment's ``<script>`` is text. Every button acts as one user (the
playground's maintainer, "already signed in") through the emulator's own REST API over HTTP,
so webhooks flow exactly as when a person uses a forge.

Paths are the forge's own web paths (what the API's ``html_url`` says): ``/{owner}/{repo}/
issues``, ``.../issues/{n}``, ``.../pull/{n}`` (GitHub) or ``.../pulls/{n}`` (Forgejo), and
``/_emulator/ci/{job}`` for a CI job's log. Links to the dashboard go through
``/_emulator/dashboard/{path}``, which opens the dashboard at that path, signed in by a
fresh one-time link when the pages were given a way to make one (the playground).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

import httpx
from jinja2 import Environment, FileSystemLoader
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.responses import HTMLResponse, RedirectResponse, Response

from runner.testing import forge_git
from runner.testing.forge_state import EmulatorError, Issue, LineCommentRecord, Repo

if TYPE_CHECKING:
    from runner.testing.forge import ForgeEmulator

TEMPLATES = Path(__file__).resolve().parent / "templates"
DASHBOARD_CSS = Path(__file__).resolve().parents[1] / "templates" / "dashboard.css"
RUN_ID = re.compile(r"\br-[0-9a-f]{12}\b")
CI_LOG = re.compile(r"/_emulator/ci/(\d+)/log$")
HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@(.*)$")
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'self'; "
                                      "form-action 'self'; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

# As in forges' comments: a newline is a line break; raw HTML is not rendered (shown as text).
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable(
    ["table", "strikethrough"])
HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)


def markdown(text: object) -> Markup:
    """Markdown as HTML, raw HTML in it shown as text (markdown-it-py escapes it); HTML
    comments (the runner's hidden markers) are dropped, as forges hide them."""
    # markdown-it-py's "commonmark" without html escapes every raw tag
    return Markup(_markdown.render(HTML_COMMENT.sub("", str(text or ""))))  # noqa: S704


_env = Environment(loader=FileSystemLoader(TEMPLATES / "forge"), autoescape=True,
                   trim_blocks=True, lstrip_blocks=True)
_env.filters["markdown"] = markdown


@dataclass
class DiffLine:
    kind: str  # add | del | ctx | hunk
    text: str
    old: int | None = None
    new: int | None = None
    threads: list[list[LineCommentRecord]] = field(default_factory=list)


@dataclass
class DiffFile:
    path: str
    lines: list[DiffLine] = field(default_factory=list)


def parse_diff(text: str) -> list[DiffFile]:
    """A unified diff as files of lines, each with its old and new line number."""
    files: list[DiffFile] = []
    old = new = 0
    for raw in text.splitlines():
        if raw.startswith("diff --git "):
            files.append(DiffFile(raw.split(" b/", 1)[-1]))
        elif not files or raw.startswith(("index ", "--- ", "+++ ", "new file", "deleted file",
                                          "similarity", "rename ", "old mode", "new mode")):
            continue
        elif match := HUNK.match(raw):
            old_start = int(raw.split()[1].lstrip("-").split(",")[0] or 0)
            old, new = old_start, int(match.group(1))
            files[-1].lines.append(DiffLine("hunk", raw))
        elif raw.startswith("+"):
            files[-1].lines.append(DiffLine("add", raw[1:], None, new))
            new += 1
        elif raw.startswith("-"):
            files[-1].lines.append(DiffLine("del", raw[1:], old, None))
            old += 1
        elif raw.startswith(" "):
            files[-1].lines.append(DiffLine("ctx", raw[1:], old, new))
            old, new = old + 1, new + 1
    return files


class ForgePages:
    """The pages of one emulator, acting as ``acting_as`` (who must have a token there)."""

    def __init__(self, forge: ForgeEmulator, acting_as: str, *, dashboard_url: str = "",
                 note: str = "", sign_in: Callable[[str], str] | None = None) -> None:
        self.forge, self.acting_as = forge, acting_as
        self.dashboard_url = dashboard_url.rstrip("/")
        self.sign_in = sign_in  # dashboard path -> a one-time link signing in there
        self.note = note  # a line shown under the header (e.g. the playground's "who you are")
        self.pull_word = "pull" if forge.flavour == "github" else "pulls"

    # ------------------------------------------------------------ routing

    def handle(self, method: str, path: str, headers: dict[str, str],
               body: bytes) -> Response | None:
        """The page or form answer for ``path``, or None when it is not a page's path."""
        parts = [quote(p, safe="") for p in path.strip("/").split("/")] if path != "/" else []
        try:
            if method == "GET":
                return self._get(parts)
            if method == "POST":
                origin = headers.get("origin")
                if origin and origin not in (self.forge.url, "null"):
                    return HTMLResponse("cross-site form refused", 403, headers=HEADERS)
                form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
                return self._post(parts, form)
        except EmulatorError as exc:
            return self._page("error.html", exc.status, title="Not found", message=exc.message)
        return None

    def _get(self, parts: list[str]) -> Response | None:
        if not parts:
            return self._page("home.html", repos=sorted(self.forge.state.repos.values(),
                                                        key=lambda r: r.full_name))
        if parts == ["_emulator", "forge.css"]:
            css = DASHBOARD_CSS.read_text() + (TEMPLATES / "forge" / "forge.css").read_text()
            return Response(css, 200, {"Content-Type": "text/css; charset=utf-8"})
        if len(parts) == 3 and parts[:2] == ["_emulator", "ci"] and parts[2].isdigit():
            return self.ci_page(int(parts[2]))
        if parts[:2] == ["_emulator", "dashboard"] and self.dashboard_url:
            return self.to_dashboard("/" + "/".join(parts[2:]))
        if len(parts) < 2 or parts[0].startswith(("_", "api")) or parts[1].endswith(".git"):
            return None
        repo = self.forge.state.repo(parts[0], parts[1])
        rest = parts[2:]
        if not rest:
            return RedirectResponse(f"/{repo.full_name}/issues", 303)
        if rest == ["issues"]:
            return self.issues_page(repo)
        if len(rest) == 2 and rest[1].isdigit() and rest[0] in ("issues", "pull", "pulls"):
            issue = self.forge.state.issue(repo, int(rest[1]))
            if issue.pull is not None and rest[0] == "issues":
                return RedirectResponse(self.url_of(repo, issue), 303)
            return self.pull_page(repo, issue) if issue.pull else self.issue_page(repo, issue)
        return None

    def _post(self, parts: list[str], form: dict[str, str]) -> Response | None:
        if len(parts) < 3 or parts[0].startswith("_"):
            return None
        repo = self.forge.state.repo(parts[0], parts[1])
        rest = parts[2:]
        if rest == ["issues", "new"]:
            answer = self._api("POST", f"/repos/{repo.full_name}/issues",
                               {"title": form.get("title", ""), "body": form.get("body", "")})
            if answer.status_code >= 300:
                return self._refused(answer)
            return RedirectResponse(f"/{repo.full_name}/issues/{answer.json()['number']}", 303)
        if len(rest) != 3 or not rest[1].isdigit():
            return None
        issue = self.forge.state.issue(repo, int(rest[1]))
        back = self.url_of(repo, issue)
        api = f"/repos/{repo.full_name}/issues/{issue.number}"
        if rest[2] == "comment" and form.get("body", "").strip():
            answer = self._api("POST", f"{api}/comments", {"body": form["body"]})
        elif rest[2] == "label" and form.get("name", "").strip():
            answer = self._api("POST", f"{api}/labels", {"labels": [self._label_ref(
                repo, form["name"].strip())]})
        elif rest[2] == "unlabel" and form.get("name"):
            label = repo.label(form["name"])
            ref = quote(form["name"], safe="") if self.forge.flavour == "github" else \
                str(label.id if label else 0)
            answer = self._api("DELETE", f"{api}/labels/{ref}", None)
        elif rest[2] == "review" and issue.pull is not None:
            answer = self._api("POST", f"/repos/{repo.full_name}/pulls/{issue.number}/reviews",
                               self.review_body(form))
        elif rest[2] == "merge" and issue.pull is not None:
            answer = self.merge(repo, issue)
        else:
            return RedirectResponse(back, 303)
        return self._refused(answer) if answer.status_code >= 300 else \
            RedirectResponse(back, 303)

    # ------------------------------------------------------------ acting

    def _api(self, method: str, path: str, body: Any) -> httpx.Response:
        """One REST call as the signed-in user: the emulator answers it like any client's."""
        user = self.forge.state.user(self.acting_as)
        with httpx.Client(timeout=30.0) as client:
            return client.request(method, f"{self.forge.api_url}{path}", json=body,
                                  headers={"Authorization": f"token {user.token}"})

    def merge(self, repo: Repo, issue: Issue) -> httpx.Response:
        """Merge the pull request with a merge commit, as each forge's API asks for it."""
        path = f"/repos/{repo.full_name}/pulls/{issue.number}/merge"
        if self.forge.flavour == "github":
            return self._api("PUT", path, {"merge_method": "merge"})
        return self._api("POST", path, {"Do": "merge"})

    def _label_ref(self, repo: Repo, name: str) -> str | int:
        if self.forge.flavour == "github":
            return name  # GitHub creates a label it does not know
        label = repo.label(name)  # Forgejo adds labels by id, and only existing ones
        return label.id if label is not None else name

    def review_body(self, form: dict[str, str]) -> dict[str, Any]:
        """The review API's body for the review form: a summary, a verdict and (optionally)
        one line comment on a line of the new side of the diff."""
        github = self.forge.flavour == "github"
        verdicts = {"comment": "COMMENT", "approve": "APPROVE" if github else "APPROVED",
                    "request_changes": "REQUEST_CHANGES"}
        body: dict[str, Any] = {"body": form.get("body", ""),
                                "event": verdicts.get(form.get("event", ""), "COMMENT")}
        line, path, text = form.get("line", ""), form.get("path", ""), form.get("comment", "")
        if path and line.isdigit() and text.strip():
            comment: dict[str, Any] = {"path": path, "body": text}
            comment.update({"line": int(line), "side": "RIGHT"} if github
                           else {"new_position": int(line)})
            body["comments"] = [comment]
        return body

    def _refused(self, answer: httpx.Response) -> Response:
        try:
            message = str(answer.json().get("message"))
        except ValueError:
            message = answer.text[:500]
        return self._page("error.html", answer.status_code, title="The forge refused",
                          message=f"{answer.status_code}: {message}")

    # ------------------------------------------------------------ pages

    def url_of(self, repo: Repo, issue: Issue) -> str:
        """The web path of an issue or pull request."""
        kind = self.pull_word if issue.pull is not None else "issues"
        return f"/{repo.full_name}/{kind}/{issue.number}"

    def to_dashboard(self, path: str) -> Response:
        """The dashboard at ``path``: through a fresh one-time sign-in link when the pages
        can make one (each click makes its own: a link signs in once)."""
        if not re.fullmatch(r"/(runs(/r-[0-9a-f]{6,32})?|health)", path):
            path = "/runs"
        target = self.sign_in(path) if self.sign_in else self.dashboard_url + path
        return RedirectResponse(target, 303, headers={"Cache-Control": "no-store",
                                                      "Referrer-Policy": "no-referrer"})

    def _page(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        text = _env.get_template(template).render(
            me=self.acting_as, note=self.note, dashboard=self.dashboard_url,
            flavour=self.forge.flavour, url_of=self.url_of, **values)
        return HTMLResponse(text, status, headers=HEADERS)

    def issues_page(self, repo: Repo) -> HTMLResponse:
        with self.forge.state.lock:
            issues = sorted(repo.issues.values(), key=lambda i: -i.number)
            return self._page("issues.html", repo=repo, issues=issues,
                              title=f"Issues · {repo.full_name}")

    def _runs(self, issue: Issue) -> list[str]:
        """Run ids named in the issue's comments (the runner's status comment names its run)."""
        found: list[str] = []
        for comment in issue.comments:
            for run_id in RUN_ID.findall(comment.body):
                if run_id not in found:
                    found.append(run_id)
        return found

    def _timeline(self, issue: Issue) -> list[tuple[str, Any]]:
        items: list[tuple[Any, str, Any]] = [(c.created_at, "comment", c) for c in issue.comments]
        items += [(e.created_at, "event", e) for e in issue.events]
        return [(kind, value) for _at, kind, value in sorted(items, key=lambda x: x[0])]

    def issue_page(self, repo: Repo, issue: Issue) -> HTMLResponse:
        with self.forge.state.lock:
            pulls = [p for p in repo.pulls() if f"#{issue.number}" in p.body]
            return self._page("issue.html", repo=repo, issue=issue,
                              timeline=self._timeline(issue), runs=self._runs(issue),
                              labels=sorted({x.name for x in repo.labels} | {"orchestrator",
                                                                             "orchestrator:kill"}),
                              pulls=pulls, title=f"#{issue.number} {issue.title}")

    def pull_page(self, repo: Repo, issue: Issue) -> HTMLResponse:
        with self.forge.state.lock:
            pull = issue.pull
            assert pull is not None
            diff = forge_git.git("diff", f"{pull.base_sha}...{pull.head_sha}",
                                 cwd=repo.git_dir, check=False)
            files = parse_diff(diff)
            loose = self._place_threads(files, pull.line_comments)
            statuses = [(s, self._ci_page_url(s.target_url))
                        for s in self.forge.state.latest_statuses(repo, pull.head_sha)]
            checks = [c for c in repo.check_runs if c.sha == pull.head_sha]
            commentable = sorted({(f.path, ln.new) for f in files for ln in f.lines
                                  if ln.kind == "add" and ln.new is not None})
            return self._page("pull.html", repo=repo, issue=issue, pull=pull, files=files,
                              statuses=statuses, checks=checks, loose=loose,
                              timeline=self._timeline(issue), runs=self._runs(issue),
                              commentable=commentable,
                              title=f"PR #{issue.number} {issue.title}")

    @staticmethod
    def _place_threads(files: list[DiffFile], comments: list[LineCommentRecord]
                       ) -> list[list[LineCommentRecord]]:
        """Each conversation (a first line comment and its replies) under the diff line it
        is on; the conversations on lines no longer in the diff are returned."""
        threads: dict[int, list[LineCommentRecord]] = {}
        for comment in sorted(comments, key=lambda c: (c.created_at, c.id)):
            threads.setdefault(comment.in_reply_to or comment.id, []).append(comment)
        right = {(f.path, ln.new): ln for f in files for ln in f.lines
                 if ln.new is not None and ln.kind != "del"}
        left = {(f.path, ln.old): ln for f in files for ln in f.lines
                if ln.old is not None and ln.kind == "del"}
        loose: list[list[LineCommentRecord]] = []
        for thread in threads.values():
            first = thread[0]
            target = (right if first.side == "RIGHT" else left).get((first.path, first.line))
            (target.threads if target is not None else loose).append(thread)
        return loose

    @staticmethod
    def _ci_page_url(target: str) -> str:
        match = CI_LOG.search(target or "")
        return f"/_emulator/ci/{match.group(1)}" if match else (target or "")

    def ci_page(self, job_id: int) -> HTMLResponse:
        job = next((j for j in self.forge.ci_jobs if j.id == job_id), None)
        if job is None:
            raise EmulatorError(404, f"no CI job {job_id}")
        log = job.log_path.read_text(errors="replace") if job.log_path.exists() else ""
        repo = self.forge.state.repos.get(job.repo.lower())
        return self._page("ci.html", job=job, log=log, repo=repo,
                          title=f"CI job {job.id} · {job.state}")
