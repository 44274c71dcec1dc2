"""POST /v1/applications (秒批), GET /v1/applications/{id}, POST /v1/precheck (网上预审)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException
from fastapi.concurrency import run_in_threadpool

from approval_service.api.deps import ChannelDep, ReaderScopeDep, ServiceDep
from approval_service.api.responses import JSON
from approval_service.api.schemas import (
    ERRORS,
    EXAMPLES,
    ApplicationIn,
    ApplicationOut,
    PrecheckOut,
)

router = APIRouter(tags=["applications"])

Payload = Annotated[ApplicationIn, Body(openapi_examples=EXAMPLES)]


@router.post(
    "/applications",
    status_code=201,
    response_model=ApplicationOut,
    responses={
        200: {"model": ApplicationOut, "description": "replay of an earlier Idempotency-Key"},
        **ERRORS,
    },
    summary="Apply: decide in seconds, issue the result exactly once",
)
async def apply(
    payload: Payload,
    service: ServiceDep,
    channel: ChannelDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> Any:
    document, created = await service.apply_async(
        channel, payload.item, payload.applicant_id, payload.form, idempotency_key
    )
    return JSON(document, status_code=201 if created else 200)


@router.get(
    "/applications/{application_id}",
    response_model=ApplicationOut,
    responses=ERRORS,
    summary="An application as decided (with deadline and supervision light when referred)",
)
async def get_application(application_id: str, service: ServiceDep, scope: ReaderScopeDep) -> Any:
    document = await run_in_threadpool(service.get, application_id, scope)
    if document is None:
        raise HTTPException(status_code=404, detail=f"no application {application_id!r}")
    return JSON(document)


@router.post(
    "/precheck",
    response_model=PrecheckOut,
    responses=ERRORS,
    summary="网上预审: the decision an application would get now; issues and changes nothing",
)
async def precheck(payload: Payload, service: ServiceDep, channel: ChannelDep) -> Any:
    document = await run_in_threadpool(
        service.precheck, payload.item, payload.applicant_id, payload.form
    )
    return JSON(document)
