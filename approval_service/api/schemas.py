"""Request and response models, with a worked example per item for the OpenAPI page."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ApplicationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: str = Field(min_length=1, max_length=64, description="item id, see GET /v1/items")
    applicant_id: str = Field(min_length=1, max_length=32, description="18-character ID number")
    form: dict[str, str | None] = Field(default_factory=dict, description="item form fields")


class Reason(BaseModel):
    code: str
    message: str
    basis: str | None = None


class PolicyRef(BaseModel):
    id: str
    version: str
    sha256: str


class ApplicationOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    application_id: str
    item: str
    decision: Literal["approved", "rejected", "referred"]
    reasons: list[Reason]
    result: dict[str, Any]
    policy: PolicyRef
    decided_at: str
    deadline: str | None = None
    supervision: Literal["green", "yellow", "red"] | None = None


class PrecheckOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    item: str
    decision: Literal["approved", "rejected", "referred"]
    reasons: list[Reason]
    result: dict[str, Any]
    policy: PolicyRef


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no valid X-API-Key"},
    404: {"model": ErrorOut, "description": "unknown item"},
    413: {"model": ErrorOut, "description": "body over 16 KiB"},
    422: {
        "model": ErrorOut,
        "description": "malformed body, unknown field, invalid ID number, missing form field",
    },
    503: {
        "model": ErrorOut,
        "description": "registry database unreachable; retry after Retry-After seconds",
    },
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "elderly-allowance": {
        "summary": "高龄津贴申领",
        "value": {"item": "elderly-allowance", "applicant_id": "341602194001011231"},
    },
    "elderly-allowance-certification": {
        "summary": "高龄津贴资格认证",
        "value": {"item": "elderly-allowance-certification", "applicant_id": "341602194001011231"},
    },
    "housing-fund-rent-withdrawal": {
        "summary": "公积金租房提取",
        "value": {"item": "housing-fund-rent-withdrawal", "applicant_id": "341621199003151272"},
    },
    "housing-fund-retirement-withdrawal": {
        "summary": "公积金退休提取",
        "value": {
            "item": "housing-fund-retirement-withdrawal",
            "applicant_id": "341622196301201234",
        },
    },
    "senior-card-new": {
        "summary": "老年人优待证办理",
        "value": {
            "item": "senior-card-new",
            "applicant_id": "341602195801011234",
            "form": {"mailing_address": "亳州市谯城区人民中路1号"},
        },
    },
    "senior-card-replacement": {
        "summary": "优待证遗失补办",
        "value": {
            "item": "senior-card-replacement",
            "applicant_id": "341602195801011234",
            "form": {"mailing_address": "亳州市谯城区人民中路1号"},
        },
    },
    "senior-card-renewal": {
        "summary": "优待证到期换证",
        "value": {"item": "senior-card-renewal", "applicant_id": "341602195801011234"},
    },
}
