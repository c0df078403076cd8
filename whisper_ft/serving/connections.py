"""The server under the app: the optional extras (`require_extras`: fastapi, uvicorn,
python-multipart, imported only when a server is built) and uvicorn configured with every
connection limit set (`uvicorn_config`: requests in flight, connection count, header timeout,
keep-alive, backlog, header size), with log floods quieted (`FloodFilter`).

Work and sockets have separate budgets: requests in flight are limited (`limit_requests`, 503
past `max_requests`), open connections are not refused but shed, the one idle longest first, so
clients that open connections and trickle their headers (slowloris) cannot starve `/health` or
a real request."""

import asyncio
import logging
import math
import time
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

MAX_REQUESTS = 64  # requests handled at once (headers read, answer not sent); more get 503
# Open connections. Past it, the connection that has waited longest without a request (headers
# still arriving, or idle between keep-alive requests) is closed to make room for the new one.
MAX_CONNECTIONS = 1024
HEALTH_PATH = "/health"  # never refused for load: a probe must not fail while the server works
REQUEST_TIMEOUT_S = 30.0  # headers, then the body, must each arrive within this (s)
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this (s; uvicorn's default)
BACKLOG = 128  # connections the kernel holds before they are accepted
MAX_HEADER_BYTES = 16_384  # h11's buffer for an incomplete request line and headers
LOG_FLOOD_INTERVAL_S = 10.0  # one log record per message and logger in this time at most
# After a refusal mid-body, what the server still reads (and drops) so the client gets to read
# the answer: nginx's lingering close, with its 5-s default, and a cap on the bytes.
LINGER_S = 5.0
LINGER_MAX_BYTES = 64 * 2**20

EXTRAS_MESSAGE = "serve needs the optional extras: pip install -r requirements-optional.txt"


class MissingExtrasError(ImportError):
    """fastapi, uvicorn or python-multipart is not installed; the message says how to get them."""


def require_extras() -> ModuleType:
    """Import the optional server stack; returns `uvicorn`. Raises `MissingExtrasError`."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
        from starlette import formparsers
    except ModuleNotFoundError as e:
        raise MissingExtrasError(f"{EXTRAS_MESSAGE} ({e})") from e
    if formparsers.multipart is None:  # python-multipart, which starlette imports if it can
        raise MissingExtrasError(f"{EXTRAS_MESSAGE} (No module named 'python_multipart')")
    return uvicorn


class FloodFilter(logging.Filter):
    """Lets one record per message (its format string) through every `interval_s`; the next
    one let through says how many were dropped. Under a flood of connections, asyncio logs a
    traceback per failed accept and uvicorn a warning per refused request: hundreds of MB."""

    def __init__(self, interval_s: float = LOG_FLOOD_INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.last: dict[str, float] = {}  # message → when one was last let through
        self.dropped: dict[str, int] = {}  # message → records dropped since

    def filter(self, record: logging.LogRecord) -> bool:
        key, now = str(record.msg), time.monotonic()
        if now - self.last.get(key, -math.inf) < self.interval_s:
            self.dropped[key] = self.dropped.get(key, 0) + 1
            return False
        self.last[key] = now
        if dropped := self.dropped.pop(key, 0):
            record.msg = f"{record.msg} ({dropped} more like it in the last {self.interval_s:g} s)"
        return True


def quiet_floods(loggers: tuple[str, ...] = ("asyncio", "uvicorn.error")) -> None:
    """Put a `FloodFilter` on `loggers` (once per logger)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, FloodFilter) for f in logger.filters):
            logger.addFilter(FloodFilter())


class LingeringTransport:
    """A transport whose `close` is its protocol's `linger`; everything else is the wrapped
    transport's. uvicorn's protocol and its request cycles close the transport they were given
    in a dozen places: wrapping it makes each of them a gentle close."""

    def __init__(self, transport: asyncio.Transport, protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        self._protocol.linger(self._transport)

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


def limit_requests(app, max_requests: int = MAX_REQUESTS, exempt: tuple[str, ...] = (HEALTH_PATH,)):
    """`app` (ASGI) answering 503 with `Retry-After` to an HTTP request that arrives while
    `max_requests` others are being handled; requests to the `exempt` paths are always
    handled. Counts requests, not connections: one that has not sent its headers costs
    nothing here."""
    in_flight = 0
    body = b'{"detail": "the server is busy: too many requests at once; retry after the seconds in the Retry-After header."}'  # noqa: E501
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]

    async def limited(scope, receive, send) -> None:
        nonlocal in_flight
        if scope["type"] != "http" or scope["path"] in exempt:
            return await app(scope, receive, send)
        if in_flight >= max_requests:
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        in_flight += 1
        try:
            await app(scope, receive, send)
        finally:
            in_flight -= 1

    return limited


def uvicorn_config(
    app: "FastAPI",
    host: str = "127.0.0.1",
    port: int = 8000,
    max_connections: int = MAX_CONNECTIONS,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    keep_alive_s: int = KEEP_ALIVE_S,
    max_requests: int = MAX_REQUESTS,
    **kwargs,
) -> "uvicorn.Config":
    """uvicorn's settings for `app` with every limit set: `max_requests` in flight (more get
    503, `limit_requests`), `max_connections` open (past it the longest-idle one is shed),
    request headers that must arrive within `request_timeout_s` (uvicorn has no such timeout),
    `keep_alive_s`, `BACKLOG`, `MAX_HEADER_BYTES`; log floods quieted (`quiet_floods`); a
    connection refused before its body was read closed gently (`LINGER_S`).
    `kwargs` go to `uvicorn.Config` as they are (`log_config`, `log_level`)."""
    uvicorn = require_extras()
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol, closing a connection whose request line and headers have not
        all arrived `request_timeout_s` after it opened or after the request's first byte: a
        client sending a header byte every few seconds would otherwise hold it forever.

        A connection closed while the client is still sending its body (refused mid-body: 413,
        408, 415, 503, all answered with `Connection: close`) lingers: the write side is shut
        after the answer, and what the client still sends is read and dropped until it stops,
        for at most `LINGER_S` and `LINGER_MAX_BYTES`. Closed at once, the unread bytes would
        make the kernel reset the connection, and the client would see "connection reset by
        peer" instead of the answer."""

        header_timer: asyncio.TimerHandle | None = None
        linger_timer: asyncio.TimerHandle | None = None
        lingered_bytes: int = 0
        idle_since: float = 0.0  # when it last started waiting for a request's headers

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(LingeringTransport(transport, self))
            self.idle_since = self.loop.time()
            self.header_timer = self.loop.call_later(request_timeout_s, self.headers_late)
            self.shed()

        def shed(self) -> None:
            """Over the connection budget: close the connection that has waited longest
            without a request (this one if no other is waiting). Connections already closing
            do not count: their `connection_lost` comes later, in a burst of accepts."""
            open_ = [c for c in self.connections if not c.transport.is_closing()]
            if len(open_) <= max_connections:
                return
            waiting = [
                c
                for c in open_
                if isinstance(c, TimedH11Protocol) and c.conn.their_state is h11.IDLE
            ]
            oldest = min(waiting, key=lambda c: c.idle_since, default=self)
            oldest.transport.close()

        def on_response_complete(self) -> None:
            self.idle_since = self.loop.time()
            super().on_response_complete()

        def linger(self, transport: asyncio.Transport) -> None:
            """Close `transport` (the real one) gently if the request's body is unread."""
            if self.linger_timer is not None or transport.is_closing():
                return
            if self.conn.their_state is not h11.SEND_BODY or not transport.can_write_eof():
                transport.close()
                return
            transport.write_eof()  # after the buffered answer: the client reads it, then EOF
            self.linger_timer = self.loop.call_later(LINGER_S, transport.close)
            transport.resume_reading()  # uvicorn pauses reading while the app holds a body

        def eof_received(self) -> bool | None:
            if self.linger_timer is not None:
                return None  # the client has sent all: asyncio closes the transport now
            return super().eof_received()

        def data_received(self, data: bytes) -> None:
            if self.linger_timer is not None:  # the answer is sent: drop the rest unread
                self.lingered_bytes += len(data)
                if self.lingered_bytes > LINGER_MAX_BYTES:
                    self.transport.abort()
                return
            if self.header_timer is None and self.conn.their_state is h11.IDLE:
                self.header_timer = self.loop.call_later(request_timeout_s, self.headers_late)
            super().data_received(data)
            if self.header_timer is not None and self.conn.their_state is not h11.IDLE:
                self.header_timer.cancel()  # the headers are in; the app times the body
                self.header_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            for timer in (self.header_timer, self.linger_timer):
                if timer is not None:
                    timer.cancel()
            super().connection_lost(exc)

        def headers_late(self) -> None:
            self.header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    config = uvicorn.Config(
        limit_requests(app, max_requests),
        host=host,
        port=port,
        http=TimedH11Protocol,
        timeout_keep_alive=keep_alive_s,
        backlog=BACKLOG,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        **kwargs,
    )
    quiet_floods()  # after Config, which configures logging
    return config
