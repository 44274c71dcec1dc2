"""Refuse request bodies over a size limit before anything reads them.

The body is read here first, up to the limit: over it, the answer is 413 at once
(also for a chunked body, or one whose Content-Length understates it); within it,
the application gets the body replayed. Bodies are small (16 KiB at most), so
holding one costs nothing, and no route ever sees a partial body.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 16 * 1024


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break  # the client went away: the application learns it as usual
            seen += len(message.get("body", b""))
            if seen > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        await refuse_body(send, self.limit)


async def refuse_body(send: Send, limit: int = MAX_BODY_BYTES) -> None:
    """Answer 413 with the contract's error body."""
    body = orjson.dumps(
        {
            "error": {
                "code": "body_too_large",
                "message": f"the request body is over {limit // 1024} KiB; "
                "send only item, applicant_id and form",
            }
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
