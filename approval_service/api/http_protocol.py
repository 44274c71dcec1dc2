"""uvicorn's httptools protocol, with a response's head and body in one socket write.

uvicorn writes the status line and headers when the app sends
``http.response.start`` and the body when it sends ``http.response.body``: two
``send`` system calls per answer, and a client that wakes up for each part. At
5,000 applications/s those two writes were the largest innermost frame of the
workers' profile (8.9 % of the samples holding the GIL; README, "Load test").

:class:`HeldWrites` sits between the protocol and its transport: a write that
finds nothing held is held, and sent with the next write of the same loop
iteration (the body right after the head) as one; what no write follows is sent
when the iteration's callbacks are done, so a streamed response's head or chunk
is never kept longer than that. Closing sends what is held first; aborting drops
it, as aborting drops a transport's buffer. Everything else is the real
transport's. :class:`OneWriteHttpToolsProtocol` is uvicorn's own protocol class
given that transport (uvicorn's ``http`` setting takes a protocol class).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

Data = bytes | bytearray | memoryview


class HeldWrites(asyncio.Transport):
    """A transport whose writes within one loop iteration go out as one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: Data) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):  # as the transport says
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        if self._held is None:
            self._held = bytes(data)
            self._loop.call_soon(self._send_held)
            return
        held, self._held = self._held, None
        self._transport.write(held + data)

    def writelines(self, list_of_data: Iterable[Data]) -> None:
        self.write(b"".join(list_of_data))

    def _send_held(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._send_held()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def write_eof(self) -> None:
        self._send_held()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through :class:`HeldWrites`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeldWrites(transport, self.loop))
