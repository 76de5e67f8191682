"""The gateway's HTTP/1.1 client for System A: kept-alive connections, each request one write, each answer
parsed by ``httptools`` (llhttp, the parser uvicorn serves with).

Why not a general client: at 16 clients on two cores the gateway's added latency is about its CPU per request
times the requests in flight, and with aiohttp the call to System A was about a third of that CPU (URL objects,
header multidicts, timers, cookie and redirect handling). With this client the added p95 at 16 clients halved
(docs/BENCHMARKS.md). System A is one known server that speaks HTTP/1.1 with ``Content-Length``, chunked or
close-delimited bodies; that is all this client reads.

* A connection goes back to the pool only when its answer was read to the end and the server keeps it
  alive; an answer left early (a client that left a stream) closes it, so System A stops generating.
* A kept-alive connection can be closed by the server just as a request is sent on it (uvicorn closes idle
  connections after 5 s): connections idle longer than ``IDLE_S`` are not reused, and a request on a reused
  connection that got no byte of an answer is sent once more on a new one.
* Timeouts: ``CONNECT_S`` to connect, ``READ_S`` between two reads of an answer (a long generation sends
  nothing until it ends).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

CONNECT_S = 5.0
READ_S = 300.0
IDLE_S = 4.0  # under uvicorn's default keep-alive (5 s), so a pooled connection is rarely one it closes
MAX_LINE = 2**20  # a streamed line longer than this is not a Server-Sent Event of System A's
PAUSE_AT = 2**20  # unread bytes past which the connection stops reading until the reader asks for more
MAX_BODY = 64 * 2**20  # a whole answer longer than this is not a completion of System A's


class UpstreamError(Exception):
    """System A's answer broke off, timed out or is not HTTP."""


class _Answer:
    """One answer as it arrives on a :class:`_Connection`."""

    def __init__(self) -> None:
        self.status = 0
        self.headers_done = False
        self.complete = False
        self.error: UpstreamError | None = None
        self.received = False  # any byte of it
        self.keep_alive = False  # whether the server keeps the connection open after it
        self.close_delimited = True  # until a Content-Length or chunked encoding says otherwise
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.paused = False
        self.ready()

    def ready(self) -> None:
        """Ready for the next request's answer (a new connection, or one back in the pool)."""
        self.parser = httptools.HttpResponseParser(self)
        self.answer = _Answer()
        self.idle_since = time.monotonic()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answer.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"System A's answer is not HTTP: {exc}"))
            self.close()
            return
        if len(self.answer.buffer) > PAUSE_AT and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        a = self.answer
        if not a.complete and a.error is None:
            if a.headers_done and a.close_delimited:
                a.complete = True  # a body without a length ends when the connection does
            else:
                self._fail(UpstreamError("System A closed the connection before the answer's end"))
        a.wake()

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-length" or (
            name.lower() == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self.answer.close_delimited = False

    def on_headers_complete(self) -> None:
        self.answer.status = self.parser.get_status_code()
        self.answer.headers_done = True
        self.answer.wake()

    def on_body(self, body: bytes) -> None:
        self.answer.buffer += body
        self.answer.wake()

    def on_message_complete(self) -> None:
        self.answer.keep_alive = self.parser.should_keep_alive()  # (llhttp forgets it once the message ends)
        self.answer.complete = True
        self.answer.wake()

    def _fail(self, error: UpstreamError) -> None:
        if self.answer.error is None:
            self.answer.error = error
        self.answer.wake()

    # used by the pool and the reply
    def reusable(self) -> bool:
        return (
            not self.lost
            and self.answer.complete
            and self.answer.error is None
            and self.answer.keep_alive
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def wait(self) -> None:
        """Until more of the answer has come (or it ended, or failed); ``READ_S`` at most."""
        a = self.answer
        if self.paused and self.transport is not None:  # the reader has taken what it could use
            self.paused = False
            self.transport.resume_reading()
        loop = asyncio.get_running_loop()
        a.waiter = loop.create_future()
        timer = loop.call_later(READ_S, self._silent)  # cheaper than asyncio.wait_for, once per read
        try:
            await a.waiter
        finally:
            timer.cancel()
            a.waiter = None

    def _silent(self) -> None:
        self._fail(UpstreamError(f"System A sent nothing for {READ_S:.0f} s"))
        self.close()


class Reply:
    """System A's answer to one request, its status read; the body whole (:meth:`read`) or line by line
    (:meth:`lines`). :meth:`close` gives the connection back, or closes it if the body was not read to its
    end."""

    def __init__(self, conn: _Connection, pool: Pool) -> None:
        self._conn = conn
        self._pool = pool
        self.status = conn.answer.status
        self._closed = False

    async def read(self) -> bytes:
        a = self._conn.answer
        while not a.complete and a.error is None:
            if len(a.buffer) > MAX_BODY:
                raise UpstreamError(f"System A's answer is longer than {MAX_BODY // 2**20} MiB")
            await self._conn.wait()
        if a.error is not None:
            raise a.error
        body = bytes(a.buffer)
        a.buffer.clear()
        return body

    async def lines(self) -> AsyncIterator[str]:
        a = self._conn.answer
        while True:
            end = a.buffer.find(b"\n")
            if end >= 0:
                line = a.buffer[:end]
                del a.buffer[: end + 1]
                yield line.decode("utf-8", "replace").rstrip("\r")
                continue
            if len(a.buffer) > MAX_LINE:
                raise UpstreamError(f"System A's stream sent a line over {MAX_LINE} bytes")
            if a.error is not None:
                raise a.error
            if a.complete:
                if a.buffer:
                    yield a.buffer.decode("utf-8", "replace").rstrip("\r")
                    a.buffer.clear()
                return
            await self._conn.wait()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._conn.reusable():
            self._pool.put(self._conn)
        else:
            self._conn.close()


class Pool:
    """Kept-alive connections to one server (``http://`` or ``https://``), opened in the running event loop
    as needed; no limit on their number (the gateway's :class:`PriorityGate` bounds the requests)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"System A's URL must be http(s)://host[:port][/path], not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        host = parts.netloc.rsplit("@", 1)[-1]
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head = f"Host: {host}\r\n{extra}".encode("latin-1")
        self._idle: list[_Connection] = []

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(_Connection, self.host, self.port, ssl=self.ssl), CONNECT_S
        )
        return conn

    def _reused(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.lost and now - conn.idle_since < IDLE_S:
                return conn
            conn.close()
        return None

    def put(self, conn: _Connection) -> None:
        conn.ready()
        self._idle.append(conn)

    def _request(self, method: str, path: str, body: bytes | None) -> bytes:
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1") + self._head
        if body is None:
            return head + b"\r\n"
        return head + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    async def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        """Send a request and wait for its answer's status and headers. ``OSError`` or ``TimeoutError`` when
        System A cannot be reached, :class:`UpstreamError` when it does not answer."""
        data = self._request(method, path, body)
        conn = self._reused()
        if conn is not None:
            try:
                await self._exchange(conn, data)
                return Reply(conn, self)
            except UpstreamError:
                if conn.answer.received:
                    raise
                # closed by the server as the request went, unanswered: once more, on a new connection
        conn = await self._open()
        await self._exchange(conn, data)
        return Reply(conn, self)

    @staticmethod
    async def _exchange(conn: _Connection, data: bytes) -> None:
        """Send ``data`` on ``conn`` and wait for the answer's head; its error (``conn`` closed) if it fails."""
        assert conn.transport is not None
        conn.transport.write(data)
        while not conn.answer.headers_done and conn.answer.error is None:
            await conn.wait()
        if conn.answer.error is not None:
            conn.close()
            raise conn.answer.error

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
