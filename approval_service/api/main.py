"""The ASGI application: thin wiring of settings, container, routers and error handlers.

``create_app()`` builds the settings at start-up (not at import), so
``uvicorn --factory approval_service.api.main:create_app`` works with several
workers, and tests pass their own container. ``POST /v1/applications`` is
served by a lean ASGI lane in front of FastAPI (:mod:`approval_service.api.fast_lane`);
FastAPI serves every other route and documents them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from approval_service.api import errors
from approval_service.api.collector import tune_for_serving
from approval_service.api.fast_lane import FastLane
from approval_service.api.limits import BodyLimit
from approval_service.api.responses import JSON
from approval_service.api.routes import api_router
from approval_service.api.thread_switching import apply_switch_interval
from approval_service.service.applications import ApplicationService
from approval_service.service.container import Container
from approval_service.settings import Settings

#: how often a worker passes its counts on to the metrics a scrape reads (see
#: :mod:`approval_service.service.metric_tallies`)
METRICS_FLUSH_SECONDS = 1.0

DESCRIPTION = """秒批 miaopi: zero-material government services decided in milliseconds.

Every `/v1` call needs an `X-API-Key` header. Errors are JSON:
`{"error": {"code": "...", "message": "...", "field": "..."}}`.
"""


def create_app(
    container: Container | None = None, api_keys: dict[str, str] | None = None
) -> FastLane:
    """The FastAPI application behind the lean lane for ``POST /v1/applications``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = container or Container.build(Settings())
        app.state.container = built
        app.state.metrics = built.metrics
        app.state.service = ApplicationService(built)
        app.state.api_keys = api_keys if api_keys is not None else built.settings.channel_keys()
        app.state.officers = built.settings.officers()
        if container is None:  # a serving worker (tests pass their own container)
            tune_for_serving()
            apply_switch_interval(built.settings.gil_switch_ms)
        flusher = asyncio.create_task(built.metrics.flush_every(METRICS_FLUSH_SECONDS))
        try:
            yield
        finally:
            flusher.cancel()
            try:
                # its last flush; a cancellation of this lifespan itself still propagates
                await asyncio.gather(flusher, return_exceptions=True)
            finally:
                await built.aclose_loop_clients()  # this loop's clients: it ends here
                if container is None:
                    built.close()

    app = FastAPI(
        title="miaopi 秒批",
        version="0.1.0",
        description=DESCRIPTION,
        default_response_class=JSON,
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(api_router)
    app.add_middleware(BodyLimit)
    return FastLane(app)
