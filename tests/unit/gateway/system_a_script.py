"""A scripted System A for the gateway's tests: a handler written against httpx's request and response types
(sync or async), handed to :class:`SystemA` as its ``send``. Nothing goes over a socket, and an async handler
runs in the gateway's own event loop (so it can hold a completion until a test lets it go)."""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from pipelines.gateway.backends import Reply, Send, SystemA


class _Reply:
    def __init__(self, resp: httpx.Response) -> None:
        self.status = resp.status_code
        self._resp = resp  # its content may be an async generator: a stream System A is still sending
        self.closed = False

    async def read(self) -> bytes:
        return await self._resp.aread()

    async def lines(self) -> AsyncIterator[str]:
        async for line in self._resp.aiter_lines():
            yield line

    def close(self) -> None:
        self.closed = True


def scripted_send(handler: Callable[[httpx.Request], Any]) -> Send:
    """``handler``'s answers as System A's replies."""

    async def send(method: str, path: str, body: dict[str, Any] | None) -> Reply:
        content = json.dumps(body).encode() if body is not None else b""
        answer = handler(httpx.Request(method, f"http://system-a{path}", content=content))
        if inspect.isawaitable(answer):
            answer = await answer
        return _Reply(answer)

    return send


def scripted_system_a(handler: Callable[[httpx.Request], Any]) -> SystemA:
    return SystemA("http://system-a", send=scripted_send(handler))
