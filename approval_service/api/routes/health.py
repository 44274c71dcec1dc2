"""/healthz (alive), /readyz (database reachable, policies loaded), /metrics (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from approval_service.api.deps import ContainerDep
from approval_service.api.responses import JSON
from approval_service.service.container import Container
from approval_service.service.metrics import exposition

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Any:
    return JSON({"status": "ok"})


def _database_ok(container: Container) -> bool:
    try:
        with container.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


@router.get("/readyz", summary="Ready: database reachable and policies loaded")
async def readyz(container: ContainerDep) -> Any:
    database = await run_in_threadpool(_database_ok, container)
    policies = len(container.policies.deciders)
    ready = database and policies > 0
    body = {"status": "ready" if ready else "not ready", "database": database, "policies": policies}
    return JSON(
        body, status_code=200 if ready else 503, headers=None if ready else {"Retry-After": "5"}
    )


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(container: ContainerDep) -> Response:
    return Response(exposition(container.metrics), media_type=CONTENT_TYPE_LATEST)
