"""Dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from approval_service.service.applications import ApplicationService
from approval_service.service.container import Container


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def get_service(request: Request) -> ApplicationService:
    service: ApplicationService = request.app.state.service
    return service


def get_channel(
    request: Request, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None
) -> str:
    """The calling channel, from its API key; compared in constant time against every key."""
    keys: dict[str, str] = request.app.state.api_keys
    channel = None
    presented = (x_api_key or "").encode()
    for key, name in keys.items():
        if hmac.compare_digest(presented, key.encode()):
            channel = name
    if channel is None:
        raise HTTPException(
            status_code=401,
            detail="a valid X-API-Key header is required (keys are configured in MIAOPI_API_KEYS)",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    return channel


ContainerDep = Annotated[Container, Depends(get_container)]
ServiceDep = Annotated[ApplicationService, Depends(get_service)]
ChannelDep = Annotated[str, Depends(get_channel)]
