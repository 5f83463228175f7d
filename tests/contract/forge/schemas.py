"""Validators built from the shared forge contracts (``../shared/contracts``, never copied).

GitHub responses are checked with openapi-core against ``github/rest-subset.json``; Forgejo
responses with jsonschema against ``forgejo/swagger.v1.json`` made closed world (every listed
property required, nothing else allowed, nested objects may be null); GitHub webhook payloads
against ``github/webhooks-subset.json``.
"""

from __future__ import annotations

import copy
import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4, DRAFT202012

REPO_ROOT = Path(__file__).resolve().parents[3]


def contracts_dir() -> Path | None:
    """``$ORCHESTRATOR_CONTRACTS`` or ``../shared/contracts`` beside the clone, if present."""
    override = os.environ.get("ORCHESTRATOR_CONTRACTS")
    path = Path(override) if override else REPO_ROOT.parent / "shared" / "contracts"
    return path if (path / "github" / "rest-subset.json").is_file() else None


class ContractViolation(AssertionError):
    """A response does not match the published description of the forge's API."""


# ---------------------------------------------------------------- GitHub REST


class GitHubContract:
    def __init__(self, root: Path) -> None:
        from openapi_core import OpenAPI

        self.spec = json.loads((root / "github" / "rest-subset.json").read_text())
        self.api = OpenAPI.from_dict(_nullable_enums(copy.deepcopy(self.spec)))

    def validate(self, method: str, path: str, query: dict[str, str], status: int,
                 body: bytes, content_type: str = "application/json") -> None:
        """Raise ContractViolation when the response breaks the published schema."""
        from openapi_core.testing import MockRequest, MockResponse

        request = MockRequest("https://api.github.com", method.lower(), path, args=query)
        response = MockResponse(body, status_code=status, content_type=content_type)
        try:
            if status in (401, 403) and not self._documents(method, path, status):
                # GitHub answers bad credentials on every path, documented there or not.
                self._basic_error(body)
                return
            self.api.validate_response(request, response)
        except Exception as exc:  # openapi-core raises a family of errors
            cause = exc.__cause__ or exc
            errors = getattr(cause, "schema_errors", None) or getattr(exc, "schema_errors", [])
            details = "; ".join(f"{list(e.absolute_path)}: {e.message[:200]}"
                                for e in list(errors)[:5])
            raise ContractViolation(
                f"{method} {path} -> {status}: {type(exc).__name__}: {details or str(exc)[:500]}"
            ) from exc

    def knows(self, method: str, path: str) -> bool:
        return _match(self.spec["paths"], method, path) is not None

    def _documents(self, method: str, path: str, status: int) -> bool:
        template = _match(self.spec["paths"], method, path)
        return template is not None and str(status) in (
            self.spec["paths"][template][method.lower()]["responses"])

    def _basic_error(self, body: bytes) -> None:
        from openapi_schema_validator import OAS30Validator

        schema = {**self.spec["components"]["schemas"]["basic-error"],
                  "required": ["message", "documentation_url"]}
        errors = list(OAS30Validator(schema).iter_errors(json.loads(body)))
        if errors:
            raise ContractViolation(f"error body: {errors[0].message}")


def _nullable_enums(node: Any) -> Any:
    """OpenAPI 3.0.3: a nullable enum must list null itself; GitHub's description forgets.

    (``check-run.conclusion`` is ``nullable`` with an enum, and GitHub sends null for a run
    in progress.) This repairs the description, not the emulator.
    """
    if isinstance(node, dict):
        if node.get("nullable") and isinstance(node.get("enum"), list) and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
        for value in node.values():
            _nullable_enums(value)
    elif isinstance(node, list):
        for value in node:
            _nullable_enums(value)
    return node


def _match(paths: dict[str, Any], method: str, path: str) -> str | None:
    """The most specific path template matching ``path`` that has ``method``."""
    for greedy_tail in (False, True):
        best: tuple[int, int, str] | None = None
        for template, item in paths.items():
            if method.lower() not in item:
                continue
            regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
            if greedy_tail:  # Forgejo's /pulls/{base}/{head}: a branch name may hold slashes
                regex = re.sub(r"\[\^/\]\+$", ".+", regex)
            if re.match(f"^{regex}$", path):
                score = (template.count("{"), -len(template), template)
                if greedy_tail:  # then the template with the most segments is the one meant
                    score = (-template.count("/"), template.count("{"), template)
                if best is None or score < best:
                    best = score
        if best:
            return best[2]
    return None


# ---------------------------------------------------------------- Forgejo


def close_world(schema: Any) -> Any:
    """Every listed property required, no extra ones, nested objects (and pointer times) nullable.

    Times are nullable because Forgejo's Go structs use *time.Time (``closed_at`` of an open
    issue is null); arrays stay strict.
    """
    if isinstance(schema, list):
        return [close_world(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: close_world(v) for k, v in schema.items()}
    if "properties" in schema:
        props = {}
        for name, prop in out["properties"].items():
            if "$ref" in prop:
                prop = {"anyOf": [prop, {"type": "null"}]}
            elif prop.get("format") == "date-time":
                prop = {**prop, "type": ["string", "null"]}
            elif prop.get("type") == "object":
                prop = {**prop, "type": ["object", "null"]}
            props[name] = prop
        out["properties"] = props
        out["required"] = sorted(props)
        out.setdefault("additionalProperties", False)
    return out


class ForgejoContract:
    def __init__(self, root: Path) -> None:
        raw = json.loads((root / "forgejo" / "swagger.v1.json").read_text())
        self.spec = raw
        closed = copy.deepcopy(raw)
        closed["definitions"] = close_world(raw["definitions"])
        self.registry: Registry = Registry().with_resource(
            "urn:forgejo", Resource.from_contents(closed, default_specification=DRAFT4))
        self.base = raw.get("basePath", "/api/v1")

    def schema_for(self, method: str, path: str, status: int) -> dict[str, Any] | None:
        template = _match(self.spec["paths"], method, path)
        if template is None:
            raise ContractViolation(f"{method} {path}: no such operation in swagger.v1.json")
        responses = self.spec["paths"][template][method.lower()]["responses"]
        answer = responses.get(str(status))
        if answer is None and status in (401, 403):
            answer = {"$ref": "#/responses/error"}  # every endpoint can refuse a token
        if answer is None:
            raise ContractViolation(f"{method} {path}: status {status} is not documented "
                                    f"(documented: {sorted(responses)})")
        if "$ref" in answer:
            answer = self.spec["responses"][answer["$ref"].split("/")[-1]]
        schema = answer.get("schema")
        if schema is None:
            return None
        return json.loads(json.dumps(schema).replace('"#/definitions/',
                                                     '"urn:forgejo#/definitions/'))

    def validate(self, method: str, path: str, status: int, body: Any) -> None:
        """Raise ContractViolation when ``body`` is not exactly what the swagger lists."""
        schema = self.schema_for(method, path, status)
        if schema is None:
            return
        validator = jsonschema.Draft4Validator(schema, registry=self.registry)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        if errors:
            text = "; ".join(f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors[:5])
            raise ContractViolation(f"{method} {path} -> {status}: {text}")


# ---------------------------------------------------------------- GitHub webhooks


class WebhookContract:
    def __init__(self, root: Path) -> None:
        self.doc = json.loads((root / "github" / "webhooks-subset.json").read_text())
        self.registry: Registry = Registry().with_resource(
            "urn:webhooks", Resource.from_contents(self.doc, default_specification=DRAFT202012))

    def key(self, event: str, payload: dict[str, Any]) -> str:
        action = payload.get("action")
        name = event.replace("_", "-")
        return f"{name}-{action}" if action and event not in ("status",) else name

    def validate(self, event: str, payload: dict[str, Any]) -> str:
        """Validate a payload; returns the webhook's name in the subset."""
        key = self.key(event, payload)
        if key not in self.doc["webhooks"]:
            raise ContractViolation(f"webhook {key} is not in webhooks-subset.json")
        pointer = f"urn:webhooks#/webhooks/{key}/post/requestBody/content/application~1json/schema"
        validator = jsonschema.Draft202012Validator({"$ref": pointer}, registry=self.registry)
        errors = list(validator.iter_errors(payload))
        if errors:
            best = jsonschema.exceptions.best_match(errors)
            raise ContractViolation(f"webhook {key}: {list(best.absolute_path)}: "
                                    f"{best.message[:300]}")
        return key


@cache
def github_contract(root: Path) -> GitHubContract:
    return GitHubContract(root)


@cache
def forgejo_contract(root: Path) -> ForgejoContract:
    return ForgejoContract(root)


@cache
def webhook_contract(root: Path) -> WebhookContract:
    return WebhookContract(root)


# ---------------------------------------------------------------- recorded App exchanges

_APP_ROUTES = [(m, re.compile(f"^{p}$")) for m, p in [
    ("GET", r"/app"), ("GET", r"/app/installations"), ("GET", r"/app/installations/\d+"),
    ("POST", r"/app/installations/\d+/access_tokens"),
    ("GET", r"/repos/[^/]+/[^/]+/installation"), ("GET", r"/orgs/[^/]+/installation"),
    ("GET", r"/users/[^/]+/installation"), ("GET", r"/installation/repositories")]]


def _app_route(method: str, path: str) -> str | None:
    path = path.split("?", 1)[0]
    for want, pattern in _APP_ROUTES:
        if want == method.upper() and pattern.match(path):
            return f"{want} {pattern.pattern}"
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "null")


def _same_shape(ours: Any, theirs: Any, where: str, out: list[str]) -> None:
    """Every field of a recorded answer is in ours with the same JSON type (null allowed)."""
    if isinstance(theirs, list):
        if theirs and isinstance(ours, list):
            for item in ours:
                _same_shape(item, theirs[0], f"{where}[]", out)
        elif not isinstance(ours, list):
            out.append(f"{where}: {_kind(ours)}, recorded as an array")
        return
    if not isinstance(theirs, dict):
        if None not in (ours, theirs) and _kind(ours) != _kind(theirs):
            out.append(f"{where}: {_kind(ours)}, recorded as {_kind(theirs)}")
        return
    if not isinstance(ours, dict):
        out.append(f"{where}: {_kind(ours)}, recorded as an object")
        return
    for key, value in theirs.items():
        if key not in ours:
            out.append(f"{where}.{key}: missing (GitHub sends it)")
        elif key not in ("permissions", "events"):  # these vary with the App by design
            _same_shape(ours[key], value, f"{where}.{key}", out)


class RecordedAppContract:
    """The App endpoints as ``github/recorded-pygithub/app-auth.json`` recorded them: no
    schema is published in the REST subset, so each answer is held to the recorded ones."""

    def __init__(self, root: Path) -> None:
        self.recorded: dict[tuple[str, int], list[Any]] = {}
        exchanges = json.loads((root / "github" / "recorded-pygithub" / "app-auth.json")
                               .read_text())
        for x in exchanges:
            route = _app_route(x["request"]["method"], x["request"]["path"])
            body = x["response"]["body"]
            if route is not None and body is not None:
                self.recorded.setdefault((route, x["response"]["status"]), []).append(body)

    def knows(self, method: str, path: str) -> bool:
        return _app_route(method, path) is not None

    def validate(self, method: str, path: str, status: int, body: Any) -> None:
        """Raise ContractViolation when the answer lacks what GitHub answered there."""
        route = _app_route(method, path)
        assert route is not None
        recorded = self.recorded.get((route, status))
        if recorded is None:
            if status >= 400 and isinstance(body, dict) and isinstance(body.get("message"), str):
                return  # an error document: GitHub's shape on every path
            raise ContractViolation(f"{method} {path} -> {status}: never recorded from GitHub")
        problems: list[str] = []
        _same_shape(body, recorded[0], "body", problems)
        if problems:
            raise ContractViolation(f"{method} {path} -> {status}: " + "; ".join(problems[:5]))


@cache
def recorded_app_contract(root: Path) -> RecordedAppContract:
    return RecordedAppContract(root)


# ---------------------------------------------------------------- recorded review replies

_REPLY_ROUTE = re.compile(r"^/repos/[^/]+/[^/]+/pulls/\d+/comments/\d+/replies$")
_MERGE_ROUTE = re.compile(r"^/repos/[^/]+/[^/]+/pulls/\d+/merge$")
_DISMISS_ROUTE = re.compile(r"^/repos/[^/]+/[^/]+/pulls/\d+/reviews/\d+/dismissals$")


class RecordedReviewContract:
    """GitHub's review endpoints that ``rest-subset.json`` lacks: a reply is held to the
    replies ``github/recorded-pygithub/review-comments.json`` recorded unedited (201, the
    review comment with ``in_reply_to_id``), a dismissal to the recorded one (200, the
    review); a merge to GitHub's documented merge result
    (``{sha, merged, message}``, which no contract file records)."""

    def __init__(self, root: Path) -> None:
        exchanges = json.loads((root / "github" / "recorded-pygithub" / "review-comments.json")
                               .read_text())
        self.replies = [x["response"]["body"] for x in exchanges
                        if _REPLY_ROUTE.match(x["request"]["path"]) and "note" not in x
                        and x["response"]["status"] == 201]
        self.dismissals = [x["response"]["body"] for x in exchanges
                           if _DISMISS_ROUTE.match(x["request"]["path"])
                           and x["request"]["method"] == "PUT"]

    @staticmethod
    def knows(method: str, path: str) -> bool:
        return (method == "POST" and _REPLY_ROUTE.match(path) is not None) or (
            method == "PUT" and (_MERGE_ROUTE.match(path) or _DISMISS_ROUTE.match(path))
            is not None)

    def validate(self, method: str, path: str, status: int, body: Any) -> None:
        """Raise ContractViolation when the answer lacks what GitHub answers there."""
        if status >= 400:
            if not (isinstance(body, dict) and isinstance(body.get("message"), str)):
                raise ContractViolation(f"{method} {path} -> {status}: not an error document")
            return
        problems: list[str] = []
        if method == "POST":
            if status != 201:
                problems.append(f"status {status}, recorded as 201")
            _same_shape(body, self.replies[0], "body", problems)
        elif _DISMISS_ROUTE.match(path):
            if status != 200:
                problems.append(f"status {status}, recorded as 200")
            _same_shape(body, self.dismissals[0], "body", problems)
            if isinstance(body, dict) and body.get("state") != "DISMISSED":
                problems.append(f"state {body.get('state')!r}, recorded as DISMISSED")
        elif not (status == 200 and isinstance(body, dict)
                  and isinstance(body.get("sha"), str) and body.get("merged") is True
                  and isinstance(body.get("message"), str)):
            problems.append(f"status {status} {body!r}: not {{sha, merged: true, message}}")
        if problems:
            raise ContractViolation(f"{method} {path} -> {status}: " + "; ".join(problems[:5]))


@cache
def recorded_review_contract(root: Path) -> RecordedReviewContract:
    return RecordedReviewContract(root)
