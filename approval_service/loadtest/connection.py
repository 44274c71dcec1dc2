"""A load-test connection: HTTP/1.1 answers parsed by httptools, told to the engine."""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

import httptools

from approval_service.loadtest.run_result import CONNECTION_ERROR


class Owner(Protocol):
    """What a connection tells (the engine, :class:`~approval_service.loadtest.client.Engine`)."""

    def complete(self, conn: Connection) -> None: ...

    def fail(self, conn: Connection, kind: int) -> None: ...

    def lost(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """One keep-alive connection of the engine: it parses answers and tells its owner."""

    def __init__(self, engine: Owner) -> None:
        self.engine = engine
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.current = -1
        self.sent_at = 0
        self.idle_since = 0
        self.code = 0
        self.body = bytearray()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.engine.fail(self, CONNECTION_ERROR)

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine.lost(self)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.code = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.engine.complete(self)
