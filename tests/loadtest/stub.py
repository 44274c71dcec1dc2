"""A tiny keep-alive HTTP server on 127.0.0.1 that answers every request after ``delay`` seconds.

Requests are handled concurrently (one task per connection, one request at a time
per connection, as HTTP/1.1 without pipelining).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

BODY = b'{"decision":"approved","reasons":[]}'
RESPONSE = (
    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


async def _handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay: float,
    drop_every: int,
    served: list[int],
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if delay:
                await asyncio.sleep(delay)
            served[0] += 1
            if drop_every and served[0] % drop_every == 0:
                return  # hang up without answering
            writer.write(RESPONSE)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@contextmanager
def stub_server(
    delay: float = 0.0, drop_every: int = 0, served: list[int] | None = None
) -> Iterator[int]:
    """Yields the port; the server runs on its own event loop in a daemon thread.

    With ``drop_every`` = k, every k-th request is answered by closing the connection.
    ``served``, if given, counts the requests answered (in its first item).
    """
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []
    served = [0] if served is None else served

    async def start() -> asyncio.Server:
        server = await asyncio.start_server(
            lambda r, w: _handle(r, w, delay, drop_every, served), "127.0.0.1", 0, backlog=512
        )
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        return server

    def main() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(start())
        loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(10), "stub server did not start"
    try:
        yield port[0]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
