"""Referrals (转人工) and supervision: the review queue, an officer's review, statistics."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from approval_service.api.deps import ContainerDep, OfficerDep, ServiceDep
from approval_service.api.responses import JSON
from approval_service.api.schemas import ERRORS
from approval_service.service.review import review, review_queue
from approval_service.service.stats import statistics

router = APIRouter(tags=["referrals"])


class OfficerReason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=64)
    message: str = Field(min_length=1, max_length=500)
    basis: str | None = Field(default=None, max_length=500)


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["approved", "rejected"]
    officer: str = Field(min_length=1, max_length=64)
    reasons: list[OfficerReason] = Field(default_factory=list, max_length=20)


@router.get("/review-queue", summary="Open referred cases, most urgent first", responses=ERRORS)
async def queue(service: ServiceDep, officer_channel: OfficerDep) -> Any:
    return JSON({"cases": await run_in_threadpool(review_queue, service)})


@router.post(
    "/applications/{application_id}/review",
    summary="An officer approves (issuing as an automatic approval would) or rejects a case",
    responses={409: {"description": "already reviewed, or approval impossible now"}, **ERRORS},
)
async def officer_review(
    application_id: str, body: ReviewIn, service: ServiceDep, officer_channel: OfficerDep
) -> Any:
    document = await run_in_threadpool(
        review,
        service,
        application_id,
        body.decision,
        body.officer,
        [r.model_dump() for r in body.reasons],
    )
    return JSON(document)


@router.get(
    "/stats", summary="Per item and period: volumes, automation, approvals, timings, overdue"
)
async def stats(
    container: ContainerDep,
    officer_channel: OfficerDep,
    start: Annotated[date, Query(alias="from", description="first business date")],
    end: Annotated[date, Query(alias="to", description="last business date")],
    period: Annotated[Literal["day", "month"], Query()] = "day",
) -> Any:
    return JSON(await run_in_threadpool(statistics, container, start, end, period))
