"""The lean lane in front of FastAPI answers POST /v1/applications as the contract (and the
documented FastAPI route behind it) does; everything else still reaches FastAPI.

Pinned elsewhere and not repeated: the code and field of each usual bad body (test_errors),
replays with 201/200 (test_applications), 503 with Retry-After (test_database_outage). Here:
the exact error-body shape and headers, the same answer from the documented route, the body
limit at its boundary and without Content-Length, failures, and what goes past the lane.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from starlette.types import Message

from approval_service.api.fast_lane import MAX_KEY_LENGTH, FastLane
from approval_service.api.limits import MAX_BODY_BYTES
from approval_service.api.main import create_app
from approval_service.service.container import Container

from .conftest import HEADERS, People

URL = "/v1/applications"


@pytest.fixture(scope="module")
def route(container: Container) -> Iterator[TestClient]:
    """The FastAPI application behind the lane: it still has the documented route."""
    lane = create_app(container)
    assert isinstance(lane, FastLane)
    with TestClient(lane.app) as client:
        yield client


def lane_of(client: TestClient) -> FastLane:
    return cast(FastLane, client.app)


def recorded(container: Container) -> int:
    with container.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM applications")).scalar_one())


def allowance(people: People) -> dict[str, Any]:
    return {"item": "elderly-allowance", "applicant_id": people.young}


def raw(body: bytes) -> dict[str, Any]:
    return {"content": body, "headers": {**HEADERS, "Content-Type": "application/json"}}


# (request as TestClient.post keyword arguments, status, code, field, headers it must carry)
BAD: dict[str, tuple[Callable[[People], dict[str, Any]], int, str, str | None, dict[str, str]]] = {
    "no-key": (
        lambda p: {"json": allowance(p)},
        401,
        "unauthorized",
        None,
        {"WWW-Authenticate": "ApiKey"},
    ),
    "wrong-key": (
        lambda p: {"json": allowance(p), "headers": {"X-API-Key": "portal-key-2"}},
        401,
        "unauthorized",
        None,
        {"WWW-Authenticate": "ApiKey"},
    ),
    "over-16-KiB-before-the-key": (
        lambda p: {"json": {**allowance(p), "form": {"note": "x" * MAX_BODY_BYTES}}},
        413,
        "body_too_large",
        None,
        {},
    ),
    "malformed-json": (
        lambda p: raw(b'{"item": "elderly-allowance",'),
        422,
        "malformed_json",
        None,
        {},
    ),
    "unknown-field": (
        lambda p: {"json": {**allowance(p), "colour": "red"}, "headers": HEADERS},
        422,
        "invalid_request",
        "colour",
        {},
    ),
    "missing-applicant_id": (
        lambda p: {"json": {"item": "elderly-allowance"}, "headers": HEADERS},
        422,
        "invalid_request",
        "applicant_id",
        {},
    ),
    "Idempotency-Key-over-200": (
        lambda p: {
            "json": allowance(p),
            "headers": {**HEADERS, "Idempotency-Key": "k" * (MAX_KEY_LENGTH + 1)},
        },
        422,
        "invalid_request",
        "Idempotency-Key",
        {},
    ),
    "Idempotency-Key-over-200-before-the-body": (
        lambda p: {
            "json": {"item": "elderly-allowance"},
            "headers": {**HEADERS, "Idempotency-Key": "k" * (MAX_KEY_LENGTH + 1)},
        },
        422,
        "invalid_request",
        "Idempotency-Key",
        {},
    ),
    "text-plain-body": (
        lambda p: {
            "content": json.dumps(allowance(p)).encode(),
            "headers": {**HEADERS, "Content-Type": "text/plain"},
        },
        422,
        "invalid_request",
        None,
        {},
    ),
    "empty-body": (
        lambda p: {"content": b"", "headers": {**HEADERS, "Content-Type": "application/json"}},
        422,
        "invalid_request",
        None,
        {},
    ),
    "unknown-item": (
        lambda p: {"json": {**allowance(p), "item": "senior-card"}, "headers": HEADERS},
        404,
        "unknown_item",
        "item",
        {},
    ),
    "invalid-id-number": (
        lambda p: {
            "json": {**allowance(p), "applicant_id": "341602194001011235"},
            "headers": HEADERS,
        },
        422,
        "invalid_id_number",
        "applicant_id",
        {},
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_the_contract_error_body(
    client: TestClient,
    route: TestClient,
    container: Container,
    people: People,
    case: str,
) -> None:
    request, status, code, field, headers = BAD[case]
    before = recorded(container)
    response = client.post(URL, **request(people))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == {"code", "message"} | ({"field"} if field else set())
    assert error["code"] == code and error.get("field") == field
    assert isinstance(error["message"], str) and error["message"]
    for name, value in headers.items():
        assert response.headers[name] == value
    documented = route.post(URL, **request(people))  # the FastAPI route, as documented
    assert documented.status_code == status
    assert documented.json()["error"] == error  # the same answer, message included
    for name, value in headers.items():
        assert documented.headers[name] == value
    assert recorded(container) == before


def padded(people: People, size: int) -> bytes:
    """A valid application body of exactly ``size`` bytes (JSON allows trailing spaces)."""
    body = json.dumps(allowance(people)).encode()
    return body + b" " * (size - len(body))


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("size", "status"), [(MAX_BODY_BYTES, 201), (MAX_BODY_BYTES + 1, 413)])
def test_the_body_limit_is_16_kib_with_or_without_content_length(
    client: TestClient, people: People, content_length: bool, size: int, status: int
) -> None:
    body = padded(people, size)
    content: bytes | Iterator[bytes] = body if content_length else iter([body[:6000], body[6000:]])
    response = client.post(
        URL, content=content, headers={**HEADERS, "Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    if status == 413:
        assert response.json()["error"]["code"] == "body_too_large"
    else:
        assert response.json()["decision"] == "rejected"


def call_lane(
    lane: FastLane, headers: list[tuple[bytes, bytes]], chunks: Iterator[bytes]
) -> tuple[int, dict[str, Any], int]:
    """Drive the lane as a server would; returns status, JSON body and receive() calls."""
    calls = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": next(chunks), "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": URL,
        "headers": [(b"x-api-key", HEADERS["X-API-Key"].encode()), *headers],
    }
    asyncio.run(lane(scope, receive, send))
    start, body = sent[0], sent[1]
    return start["status"], json.loads(body["body"]), calls


def test_a_client_gone_before_its_body_is_whole_gets_nothing_done(
    client: TestClient, container: Container, people: People
) -> None:
    body = json.dumps(allowance(people)).encode()
    messages: list[Message] = [
        {"type": "http.request", "body": body, "more_body": True},  # valid JSON so far
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    before = recorded(container)
    scope = {
        "type": "http",
        "method": "POST",
        "path": URL,
        "headers": [(b"x-api-key", HEADERS["X-API-Key"].encode())],
    }
    asyncio.run(lane_of(client)(scope, receive, send))
    assert sent == []
    assert recorded(container) == before


def test_a_declared_length_over_the_limit_is_refused_unread(client: TestClient) -> None:
    status, body, calls = call_lane(lane_of(client), [(b"content-length", b"1000000")], iter([]))
    assert (status, body["error"]["code"], calls) == (413, "body_too_large", 0)


def test_a_streamed_body_is_refused_once_it_passes_the_limit(client: TestClient) -> None:
    endless = iter(lambda: b" " * 4096, None)  # never says it is done
    status, body, calls = call_lane(lane_of(client), [], endless)
    assert (status, body["error"]["code"]) == (413, "body_too_large")
    assert calls == MAX_BODY_BYTES // 4096 + 1  # stopped reading at the first byte too many


def test_a_lying_content_length_does_not_lift_the_limit(client: TestClient) -> None:
    chunks = iter([b" " * 10_000, b" " * 10_000])
    status, _, _ = call_lane(lane_of(client), [(b"content-length", b"10")], chunks)
    assert status == 413


def test_an_unexpected_failure_is_a_500_that_tells_nothing(
    client: TestClient, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(*_args: object) -> tuple[dict[str, Any], bool]:
        raise RuntimeError("secret detail of the failure")

    monkeypatch.setattr(lane_of(client).app.state.service, "apply_async", failing)
    response = client.post(URL, json=allowance(people), headers=HEADERS)
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": "internal error; the request changed nothing",
        }
    }


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", URL, "POST"),
        ("PUT", URL, "POST"),
        ("DELETE", URL, "POST"),
        ("POST", f"{URL}/some-id", "GET"),
    ],
)
def test_other_methods_and_paths_reach_fastapi(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path, headers=HEADERS)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["Allow"] == allow


def test_lane_and_documented_route_share_applications(
    client: TestClient, route: TestClient, people: People
) -> None:
    body = {"item": "elderly-allowance", "applicant_id": people.elderly}
    headers = {**HEADERS, "Idempotency-Key": "fast-lane-1"}
    made = client.post(URL, json=body, headers=headers)
    assert made.status_code == 201 and made.headers["content-type"] == "application/json"
    doc = made.json()
    assert doc["decision"] == "approved"
    assert client.get(f"{URL}/{doc['application_id']}", headers=HEADERS).json() == doc
    replay = route.post(URL, json=body, headers=headers)  # the same key through FastAPI
    assert (replay.status_code, replay.json()) == (200, doc)
    assert client.post(URL, json=body, headers=headers).json() == doc


def test_openapi_still_documents_the_lane_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operations = spec["paths"][URL]
    assert list(operations) == ["post"]
    post = operations["post"]
    assert {"200", "201", "401", "404", "413", "422", "503"} <= set(post["responses"])
    headers = {p["name"]: p for p in post["parameters"] if p["in"] == "header"}
    assert set(headers) >= {"Idempotency-Key", "X-API-Key"}
    assert f'"maxLength": {MAX_KEY_LENGTH}' in json.dumps(headers["Idempotency-Key"]["schema"])
    assert "get" in spec["paths"][f"{URL}/{{application_id}}"]


@pytest.mark.parametrize(
    ("content", "content_type", "says"),
    [
        (b"", "application/json", "the body is empty"),
        (b"[1, 2]", "application/json", "the body is not a JSON object"),
        (b'{"item": "elderly-allowance"}', "text/plain", "the body is not a JSON object"),
    ],
    ids=["empty", "array", "text-plain"],
)
def test_a_body_that_is_not_an_object_says_what_to_send(
    client: TestClient, content: bytes, content_type: str, says: str
) -> None:
    response = client.post(URL, content=content, headers={**HEADERS, "Content-Type": content_type})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert message.startswith(says)
    assert "item, applicant_id and form" in message and "application/json" in message
