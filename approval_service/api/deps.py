"""Dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from approval_service.service.applications import ApplicationService
from approval_service.service.container import Container


async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def get_service(request: Request) -> ApplicationService:
    service: ApplicationService = request.app.state.service
    return service


def channel_of(keys: dict[str, str], presented: bytes) -> str | None:
    """The channel whose key was presented; compared in constant time against every key."""
    channel = None
    for key, name in keys.items():
        if hmac.compare_digest(presented, key.encode()):
            channel = name
    return channel


async def get_channel(
    request: Request, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None
) -> str:
    """The calling channel, from its API key; compared in constant time against every key."""
    channel = channel_of(request.app.state.api_keys, (x_api_key or "").encode())
    if channel is None:
        raise HTTPException(
            status_code=401,
            detail="a valid X-API-Key header is required (keys are configured in MIAOPI_API_KEYS)",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    return channel


async def get_officer(request: Request, channel: Annotated[str, Depends(get_channel)]) -> str:
    """The calling channel, which must be an officer channel when those are configured."""
    officers: frozenset[str] | None = request.app.state.officers
    if officers is not None and channel not in officers:
        raise HTTPException(
            status_code=403,
            detail=f"channel {channel!r} may not review or see statistics "
            "(officer channels are set in MIAOPI_OFFICER_CHANNELS)",
        )
    return channel


async def reader_scope(
    request: Request, channel: Annotated[str, Depends(get_channel)]
) -> str | None:
    """Whose applications the caller may read: its own channel's, or (officers) everyone's."""
    officers: frozenset[str] | None = request.app.state.officers
    return None if officers is None or channel in officers else channel


ContainerDep = Annotated[Container, Depends(get_container)]
OfficerDep = Annotated[str, Depends(get_officer)]
ReaderScopeDep = Annotated[str | None, Depends(reader_scope)]
ServiceDep = Annotated[ApplicationService, Depends(get_service)]
ChannelDep = Annotated[str, Depends(get_channel)]
