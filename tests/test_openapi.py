"""The hand-written /openapi.json against the real server, by schemathesis: every operation, valid
and invalid input, answers as documented and never with a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.web.openapi import openapi_document
from tests.test_web import INI, TOKEN, FakeHistory, Served, reading, wait_until

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STREAMS = ("/api/live",)  # endless by design: checked in test_web.py


@pytest.fixture(scope="module")
def served_api() -> Iterator[Served]:
    FakeHistory.calls, FakeHistory.fail = [], None
    s = Served(INI + f"token = {TOKEN}\n")
    s.send(reading(1, import_w=800.0, export_w=0.0))
    wait_until(lambda: s.get("/api/energy/smart-meter/current", token=TOKEN)[0] == 200)
    yield s
    s.close()


def operations() -> list[Any]:
    schema = schemathesis.openapi.from_dict(openapi_document(True))
    ops = [result.ok() for result in schema.get_all_operations()]
    return [op for op in ops if op.path not in STREAMS]


def test_the_served_document_is_the_written_one(served_api: Served) -> None:
    status, doc = served_api.get("/openapi.json")
    assert status == 200 and doc == openapi_document(True) and doc["openapi"].startswith("3.1")
    assert {"/api/energy/smart-meter/status", "/api/energy/smart-meter/current", "/api/energy/smart-meter/history",
            "/api/energy/smart-meter/cost", "/api/energy-meters", "/api/energy-meters/{id}",
            "/api/energy-meters/{id}/reading", "/api/energy-meters/consumption/building", "/api/relays",
            "/api/relays/{name}", "/api/live"} <= set(doc["paths"])


def cases() -> list[Any]:
    """Every operation with valid input; with invalid input where it has query parameters."""
    out = []
    for op in operations():
        label = f"{op.method.upper()} {op.path}"
        out.append(pytest.param(op, GenerationMode.POSITIVE, id=f"{label} valid"))
        if list(op.query):  # (invalid relay bodies: test_web.py; schemathesis finds none to generate here)
            out.append(pytest.param(op, GenerationMode.NEGATIVE, id=f"{label} invalid"))
    return out


@pytest.mark.parametrize(("op", "mode"), cases())
def test_every_operation_conforms_and_never_fails(served_api: Served, op: Any, mode: GenerationMode) -> None:
    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.filter_too_much])
    @given(case=op.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = case.call(base_url=served_api.url, headers=AUTH, timeout=30)
        # invalid input may be refused by the HTTP layer itself (a malformed header: uvicorn's plain 400),
        # so there only "never a 5xx" holds; valid input must match the document exactly
        checks = CHECKS if mode == GenerationMode.POSITIVE else [not_a_server_error]
        case.validate_response(response, checks=checks)

    check()


def test_without_the_token_everything_is_401(served_api: Served) -> None:
    for op in operations():
        if "{" in op.path:
            continue
        status, body, _h = served_api.request(op.method.upper(), op.path, {} if op.method == "post" else None)
        assert status == 401 and body["success"] is False, op.path
