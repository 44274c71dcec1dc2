"""One socket write per answer: the held-writes transport on a real socket, and uvicorn
serving through it (keep-alive, pipelined requests, a streamed response, a HEAD)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from approval_service.api.http_protocol import HeldWrites, OneWriteHttpToolsProtocol

from .server import serving

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


async def _connected() -> tuple[asyncio.Transport, socket.socket, list[bytes]]:
    """A real transport on one end of a socket pair, its writes recorded as they reach it."""
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    assert isinstance(transport, asyncio.Transport)
    writes: list[bytes] = []
    real_write: Callable[[Any], None] = transport.write

    def recorded(data: Any) -> None:
        writes.append(bytes(data))
        real_write(data)

    transport.write = recorded  # type: ignore[method-assign]
    peer.setblocking(False)
    return transport, peer, writes


async def _received(peer: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    got = b""
    while len(got) < size:
        chunk = await asyncio.wait_for(loop.sock_recv(peer, 65536), 5)
        if not chunk:
            break
        got += chunk
    return got


def test_a_head_and_its_body_go_out_as_one_write() -> None:
    async def main() -> tuple[list[bytes], bytes]:
        transport, peer, writes = await _connected()
        held = HeldWrites(transport, asyncio.get_running_loop())
        held.write(HEAD)
        assert writes == [] and held.get_write_buffer_size() == len(HEAD)
        held.write(memoryview(b"hello"))
        got = await _received(peer, len(HEAD) + 5)
        held.close()
        peer.close()
        return writes, got

    writes, got = asyncio.run(main())
    assert writes == [HEAD + b"hello"]
    assert got == HEAD + b"hello"


def test_a_write_nothing_follows_goes_out_once_the_loops_callbacks_ran() -> None:
    async def main() -> tuple[list[bytes], list[bytes], bytes]:
        transport, peer, writes = await _connected()
        held = HeldWrites(transport, asyncio.get_running_loop())
        held.writelines([b"HTTP/1.1 200 OK\r\n", b"transfer-encoding: chunked\r\n\r\n"])
        before = list(writes)
        await asyncio.sleep(0)  # one turn of the loop: the held head is sent
        got = await _received(peer, len(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"))
        held.close()
        peer.close()
        return before, writes, got

    before, writes, got = asyncio.run(main())
    assert before == []
    assert writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    assert got == writes[0]


def test_closing_sends_what_is_held_and_aborting_drops_it() -> None:
    async def main() -> tuple[bytes, bytes]:
        loop = asyncio.get_running_loop()
        transport, peer, _ = await _connected()
        closing = HeldWrites(transport, loop)
        closing.write(b"last words")
        closing.close()
        closed_got = await _received(peer, 1 << 20)  # until the end of the stream
        peer.close()
        transport, peer, _ = await _connected()
        aborting = HeldWrites(transport, loop)
        aborting.write(b"never sent")
        aborting.abort()
        aborted_got = await _received(peer, 1 << 20)
        peer.close()
        return closed_got, aborted_got

    closed_got, aborted_got = asyncio.run(main())
    assert closed_got == b"last words"
    assert aborted_got == b""


async def _streamed(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one,", b"two,", b"three"):
            await asyncio.sleep(0.01)
            yield part

    return StreamingResponse(parts(), media_type="text/plain")


async def _plain(request: Request) -> Response:
    return PlainTextResponse(f"path {request.url.path}")


APP = Starlette(
    routes=[
        Route("/stream", _streamed),
        Route("/a", _plain, methods=["GET", "HEAD"]),
        Route("/b", _plain),
    ]
)


def _exchange(url: str, raw: bytes, done: Callable[[bytes], bool]) -> bytes:
    """Send raw bytes on one connection and read until ``done`` says the answer is whole."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(raw)
        got = b""
        while not done(got):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_uvicorn_serves_keep_alive_pipelined_streamed_and_head_requests_whole() -> None:
    with serving(APP) as url:
        pipelined = _exchange(
            url,
            b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n",
            lambda got: got.endswith(b"path /b"),
        )
        streamed = _exchange(
            url,
            b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n",
            lambda got: got.endswith(b"0\r\n\r\n"),
        )
        head = _exchange(
            url, b"HEAD /a HTTP/1.1\r\nhost: x\r\n\r\n", lambda got: got.endswith(b"\r\n\r\n")
        )
    first, second = pipelined.split(b"HTTP/1.1 200 OK")[1:]
    assert first.endswith(b"\r\n\r\npath /a")
    assert second.startswith(b"\r\n") and b"content-length: 7" in second
    assert streamed.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in streamed
    body = streamed.split(b"\r\n\r\n", 1)[1]
    assert body == b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n"
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
    assert b"content-length: 7" in head


#: what reached the real transports of :class:`Counted` connections, one list per connection
REAL_WRITES: list[list[bytes]] = []


class _Recording:
    """The socket's transport, recording each write that reaches it."""

    def __init__(self, real: asyncio.Transport, writes: list[bytes]) -> None:
        self._real = real
        self._writes = writes

    def write(self, data: Any) -> None:
        self._writes.append(bytes(data))
        self._real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class Counted(OneWriteHttpToolsProtocol):
    """The served protocol over a socket transport that records its writes."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        writes: list[bytes] = []
        REAL_WRITES.append(writes)
        super().connection_made(_Recording(transport, writes))  # type: ignore[arg-type]
        assert isinstance(self.transport, HeldWrites)


def test_each_answer_reaches_the_socket_in_one_write() -> None:
    REAL_WRITES.clear()
    with serving(APP, protocol=Counted) as url:
        got = _exchange(
            url,
            b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n",
            lambda got: got.endswith(b"path /b"),
        )
    (writes,) = REAL_WRITES
    assert len(writes) == 2  # two answers, each head and body together
    assert writes[0].startswith(b"HTTP/1.1 200 OK") and writes[0].endswith(b"path /a")
    assert writes[1].startswith(b"HTTP/1.1 200 OK") and writes[1].endswith(b"path /b")
    assert got == b"".join(writes)
