"""The OpenAPI 3.0 description of the runner's HTTP API, served at ``/openapi.json``.

Hand-written, so it says what the API promises rather than what a framework guessed; the
API tests run schemathesis against it.
"""

from __future__ import annotations

from typing import Any

from runner import __version__
from runner.model import RunState

RUN_ID = {"type": "string", "pattern": "^r-[0-9a-f]{6,32}$", "example": "r-0123456789ab"}
ERROR = {"$ref": "#/components/schemas/Error"}
WEBHOOK_REPLY = {"type": "object", "properties": {"message": {"type": "string"},
                                                  "ignored": {"type": "string"}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(ERROR, description)


UNAUTHORISED = _err("No or a wrong bearer token.")
RUN_PATH = [{"name": "run_id", "in": "path", "required": True, "schema": RUN_ID}]
REASON_BODY = {"required": False, "content": {"application/json": {"schema": {
    "type": "object", "properties": {"reason": {"type": "string", "maxLength": 500}}}}}}


def _schemas() -> dict[str, Any]:
    states = [s.value for s in RunState]
    return {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string"}}},
        "Run": {"type": "object", "required": ["id", "repo", "issue", "state"], "properties": {
            "id": RUN_ID, "repo": {"type": "string"}, "issue": {"type": "integer"},
            "state": {"type": "string", "enum": states},
            "created_at": {"type": "number"}, "updated_at": {"type": "number"},
            "trigger_actor": {"type": "string"}, "issue_title": {"type": "string"},
            "issue_body": {"type": "string"}, "issue_hash": {"type": "string"},
            "iteration": {"type": "integer"}, "branch": {"type": "string"},
            "pr_number": {"type": "integer", "nullable": True}, "pr_url": {"type": "string"},
            "head_sha": {"type": "string"}, "cost_usd": {"type": "number"},
            "tokens_in": {"type": "integer"}, "tokens_out": {"type": "integer"},
            "reason": {"type": "string"}, "killed_by": {"type": "string"},
            "priority": {"type": "integer", "minimum": 1, "maximum": 10},
            "wake_at": {"type": "number",
                        "description": "waiting (for CI) until this time unless woken; 0: not "
                                       "waiting"},
            "wakes": {"type": "integer"},
            "details": {"type": "object"}}},
        "Event": {"type": "object", "required": ["run_id", "kind", "at", "seq"], "properties": {
            "run_id": RUN_ID, "kind": {"type": "string"}, "at": {"type": "number"},
            "actor": {"type": "string"}, "data": {"type": "object"},
            "seq": {"type": "integer", "minimum": 1}}},
        "Kill": {"type": "object", "required": ["run", "actor", "reason"], "properties": {
            "run": RUN_ID, "actor": {"type": "string"}, "reason": {"type": "string"}}},
        "Health": {"type": "object", "required": ["ok"], "properties": {
            "ok": {"type": "boolean"}, "worker": {"type": "string"},
            "queue": {"type": "integer"}, "slots_in_use": {"type": "integer"},
            "slots": {"type": "integer"}, "paused": {"type": "object", "nullable": True},
            "warm_sandboxes": {"type": "integer"}, "warm_target": {"type": "integer"},
            "store": {"type": "string"}}},
    }


def _paths() -> dict[str, Any]:
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "/healthz": {"get": {
            "summary": "Liveness: the store answers. With the bearer token also the worker, "
                       "queue depth, slots, runs held and pause state; without it only ok.",
            "security": [],
            "responses": {"200": _json({"$ref": "#/components/schemas/Health"}, "Healthy."),
                          "503": _json({"$ref": "#/components/schemas/Health"},
                                       "The store does not answer.")}}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (text exposition format 0.0.4).",
            "security": secured,
            "responses": {"200": {"description": "The metrics.", "content": {
                "text/plain": {"schema": {"type": "string"}}}}, "401": UNAUTHORISED}}},
        "/api/runs": {
            "get": {
                "summary": "Runs, newest first (at most 200).", "security": secured,
                "parameters": [
                    {"name": "state", "in": "query", "schema": {
                        "type": "string", "enum": ["active", *[s.value for s in RunState]]}},
                    {"name": "repo", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "array", "items": {
                    "$ref": "#/components/schemas/Run"}}, "The runs."),
                    "400": _err("Unknown state."), "401": UNAUTHORISED}},
            "post": {
                "summary": "Dispatch a run for an issue without a label (audited with the "
                           "token's name); returns the active run if there is one.",
                "security": secured,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["repo", "issue"], "properties": {
                        "repo": {"type": "string", "example": "acme/calculator"},
                        "issue": {"type": "integer", "minimum": 1, "maximum": 2147483647}}}}}},
                "responses": {"201": _json({"$ref": "#/components/schemas/Run"}, "The run."),
                              "400": _err("Malformed body."), "401": UNAUTHORISED,
                              "403": _err("Cross-site dashboard request."),
                              "404": _err("Repository not configured, or no such issue."),
                              "422": _err("The issue's text holds a direction override: the "
                                          "runner cannot tell what a reader sees."),
                              "502": _err("The forge failed."), "503": _err("Store down.")}}},
        "/api/runs/{run_id}": {"get": {
            "summary": "One run.", "security": secured, "parameters": RUN_PATH,
            "responses": {"200": _json({"$ref": "#/components/schemas/Run"}, "The run."),
                          "401": UNAUTHORISED, "404": _err("No such run.")}}},
        "/api/runs/{run_id}/events": {"get": {
            "summary": "The run's audit events, oldest first; paged with after/limit. With "
                       "Accept: text/event-stream, a live Server-Sent Events stream "
                       "(event 'event' per audit event, id = seq; 'end' when the run is over).",
            "security": secured,
            "parameters": [*RUN_PATH,
                           {"name": "after", "in": "query", "schema": {
                               "type": "integer", "minimum": 0, "default": 0}},
                           {"name": "limit", "in": "query", "schema": {
                               "type": "integer", "minimum": 1, "maximum": 1000,
                               "default": 100}}],
            "responses": {"200": {"description": "Events.", "content": {
                "application/json": {"schema": {"type": "array", "items": {
                    "$ref": "#/components/schemas/Event"}}},
                "text/event-stream": {"schema": {"type": "string"}}}},
                "400": _err("Bad paging."), "401": UNAUTHORISED, "404": _err("No such run.")}}},
        "/api/runs/{run_id}/kill": {"post": {
            "summary": "Kill a run (audited with the token's name).", "security": secured,
            "parameters": RUN_PATH, "requestBody": REASON_BODY,
            "responses": {"202": _json({"$ref": "#/components/schemas/Kill"}, "Requested."),
                          "401": UNAUTHORISED, "403": _err("Cross-site dashboard request."),
                          "404": _err("No such run."),
                          "409": _err("The run has already finished.")}}},
        "/api/kill-all": {"post": {
            "summary": "Kill every active run and pause dispatch until resumed.",
            "security": secured, "requestBody": REASON_BODY,
            "responses": {"202": _json({"type": "object", "required": ["killed", "paused"],
                                        "properties": {"killed": {"type": "array", "items": RUN_ID},
                                                       "paused": {"type": "boolean"}}},
                                       "Requested."),
                          "401": UNAUTHORISED, "403": _err("Cross-site dashboard request.")}}},
        "/api/resume": {"post": {
            "summary": "Resume dispatch after a kill-all.", "security": secured,
            "responses": {"200": _json({"type": "object", "properties": {
                "paused": {"type": "boolean"}}}, "Resumed."),
                "401": UNAUTHORISED, "403": _err("Cross-site dashboard request.")}}},
        "/webhooks/{forge}": {"post": {
            "summary": "Signed forge deliveries (X-Hub-Signature-256 or X-Forgejo-Signature); "
                       "only puts the issue on the work queue.",
            "security": [],
            "parameters": [{"name": "forge", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": ["github", "forgejo"]}}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"type": "object"}}}},
            "responses": {"200": _json(WEBHOOK_REPLY, "Duplicate delivery."),
                          "202": _json(WEBHOOK_REPLY, "Accepted or ignored."),
                          "400": _json(WEBHOOK_REPLY, "Not a delivery this endpoint "
                                                      "understands."),
                          "401": _json(WEBHOOK_REPLY, "Unsigned or badly signed."),
                          "404": _err("Unknown forge kind."),
                          "413": _err("Body too large.")}}},
    }


def document() -> dict[str, Any]:
    """The OpenAPI document."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "orchestrator runner API", "version": __version__,
                 "description": "Control and observe the GitOps agent runner. Send the token "
                                "named by server.api_token_env as a bearer token."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": _schemas()},
        "security": [{"bearer": []}],
        "paths": _paths(),
    }
