"""The gateway's own HTTP/1.1 client for System A (:mod:`pipelines.gateway.upstream`), against a scripted
server on a local socket: what it sends, the three ways a body ends, kept-alive connections reused and
stale ones survived, and every way an answer can fail ending in :class:`UpstreamError` or ``OSError``, never
in a hang or a complete-looking answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pipelines.gateway import upstream
from pipelines.gateway.backends import SystemA
from pipelines.gateway.shapes import GatewayError
from pipelines.gateway.upstream import Pool, UpstreamError
from pipelines.vllm_standin import VLLMStandIn

pytestmark = pytest.mark.unit

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


def ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(the head, the body) of one request; (b"", b"") when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b"", b""
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    return head, await reader.readexactly(length)


def serve(handler: Handler, test: Callable[[str, dict[str, Any]], Awaitable[None]]) -> dict[str, Any]:
    """Run ``test(url, seen)`` against a server whose ``n``-th connection ``handler`` answers."""
    seen: dict[str, Any] = {"connections": 0, "requests": [], "closed_by_client": 0}

    async def main() -> None:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen["connections"] += 1
            try:
                await handler(reader, writer, seen["connections"])
            finally:
                writer.close()

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            await test(f"http://127.0.0.1:{port}/prefix", seen)

    asyncio.run(main())
    return seen


def keep_alive(answer: bytes = b'{"ok": true}') -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            head, body = await read_request(reader)
            if not head:
                return
            handler.requests.append((head, body))  # type: ignore[attr-defined]
            writer.write(ok(answer))
            await writer.drain()

    handler.requests = []  # type: ignore[attr-defined]
    return handler


def test_a_request_is_one_http_11_message_and_a_kept_alive_connection_is_reused():
    handler = keep_alive()

    async def test(url: str, seen: dict[str, Any]) -> None:
        pool = Pool(url, {"Authorization": "Bearer tok"})
        for _ in range(3):
            reply = await pool.request("POST", "/v1/chat/completions", b'{"q": 1}')
            assert (reply.status, await reply.read()) == (200, b'{"ok": true}')
            reply.close()
        reply = await pool.request("GET", "/v1/models")
        assert await reply.read() == b'{"ok": true}'
        reply.close()
        pool.close()

    seen = serve(handler, test)
    assert seen["connections"] == 1
    head, body = handler.requests[0]  # type: ignore[attr-defined]
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /prefix/v1/chat/completions HTTP/1.1"
    assert lines[1].startswith("Host: 127.0.0.1:") and "Authorization: Bearer tok" in lines
    assert "Content-Length: 8" in lines and "Content-Type: application/json" in lines and body == b'{"q": 1}'
    get_head = handler.requests[3][0].decode()  # type: ignore[attr-defined]
    assert get_head.startswith("GET /prefix/v1/models HTTP/1.1") and "Content-Length" not in get_head


def test_chunked_and_close_delimited_bodies_are_read_to_their_end_and_lines_come_whole():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 1:  # chunked, a line split across chunks
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"data: one\n\nda", b"ta: t", b"wo\r\n\r\ndata: [DONE]\n\n"):
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            await read_request(reader)  # kept open until the client closes it
        else:  # no length: the body ends when the connection does (as the stand-in streams)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: x\n\ndata: y")
        await writer.drain()

    async def test(url: str, seen: dict[str, Any]) -> None:
        pool = Pool(url)
        reply = await pool.request("POST", "/s", b"{}")
        assert [line async for line in reply.lines()] == [
            "data: one",
            "",
            "data: two",
            "",
            "data: [DONE]",
            "",
        ]
        reply.close()
        assert len(pool._idle) == 1  # read to its end, kept alive: back in the pool
        pool._idle.pop().close()
        reply = await pool.request("POST", "/s", b"{}")
        assert await reply.read() == b"data: x\n\ndata: y"
        reply.close()
        assert pool._idle == []  # the server closed it: never reused

    serve(handler, test)


def test_a_connection_the_server_closed_while_idle_is_replaced_without_failing_the_request():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(ok(b"first" if n == 1 else b"again"))
        await writer.drain()
        if n == 1:
            await read_request(reader)  # the next request on this connection: closed unanswered

    async def test(url: str, seen: dict[str, Any]) -> None:
        pool = Pool(url)
        reply = await pool.request("POST", "/a", b"{}")
        assert await reply.read() == b"first"
        reply.close()
        reply = await pool.request("POST", "/a", b"{}")  # sent on the kept connection, then on a new one
        assert await reply.read() == b"again"
        reply.close()

    assert serve(handler, test)["connections"] == 2


def test_a_new_connection_closed_unanswered_and_a_body_cut_short_are_errors():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 2:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
            await writer.drain()
        if n == 3:
            writer.write(b"<html>not http</html>\r\n\r\n")
            await writer.drain()

    async def test(url: str, seen: dict[str, Any]) -> None:
        pool = Pool(url)
        with pytest.raises(UpstreamError, match="closed the connection before the answer's end"):
            await pool.request("POST", "/a", b"{}")  # not retried: the connection was new
        reply = await pool.request("POST", "/a", b"{}")
        with pytest.raises(UpstreamError, match="before the answer's end"):
            await reply.read()
        reply.close()
        with pytest.raises(UpstreamError, match="not HTTP"):
            await pool.request("POST", "/a", b"{}")
        assert pool._idle == []

    assert serve(handler, test)["connections"] == 3


def test_a_reply_left_before_its_end_closes_the_connection():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ndata:\n\r\n")
        await writer.drain()
        handler.left = await reader.read() == b""  # type: ignore[attr-defined]  # EOF: the client closed

    async def test(url: str, seen: dict[str, Any]) -> None:
        pool = Pool(url)
        reply = await pool.request("POST", "/s", b"{}")
        lines = reply.lines()
        assert await lines.__anext__() == "data:"
        reply.close()  # a client that left the stream
        await asyncio.sleep(0.05)
        assert pool._idle == []

    serve(handler, test)
    assert handler.left is True  # type: ignore[attr-defined]


def test_silence_past_the_read_timeout_and_an_overlong_line_are_errors(monkeypatch):
    monkeypatch.setattr(upstream, "READ_S", 0.2)
    monkeypatch.setattr(upstream, "MAX_LINE", 64)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 2:
            writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + b"y" * 200)
            await writer.drain()
        await asyncio.sleep(1)

    async def test(url: str, seen: dict[str, Any]) -> None:
        pool = Pool(url)
        with pytest.raises(UpstreamError, match="sent nothing for"):
            await pool.request("POST", "/a", b"{}")
        reply = await pool.request("POST", "/a", b"{}")
        with pytest.raises(UpstreamError, match="line over 64 bytes"):
            [line async for line in reply.lines()]
        reply.close()

    serve(handler, test)


def test_system_a_maps_what_the_client_raises_to_503s():
    async def main() -> None:
        with pytest.raises(GatewayError, match="does not answer: ConnectionRefusedError") as refused:
            await SystemA("http://127.0.0.1:9").post("/v1/chat/completions", {})
        with pytest.raises(GatewayError, match="must be http") as bad:
            await SystemA("ftp://system-a").post("/v1/chat/completions", {})
        assert refused.value.status == bad.value.status == 503

    asyncio.run(main())
    with pytest.raises(ValueError, match="must be http"):
        Pool("system-a:8000")


def test_a_long_answer_pauses_the_connection_until_it_is_read_and_an_endless_one_is_refused(monkeypatch):
    monkeypatch.setattr(upstream, "PAUSE_AT", 1024)
    monkeypatch.setattr(upstream, "MAX_BODY", 300_000)
    monkeypatch.setattr(upstream, "READ_S", 5.0)  # a connection paused for good fails in 5 s, not 300
    line = b"data: " + b"z" * 994 + b"\n"  # 1,001 bytes

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while (await read_request(reader))[0]:
            count = 200 if n == 1 else 400  # 200 kB, then 400 kB (over MAX_BODY)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (count * len(line)))
            for _ in range(count):
                writer.write(line)
                await writer.drain()

    async def test(url: str, seen: dict[str, Any]) -> None:
        pool = Pool(url)
        reply = await pool.request("POST", "/a", b"{}")
        assert await reply.read() == line * 200
        reply.close()
        reply = await pool.request("POST", "/a", b"{}")
        assert [x async for x in reply.lines()] == [line[:-1].decode()] * 200
        reply.close()
        pool.close()
        pool = Pool(url)
        reply = await pool.request("POST", "/a", b"{}")
        with pytest.raises(UpstreamError, match="longer than"):
            await reply.read()
        reply.close()

    serve(handler, test)


def test_system_a_called_from_a_second_event_loop_opens_a_pool_of_its_own():
    with VLLMStandIn(base="smollm2") as srv:
        system_a = SystemA(srv.url)
        for _ in range(2):  # the first loop is closed when the second call runs
            assert asyncio.run(system_a.models()).base == "smollm2"
