"""HTTP inference server: `python -m whisper_ft serve --model <pt|ckpt|name>`.

Owns the HTTP API: `create_app` (the ASGI app, FastAPI), its settings `ServeOptions`, `serve`
(the app under uvicorn) and the `serve` command. It is built from `uploads.py` (receiving and
decoding hostile uploads), `batcher.py` (the decode pool) and `connections.py` (the optional
extras and uvicorn's connection limits); FastAPI and uvicorn come from
requirements-optional.txt and are imported only when a server is built.

Endpoints
---------
`POST /transcribe`, multipart/form-data with the audio in the field `file`
(`curl -F file=@audio.wav http://127.0.0.1:8000/transcribe`), answers 200 with
`{"text", "kana", "duration_s", "elapsed_s", "batch_size"}`:
- `kana`: OpenJTalk's katakana reading of `text` (`text.to_kana`) when the language is `ja`,
  else null;
- `duration_s`: the upload's audio in seconds;
- `elapsed_s`: from the moment the handler starts (request headers read) to the answer:
  receiving the upload, decoding the audio, waiting for a batch, the model's decode and kana;
- `batch_size`: how many requests shared the model's decode.

`GET /health` answers 200 with `{"status": "ok", "model", "device", "language", "queued",
"decoding", "max_batch", "max_queue", "max_upload_mb", "max_duration_s"}`; `queued` requests
are admitted and wait (their upload being decoded, or for a batch), `decoding` are in the batch
the model decodes now.

Errors answer `{"detail": "..."}` saying what to do:
- 400: the request holds no audio: not multipart/form-data, no field `file`, a `file` that is
  not a file upload, an empty (0-byte) upload or a file with no samples;
- 408: the body did not arrive within `request_timeout_s` (a client trickling bytes); the
  connection is closed. Headers that do not arrive in that time close the connection too;
- 413: the request body is larger than `max_upload_mb` MiB. Content-Length is checked before
  anything is read; a body without one (chunked) is read in chunks and refused as soon as it
  passes the limit. The upload is spooled to a temporary file past 1 MiB, never held whole;
- 415: the upload is not audio libsndfile can decode (wav, flac, ogg, mp3), or its header
  declares more than `max_channels` channels or a sample rate outside [`MIN_SAMPLE_RATE`,
  `max_sample_rate`] Hz (refused from the header, before any sample is decoded);
- 422: decodable audio longer than `max_duration_s` (at most Whisper's 30-s window: longer
  audio would be cut), or holding non-finite samples (NaN, infinity);
- 500: the model's decode failed (the traceback goes to the server's log); every request of
  that batch gets the message, and the server goes on serving;
- 503 with `Retry-After`: `max_queue` requests already wait, or `max_requests` are being
  handled (`/health` is never refused for load). Open connections are not refused: past
  `max_connections`, the one that has waited longest without sending a request is closed.

Resources are bounded by the limits, not by what clients send: uploads are decoded by
`decode_workers` threads, block by block (`uploads.decode_upload`: memory is the 16-kHz output
plus one block, whatever the file's rate and channels); at most `max_queue` decoded requests
wait for the model. A request whose client disconnects is dropped before its upload or its
batch is decoded.

Batching (`batcher.Batcher`): a single worker takes the first decoded upload, then whatever
arrives in the next `batch_wait_ms` (up to `max_batch`), and decodes them as one batch on one
dedicated thread, so the event loop keeps receiving uploads and answering `/health`
meanwhile. Requests that queue up during a decode form the next batch.
"""

import asyncio
import concurrent.futures
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from whisper.audio import SAMPLE_RATE

from whisper_ft.inference.transcriber import Transcriber
from whisper_ft.serving.batcher import BATCH_WAIT_MS, MAX_BATCH, Batcher
from whisper_ft.serving.connections import (
    KEEP_ALIVE_S,
    MAX_CONNECTIONS,
    MAX_REQUESTS,
    REQUEST_TIMEOUT_S,
    require_extras,
    uvicorn_config,
)
from whisper_ft.serving.uploads import (
    MAX_CHANNELS,
    MAX_DURATION_S,
    MAX_SAMPLE_RATE,
    MAX_UPLOAD_MB,
    MIN_SAMPLE_RATE,
    RequestError,
    decode_upload,
    received_upload,
)

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

MAX_QUEUE = 32  # admitted requests waiting (upload decode, batch queue); more get 503
DECODE_WORKERS = 2  # threads decoding uploads (libsndfile, soxr) at once

T = TypeVar("T")


@dataclass(frozen=True)
class ServeOptions:
    """The server's limits and batching: what `create_app` and uvicorn are built with."""

    max_upload_mb: float = MAX_UPLOAD_MB  # larger request bodies get 413 (MiB)
    max_duration_s: float = MAX_DURATION_S  # longer audio gets 422 (s, at most Whisper's 30)
    max_batch: int = MAX_BATCH  # requests decoded together
    batch_wait_ms: float = BATCH_WAIT_MS  # how long a request waits for others to join it
    max_queue: int = MAX_QUEUE  # requests admitted to wait for a decode; more get 503
    decode_workers: int = DECODE_WORKERS  # threads decoding uploads to 16-kHz mono
    max_channels: int = MAX_CHANNELS  # uploads with more channels get 415
    max_sample_rate: int = MAX_SAMPLE_RATE  # uploads at a higher rate get 415 (Hz)
    max_requests: int = MAX_REQUESTS  # requests handled at once; more get 503 (not /health)
    max_connections: int = MAX_CONNECTIONS  # open connections; past it the longest idle is shed
    request_timeout_s: float = REQUEST_TIMEOUT_S  # headers, then body, must each arrive (s)
    keep_alive_s: int = KEEP_ALIVE_S  # idle keep-alive connections are closed after (s)

    def __post_init__(self) -> None:
        positive = ("max_upload_mb", "max_batch", "max_queue", "decode_workers")
        positive += ("max_channels", "max_connections", "max_requests", "request_timeout_s")
        positive += ("keep_alive_s",)
        if not_positive := [f"`{name}`" for name in positive if not getattr(self, name) > 0]:
            raise ValueError(f"{', '.join(not_positive)} must be positive")
        if not self.batch_wait_ms >= 0:
            raise ValueError(f"`batch_wait_ms` must be 0 or more, got {self.batch_wait_ms}")
        if not self.max_sample_rate >= MIN_SAMPLE_RATE:
            raise ValueError(f"`max_sample_rate` must be at least {MIN_SAMPLE_RATE} Hz")
        if not 0 < self.max_duration_s <= MAX_DURATION_S:
            raise ValueError(
                f"`max_duration_s` must be in (0, {MAX_DURATION_S:g}]: Whisper hears only its "
                f"first {MAX_DURATION_S:g} s; use whisper.transcribe on the exported .pt for "
                "long audio."
            )


async def until_disconnected(request: "Request", work: "asyncio.Future[T]") -> T:
    """`work`'s result, unless the client disconnects first: then `work` is cancelled (a job
    not yet started never runs) and `RequestError(499)` raised (nobody reads it)."""

    async def disconnected() -> None:
        # The body has been read: the next message is a disconnect (or the response's end).
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
    if work.cancelled():
        raise RequestError(499, "the client disconnected; its request was dropped")
    return work.result()


async def finished(job: "concurrent.futures.Future") -> None:
    """Wait until a thread's `job` has ended, without taking its result or exception."""
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    job.add_done_callback(lambda _: loop.call_soon_threadsafe(ended.set))
    await ended.wait()


def create_app(
    transcriber: Transcriber,
    options: ServeOptions = ServeOptions(),
    model_name: str | None = None,
) -> "FastAPI":
    """The ASGI app around a loaded `transcriber` (see the module docstring for the API),
    with `options`' limits and batching (the connection-level ones, `max_requests`,
    `max_connections` and `keep_alive_s`, are `serve`'s).

    The batching worker and the decode threads start with the app's lifespan, so the app
    serves under uvicorn or any ASGI server that runs lifespan events. `model_name` is what
    `/health` reports.
    """
    require_extras()
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    max_bytes = int(options.max_upload_mb * 2**20)
    batcher = Batcher(transcriber, options.max_batch, options.batch_wait_ms / 1000)
    decoders: ThreadPoolExecutor | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal decoders
        decoders = ThreadPoolExecutor(options.decode_workers, thread_name_prefix="whisper-ft-audio")
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            decoders.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(title="whisper-ft", lifespan=lifespan)

    @app.exception_handler(RequestError)
    async def refuse(request: Request, e: RequestError) -> JSONResponse:
        return JSONResponse({"detail": e.detail}, status_code=e.status_code, headers=e.headers)

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "model": model_name,
            "device": str(transcriber.device),
            "language": transcriber.language,
            "task": transcriber.settings.task,
            "queued": batcher.waiting,
            "decoding": batcher.decoding,
            "max_batch": options.max_batch,
            "max_queue": options.max_queue,
            "max_upload_mb": options.max_upload_mb,
            "max_duration_s": options.max_duration_s,
        }

    def admit() -> None:
        if batcher.waiting >= options.max_queue:
            raise RequestError(
                503,
                f"the server is busy: {batcher.waiting} requests wait (limit {options.max_queue}); "
                "retry after the seconds in the Retry-After header.",
                # Closed: a full server does not take in the rest of a body it will not read.
                {"Retry-After": str(batcher.retry_after_s()), "Connection": "close"},
            )

    @app.post("/transcribe")
    async def transcribe(request: Request) -> dict:
        received = time.perf_counter()
        admit()  # before the body: a full server need not receive it
        async with received_upload(request, max_bytes, options.request_timeout_s) as (
            filename,
            file,
        ):
            admit()
            batcher.waiting += 1  # counted out by the batch that takes the job, or below
            # libsndfile and soxr off the event loop, in the bounded pool.
            decoding = decoders.submit(
                decode_upload,
                file,
                filename,
                options.max_duration_s,
                options.max_channels,
                options.max_sample_rate,
            )
            try:
                waveform = await until_disconnected(request, asyncio.wrap_future(decoding))
            except BaseException:  # refused, disconnected or cancelled: never submitted
                batcher.waiting -= 1
                if not decoding.cancel():  # running: the file must stay open until it ends
                    await finished(decoding)
                raise
        text, kana, batch_size = await until_disconnected(request, batcher.submit(waveform))
        return {
            "text": text,
            "kana": kana,
            "duration_s": round(len(waveform) / SAMPLE_RATE, 3),
            "elapsed_s": round(time.perf_counter() - received, 3),
            "batch_size": batch_size,
        }

    return app


def serve(
    transcriber: Transcriber,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: ServeOptions = ServeOptions(),
) -> None:
    """Serve a loaded `transcriber` on `host`:`port` with uvicorn (`uvicorn_config`) until
    SIGINT/SIGTERM (requests in flight are answered first). Raises `MissingExtrasError`
    without the optional extras, SystemExit when the server does not start."""
    uvicorn = require_extras()
    app = create_app(transcriber, options, model_name=transcriber.model_spec)
    print(
        f"serve: {transcriber.model_spec} on {transcriber.device} (language "
        f"{transcriber.language}); POST http://{host}:{port}/transcribe, GET /health",
        flush=True,
    )
    config = uvicorn_config(
        app,
        host,
        port,
        options.max_connections,
        options.request_timeout_s,
        options.keep_alive_s,
        options.max_requests,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:  # uvicorn.run's check: the port was taken, or the lifespan failed
        raise SystemExit(f"serve: the server did not start on {host}:{port} (see above)")
