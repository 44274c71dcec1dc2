"""A trivial FastAPI app to measure the floor of this stack on this machine.

``POST /v1/applications`` (and ``/v1/precheck``) parse the same JSON body as the real
service, answer 422 to an invalid ID number (so the load test's expectations hold),
read one small Redis hash (HGETALL) and return a constant decision. Whatever the real
service costs beyond this is miaopi's own work; ``benchmarks/e2e.py`` runs both under
the same load and reports the ratio.

Served by uvicorn with the same worker count as the real service::

    BASELINE_REDIS_URL=redis://127.0.0.1:6379/0 BASELINE_KEY=bench:baseline \\
    .venv/bin/uvicorn --app-dir benchmarks baseline_app:create_app --factory --workers 2
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import redis.asyncio as redis
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from data_lookups.id_numbers import id_number_problem

DECISION = orjson.dumps(
    {
        "application_id": "0" * 32,
        "item": "baseline",
        "decision": "approved",
        "reasons": [],
        "result": {},
        "policy": {"id": "baseline", "version": "1", "sha256": "0" * 64},
        "decided_at": "2026-11-23T10:00:00+08:00",
    }
)


class ApplicationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: str = Field(min_length=1, max_length=64)
    applicant_id: str = Field(min_length=1, max_length=32)
    form: dict[str, str | None] = Field(default_factory=dict)


def create_app() -> FastAPI:
    url = os.environ.get("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/0")
    key = os.environ.get("BASELINE_KEY", "miaopi_bench:baseline")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # a blocking pool: under load requests wait for a connection instead of failing
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=10)
        app.state.redis = redis.Redis(connection_pool=pool)
        try:
            yield
        finally:
            await app.state.redis.aclose()

    app = FastAPI(title="baseline", lifespan=lifespan)

    async def decide(payload: ApplicationIn, request: Request) -> Response:
        if id_number_problem(payload.applicant_id.upper()) is not None:
            body = {"error": {"code": "invalid_id_number", "message": "invalid ID number"}}
            return Response(orjson.dumps(body), status_code=422, media_type="application/json")
        await request.app.state.redis.hgetall(key)
        return Response(DECISION, status_code=201, media_type="application/json")

    app.post("/v1/applications")(decide)
    app.post("/v1/precheck")(decide)

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "ok"}

    return app
