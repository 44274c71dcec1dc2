"""A lean ASGI route for ``POST /v1/applications``, the hot path, in front of FastAPI.

Under load FastAPI's routing, middleware stack and dependency injection cost
more than deciding an application does. This lane serves the usual case of that
route: a JSON body within the limit, a valid ``X-API-Key``, an
``Idempotency-Key`` within its length, and a body the route's own pydantic model
(:class:`ApplicationIn`) accepts, validated straight from the bytes. It maps the
service's errors with the same function as the FastAPI handlers. Every other
request, including every refused one (413, 401, 422), goes to the FastAPI route
that documents it on the OpenAPI page, with the body read so far replayed, so
those answers are FastAPI's own. A client that goes away before its body is
whole gets nothing done. Every other path and method goes to FastAPI as well.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from approval_service import errors as service_errors
from approval_service.api.deps import channel_of
from approval_service.api.errors import error_response, miaopi_error_response
from approval_service.api.limits import MAX_BODY_BYTES
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
        content_type: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                presented = value
            elif name == b"idempotency-key":
                idempotency_key = value
            elif name == b"content-length":
                declared = value
            elif name == b"content-type":
                content_type = value
        too_large = declared is not None and declared.isdigit() and int(declared) > self.limit
        if too_large or not _json_or_absent(content_type):
            await self.app(scope, receive, send)  # FastAPI answers what is not the usual case
            return
        chunks, more, over, gone = await self._body(receive)
        if gone:  # the client went away before its body was whole: nothing to do or answer
            return
        body = b"".join(chunks)
        state = self.app.state
        channel = channel_of(state.api_keys, presented)
        key = None if idempotency_key is None else idempotency_key.decode("latin-1")
        payload = None
        if not over and body and channel is not None and len(key or "") <= MAX_KEY_LENGTH:
            try:
                payload = ApplicationIn.model_validate_json(body)
            except ValidationError:
                payload = None
        if payload is None or channel is None:
            # over the limit, no key, an invalid request: the FastAPI route gives the
            # answer (413, 401, 422 exactly as documented), with the body replayed to it
            await self.app(scope, _replayed(body, more, receive), send)
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

    async def _body(self, receive: Receive) -> tuple[list[bytes], bool, bool, bool]:
        """(chunks, more to come, over the limit, the client went away)."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return chunks, False, False, True
            chunk = message.get("body", b"")
            chunks.append(chunk)
            seen += len(chunk)
            more = bool(message.get("more_body", False))
            if seen > self.limit or not more:
                return chunks, more, seen > self.limit, False


def _json_or_absent(content_type: bytes | None) -> bool:
    """What FastAPI parses as a JSON body: no Content-Type, ``*/json`` or ``*/*+json``."""
    if content_type is None:
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    subtype = media.split(b"/", 1)[-1]
    return subtype == b"json" or subtype.endswith(b"+json")


def _replayed(body: bytes, more: bool, receive: Receive) -> Receive:
    """A ``receive`` that gives the body read so far once, then the rest of the stream."""
    pending = [body]

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": more}
        return await receive()

    return replay


async def _send_json(send: Send, status: int, body: bytes) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
