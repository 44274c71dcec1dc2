"""A lean ASGI route for ``POST /v1/applications``, the hot path, in front of FastAPI.

Under load FastAPI's routing, middleware stack and dependency injection cost
more than deciding an application does. This lane answers exactly that route,
with the same contract as the FastAPI route that documents it on the OpenAPI
page (``routes/applications.py``): the body limit (413), the ``X-API-Key``
(401), the ``Idempotency-Key`` length and the :class:`ApplicationIn` model (the
same pydantic model, validated straight from the bytes; 422 with the same error
bodies, built by :mod:`approval_service.api.errors`), then the service's own
errors mapped there too. Everything else goes to the FastAPI application.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from approval_service import errors as service_errors
from approval_service.api.deps import channel_of
from approval_service.api.errors import (
    error_response,
    invalid_request_response,
    miaopi_error_response,
)
from approval_service.api.limits import MAX_BODY_BYTES, refuse_body
from approval_service.api.schemas import ApplicationIn
from approval_service.service.applications import ApplicationService

log = logging.getLogger(__name__)

PATH = "/v1/applications"
MAX_KEY_LENGTH = 200  # as the route declares for Idempotency-Key
_JSON_HEADERS = [(b"content-type", b"application/json")]


class FastLane:
    def __init__(self, app: FastAPI, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            await self._apply(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _apply(self, scope: Scope, receive: Receive, send: Send) -> None:
        presented = b""
        idempotency_key: bytes | None = None
        declared: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                presented = value
            elif name == b"idempotency-key":
                idempotency_key = value
            elif name == b"content-length":
                declared = value
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await refuse_body(send, self.limit)
            return
        body = await self._body(receive)
        if body is None:
            await refuse_body(send, self.limit)
            return
        state = self.app.state
        channel = channel_of(state.api_keys, presented)
        if channel is None:
            response = error_response(
                401,
                "unauthorized",
                "a valid X-API-Key header is required (keys are configured in MIAOPI_API_KEYS)",
                headers={"WWW-Authenticate": "ApiKey"},
            )
            await response(scope, receive, send)
            return
        key = None if idempotency_key is None else idempotency_key.decode("latin-1")
        if key is not None and len(key) > MAX_KEY_LENGTH:
            problem = {
                "loc": ("header", "Idempotency-Key"),
                "type": "string_too_long",
                "msg": f"String should have at most {MAX_KEY_LENGTH} characters",
            }
            await invalid_request_response([problem])(scope, receive, send)
            return
        try:
            payload = ApplicationIn.model_validate_json(body)
        except ValidationError as error:
            problems = [{**p, "loc": ("body", *p["loc"])} for p in error.errors()]
            await invalid_request_response(problems)(scope, receive, send)
            return
        service: ApplicationService = state.service
        try:
            document, created = await service.apply_async(
                channel, payload.item, payload.applicant_id, payload.form, key
            )
        except service_errors.MiaopiError as error:
            await miaopi_error_response(error, state.metrics)(scope, receive, send)
            return
        except Exception:
            log.exception("POST %s failed", PATH)
            response = error_response(
                500, "internal_error", "internal error; the request changed nothing"
            )
            await response(scope, receive, send)
            return
        await _send_json(send, 201 if created else 200, orjson.dumps(document))

    async def _body(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it is over the limit."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return b"".join(chunks)
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _send_json(send: Send, status: int, body: bytes) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
