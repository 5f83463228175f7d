"""Schemathesis generates requests from the served OpenAPI document, valid and invalid ones;
the runner must never answer with a server error, and its answers must match the document.

(The operations are driven with hypothesis directly: schemathesis' pytest fixture loader
does not work with pytest 9.)
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from runner.model import RunState
from runner.testing.demo import MAINTAINER, REPO
from tests.integration.api.conftest import ApiWorld

CHECKS = [schemathesis.checks.not_a_server_error, status_code_conformance,
          content_type_conformance, response_schema_conformance]
EXAMPLES = 25


def test_no_server_error(api_world: ApiWorld) -> None:
    store = api_world.runner.store
    # real runs, so that some requests hit something: one active, one finished
    run, _ = store.create_run(REPO, 1, trigger_actor=MAINTAINER)
    store.append_event(run.id, "note", {"text": "hello"})
    done, _ = store.create_run(REPO, 2, trigger_actor=MAINTAINER)
    store.transition(done.id, RunState.QUEUED, RunState.FAILED, actor="t", reason="gave up")
    schema = schemathesis.openapi.from_url(f"{api_world.url}/openapi.json")
    auth = {"Authorization": f"Bearer {api_world.token}"}
    tried: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case: Any) -> None:
                if case.path.endswith("/events"):
                    # the SSE variant streams until the run ends; the JSON pages are fuzzed
                    case.headers = {**(case.headers or {}), "Accept": "application/json"}
                case.call_and_validate(headers=auth, checks=CHECKS, timeout=10)

            try:
                check()
            except Unsatisfiable:
                # nothing in the operation can be made invalid (no parameters, no body)
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
                continue
            tried.append(f"{operation.label} {mode.value}")
    assert len(tried) >= 15, tried
