"""Errors as HTTP responses: ``{"error": {"code", "message", "field"?}}``.

The one place that maps the exception tree (:mod:`approval_service.errors`)
to status codes. Nothing here issues or changes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from approval_service import errors
from approval_service.api.responses import JSON
from approval_service.service.explaining import UnknownApplication
from approval_service.service.metrics import Metrics
from approval_service.service.pending import IdempotencyMismatch
from approval_service.service.review import ReviewConflict

RETRY_AFTER_SECONDS = "5"


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSON:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    return JSON({"error": body}, status_code=status, headers=headers)


def _status_of(error: errors.MiaopiError) -> tuple[int, str]:
    if isinstance(error, UnknownApplication):
        return 404, "not_found"
    if isinstance(error, ReviewConflict):
        return 409, "review_conflict"
    if isinstance(error, errors.UnknownItem):
        return 404, "unknown_item"
    if isinstance(error, errors.InvalidIdNumber):
        return 422, "invalid_id_number"
    if isinstance(error, IdempotencyMismatch):
        return 422, "idempotency_key_reused"
    if isinstance(error, errors.RequestError):
        return 422, "invalid_request"
    if isinstance(error, errors.RegistryUnavailable):
        return 503, "registry_unavailable"
    if isinstance(error, errors.IssuanceConflict):
        return 409, "issuance_conflict"
    if isinstance(error, errors.CacheUnavailable):
        return 503, "cache_unavailable"
    return 500, "internal_error"


def _field(location: tuple[Any, ...]) -> str:
    parts = [str(p) for p in location if p not in ("body", "header", "query", "path")]
    return ".".join(parts)


def miaopi_error_response(error: errors.MiaopiError, metrics: Metrics | None) -> JSON:
    """The response for an error of the service's own tree."""
    status, code = _status_of(error)
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
    field = getattr(error, "field", None)
    message = str(error) if status != 500 else "internal error; the request changed nothing"
    if metrics is not None:
        metrics.count(metrics.labelled(metrics.errors, code))
    return error_response(status, code, message, field, headers)


def invalid_request_response(problems: Sequence[Any]) -> JSON:
    """The response for a body (or header) that fails validation: its first problem."""
    first = problems[0] if problems else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return error_response(
            422, "malformed_json", f"the body is not valid JSON: {first.get('msg')}"
        )
    field = _field(tuple(first.get("loc", ())))
    kind = first.get("type")
    if not field:  # the body as a whole: empty, or not a JSON object
        what = "empty" if kind == "missing" else "not a JSON object"
        message = (
            f"the body is {what}; send a JSON object with item, applicant_id and form "
            "(Content-Type: application/json)"
        )
    elif kind == "extra_forbidden":
        message = f"unknown field `{field}`; the body takes item, applicant_id and form"
    elif kind == "missing":
        message = f"`{field}` is required"
    else:
        message = f"`{field}`: {first.get('msg')}"
    return error_response(422, "invalid_request", message, field or None)


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.MiaopiError)
    async def miaopi_error(request: Request, error: errors.MiaopiError) -> JSON:
        return miaopi_error_response(error, getattr(request.app.state, "metrics", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, error: RequestValidationError) -> JSON:
        return invalid_request_response(error.errors())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSON:
        codes = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            409: "conflict",
            413: "body_too_large",
        }
        return error_response(
            error.status_code,
            codes.get(error.status_code, "http_error"),
            str(error.detail),
            headers=getattr(error, "headers", None),
        )
