"""HTTP inference server: `python -m whisper_ft serve --model <pt|ckpt|name>`.

An ASGI app (FastAPI) run by uvicorn; both come from requirements-optional.txt and are imported
only here, when the server is built.

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
- 503 with `Retry-After`: `max_queue` requests already wait; uvicorn also answers 503 past
  `max_connections` open connections.

Resources are bounded by the limits, not by what clients send: uploads are decoded by
`decode_workers` threads, block by block (`DECODE_BLOCK_FRAMES`), each block mixed to mono and
resampled to 16 kHz as a stream, so a decode's memory is its 16-kHz output (at most
`max_duration_s`) plus one block, whatever the file's rate and channels; at most `max_queue`
decoded requests wait for the model. A request whose client disconnects is dropped before its
upload or its batch is decoded.

Batching: handlers put decoded waveforms on one queue; a single worker task takes the first,
then whatever arrives in the next `batch_wait_ms` (up to `max_batch`), and decodes them as one
batch in one dedicated thread (the `Transcriber` is not thread-safe), so the event loop keeps
receiving uploads and answering `/health` meanwhile. Requests that queue up during a decode
form the next batch.
"""

import argparse
import asyncio
import concurrent.futures
import inspect
import io
import logging
import math
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, BinaryIO, TypeVar

import numpy as np
import soundfile as sf
import soxr
from whisper.audio import CHUNK_LENGTH, SAMPLE_RATE

from whisper_ft.arguments import non_negative_float, positive_float, positive_int

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI, Request

    from whisper_ft.transcribe import Transcriber

MAX_UPLOAD_MB = 20.0  # request body limit (MiB): 30 s of 48-kHz stereo 24-bit WAV is 8.2 MiB
MAX_DURATION_S = float(CHUNK_LENGTH)  # Whisper's window: the model never hears audio past it
MAX_BATCH = 8  # requests decoded together at most
BATCH_WAIT_MS = 10.0  # how long the first request of a batch waits for others to join it
MAX_QUEUE = 32  # admitted requests waiting (upload decode, batch queue); more get 503
DECODE_WORKERS = 2  # threads decoding uploads (libsndfile, soxr) at once
MAX_CHANNELS = 8  # 7.1 surround; a file with more is not a recording to transcribe
MAX_SAMPLE_RATE = 192_000  # Hz, the highest rate common audio interfaces record at
MIN_SAMPLE_RATE = 1_000  # Hz; below it there is no speech left to hear
DECODE_BLOCK_FRAMES = 65_536  # frames read at once: 2 MiB of float32 at 8 channels
MAX_CONNECTIONS = 64  # open connections (and requests) before uvicorn answers 503
REQUEST_TIMEOUT_S = 30.0  # headers, then the body, must each arrive within this (s)
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this (s; uvicorn's default)
BACKLOG = 128  # connections the kernel holds before they are accepted
MAX_HEADER_BYTES = 16_384  # h11's buffer for an incomplete request line and headers
LOG_FLOOD_INTERVAL_S = 10.0  # one log record per message and logger in this time at most

EXTRAS_MESSAGE = "serve needs the optional extras: pip install -r requirements-optional.txt"

log = logging.getLogger(__name__)

T = TypeVar("T")


class MissingExtrasError(ImportError):
    """fastapi, uvicorn or python-multipart is not installed; the message says how to get them."""


class RequestError(Exception):
    """A request the server refuses: answered with `status_code`, `{"detail": detail}` and
    `headers`."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


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


def decode_upload(
    file: BinaryIO,
    filename: str,
    max_duration_s: float = MAX_DURATION_S,
    max_channels: int = MAX_CHANNELS,
    max_sample_rate: int = MAX_SAMPLE_RATE,
) -> np.ndarray:
    """An uploaded file's audio as `load_audio` reads a file: mono, float32, 16 kHz (soxr HQ).

    The header is checked first (channels, sample rate, duration), so a small compressed file
    that would expand to gigabytes is refused before it is decoded. The samples are then read
    `DECODE_BLOCK_FRAMES` at a time, each block mixed to mono and fed to a streaming resampler
    (bit-identical to `to_mono` on the whole file), so memory is bounded by the 16-kHz output.
    Raises `RequestError` (400, 415, 422).

    Returns
    -------
    np.ndarray, shape = (n_samples,), float32
    """
    if file.seek(0, io.SEEK_END) == 0:
        raise RequestError(400, f"{filename}: the upload is empty (0 bytes); send an audio file.")
    file.seek(0)
    try:
        with sf.SoundFile(file) as f:
            check_header(
                f.channels, f.samplerate, f.frames, filename, max_duration_s, max_channels,
                max_sample_rate,
            )  # fmt: skip
            blocks = _decode_blocks(f, filename, math.floor(max_duration_s * f.samplerate))
    except (sf.LibsndfileError, RuntimeError) as e:
        # libsndfile's own words: str(e) would name the in-memory buffer, not the file.
        reason = getattr(e, "error_string", str(e))
        raise RequestError(
            415,
            f"{filename}: cannot decode audio ({reason}). Send a format libsndfile reads (wav, "
            "flac, ogg, mp3); convert others with ffmpeg.",
        ) from e
    waveform = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if waveform.size == 0:
        raise RequestError(400, f"{filename}: the file holds no audio samples.")
    return waveform


def check_header(
    channels: int,
    sample_rate: int,
    frames: int,
    filename: str,
    max_duration_s: float = MAX_DURATION_S,
    max_channels: int = MAX_CHANNELS,
    max_sample_rate: int = MAX_SAMPLE_RATE,
) -> None:
    """Refuse, from the header alone, channel counts and sample rates no recording to
    transcribe has (415: decoding costs grow with them while the 16-kHz mono the model hears
    does not) and audio longer than `max_duration_s` (422)."""
    if channels > max_channels:
        raise RequestError(
            415,
            f"{filename}: {channels} channels, more than this server's limit of "
            f"{max_channels}; mix it down first (ffmpeg -i IN -ac 1 OUT.flac).",
        )
    if not MIN_SAMPLE_RATE <= sample_rate <= max_sample_rate:
        raise RequestError(
            415,
            f"{filename}: a sample rate of {sample_rate} Hz, outside this server's limits of "
            f"{MIN_SAMPLE_RATE}-{max_sample_rate} Hz; resample it first "
            "(ffmpeg -i IN -ar 16000 OUT.flac).",
        )
    if frames / sample_rate > max_duration_s:
        raise RequestError(
            422,
            f"{filename}: the audio lasts {frames / sample_rate:.1f} s, longer than this "
            f"server's limit of {max_duration_s:g} s; cut it into shorter pieces.",
        )


def _decode_blocks(f: sf.SoundFile, filename: str, max_frames: int) -> list[np.ndarray]:
    """16-kHz mono blocks of an open file, read block by block; refuses (422) non-finite samples
    and more than `max_frames` frames (a header can lie about its length).

    Returns
    -------
    list of np.ndarray, each shape = (n_samples,), float32
    """
    resampler = None
    if f.samplerate != SAMPLE_RATE:
        resampler = soxr.ResampleStream(f.samplerate, SAMPLE_RATE, 1, "float32", quality="HQ")
    out, n_frames = [], 0
    while True:
        # An explicit frame count: libsndfile marks some files (GSM 6.10 in WAV) as not
        # seekable, and soundfile then refuses to read "all" of them with a ValueError.
        frames = f.read(DECODE_BLOCK_FRAMES, dtype="float32", always_2d=True)
        last = len(frames) < DECODE_BLOCK_FRAMES
        n_frames += len(frames)
        if n_frames > max_frames:
            raise RequestError(
                422,
                f"{filename}: the audio lasts more than this server's limit of "
                f"{max_frames / f.samplerate:g} s (its header said less); cut it into "
                "shorter pieces.",
            )
        mono = frames.mean(axis=1)  # float32 sums can overflow: checked after mixing
        if not np.isfinite(mono).all():
            at_s = (n_frames - len(frames) + np.flatnonzero(~np.isfinite(mono))[0]) / f.samplerate
            raise RequestError(
                422,
                f"{filename}: non-finite samples (NaN or infinity) from {at_s:.3f} s on; "
                "send audio with finite samples.",
            )
        if resampler is not None:
            mono = resampler.resample_chunk(mono, last=last)
        out.append(mono)
        if last:
            return out


@asynccontextmanager
async def received_upload(
    request: "Request", max_bytes: int, timeout_s: float
) -> AsyncIterator[tuple[str, BinaryIO]]:
    """`(filename, file)` of the multipart field `file`, open until the context exits (a
    temporary file past 1 MiB). The body is read in chunks: refused (413) as soon as it passes
    `max_bytes`, and (408) when it has not all arrived `timeout_s` after the headers.
    Raises `RequestError` (400, 408, 413)."""
    from starlette.formparsers import MultiPartException, MultiPartParser
    from starlette.requests import ClientDisconnect

    close = {"Connection": "close"}  # the rest of the body is not read: the connection is done
    too_large = RequestError(
        413,
        f"the upload is larger than this server's limit of {max_bytes / 2**20:g} MiB "
        f"({max_bytes} bytes); send a shorter or compressed (flac, ogg) file.",
        close,
    )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise too_large
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise RequestError(
            400,
            "send the audio as multipart/form-data in the field `file` "
            "(curl -F file=@audio.wav <url>/transcribe).",
        )
    deadline = asyncio.get_running_loop().time() + timeout_s

    async def limited() -> AsyncIterator[bytes]:
        n_bytes = 0
        chunks = request.stream()
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                chunk = await asyncio.wait_for(anext(chunks), max(remaining, 0))
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:  # = TimeoutError from 3.11 on; its own class before
                raise RequestError(
                    408,
                    f"the upload did not arrive within this server's limit of {timeout_s:g} s "
                    f"({n_bytes} bytes received); send it over a faster connection.",
                    close,
                ) from None
            n_bytes += len(chunk)
            if n_bytes > max_bytes:
                raise too_large
            yield chunk

    try:
        form = await MultiPartParser(request.headers, limited(), max_files=1, max_fields=16).parse()
    except MultiPartException as e:
        raise RequestError(400, f"malformed multipart body: {e.message}") from e
    except ClientDisconnect as e:  # nobody reads the answer; it only keeps the log clean
        raise RequestError(400, "the client went away before the upload was complete") from e
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise RequestError(
                400,
                "no file in the field `file`; upload the audio as "
                "`curl -F file=@audio.wav <url>/transcribe`.",
            )
        yield upload.filename or "the upload", upload.file
    finally:
        await form.close()


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


@dataclass
class _Job:
    waveform: np.ndarray  # 16-kHz mono float32
    answer: asyncio.Future  # set to (text, kana, batch_size) or a RequestError
    waiting: bool = True  # counted in `Batcher.waiting`: not yet taken, not cancelled


class Batcher:
    """One worker task that decodes queued waveforms in batches on one dedicated thread.

    `waiting` counts the requests admitted and not yet taken into a batch (their upload being
    decoded, or their waveform queued): the handler counts a request in, and out when it gives
    up before `submit`; from `submit` on, the job counts until a batch takes it or its answer
    is cancelled (its client left).
    """

    def __init__(self, transcriber: "Transcriber", max_batch: int, batch_wait_s: float) -> None:
        self.transcriber = transcriber
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.decoding = 0  # requests in the batch being decoded now
        self.waiting = 0  # requests admitted, not yet in a batch
        self.last_batch_s = 1.0  # how long the last batch took (for Retry-After)

    def start(self) -> None:
        """Start the worker on the running event loop (the app's lifespan calls this)."""
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper-ft-decode")
        self.worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.worker.cancel()
        with suppress(asyncio.CancelledError):
            await self.worker
        self.executor.shutdown(wait=True, cancel_futures=True)

    def retry_after_s(self) -> int:
        """Seconds until the waiting requests have likely been decoded (at least 1)."""
        batches = math.ceil(self.waiting / self.max_batch) + (self.decoding > 0)
        return max(1, math.ceil(batches * self.last_batch_s))

    def submit(self, waveform: np.ndarray) -> asyncio.Future:
        """A future of `(text, kana, batch_size)`, set once the batch holding `waveform` is
        decoded; cancelling it drops the request before its batch starts.

        waveform : np.ndarray, shape = (n_samples,), 16-kHz mono float32
        """
        job = _Job(waveform, asyncio.get_running_loop().create_future())
        job.answer.add_done_callback(lambda answer: answer.cancelled() and self._drop(job))
        self.queue.put_nowait(job)
        return job.answer

    def _take(self, job: _Job) -> _Job:
        if job.waiting:
            job.waiting = False
            self.waiting -= 1
        return job

    def _drop(self, job: _Job) -> None:
        if job.waiting:  # still queued: its memory back now, not when a batch takes it
            self._take(job).waveform = np.zeros(0, np.float32)

    async def _collect(self) -> list[_Job]:
        batch = [self._take(await self.queue.get())]
        deadline = asyncio.get_running_loop().time() + self.batch_wait_s
        while len(batch) < self.max_batch:
            if not self.queue.empty():  # those that queued during the last decode join at once
                batch.append(self._take(self.queue.get_nowait()))
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:  # not asyncio.timeout_at: that needs Python 3.11
                batch.append(self._take(await asyncio.wait_for(self.queue.get(), remaining)))
            except asyncio.TimeoutError:  # = TimeoutError from 3.11 on; its own class before
                break
        # A request whose client went away (its future cancelled) is not decoded.
        return [job for job in batch if not job.answer.done()]

    def _decode(self, waveforms: list[np.ndarray]) -> list[tuple[str, str | None]]:
        return [(text, self.transcriber.kana(text)) for text in self.transcriber(waveforms)]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            self.decoding = len(batch)
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self.executor, self._decode, [job.waveform for job in batch]
                )
            except Exception as e:  # noqa: BLE001 (answered as 500; the worker must live on)
                log.exception("decoding a batch of %d failed", len(batch))
                detail = (
                    f"decoding failed ({type(e).__name__}: {e}); the server keeps running. "
                    "Retry; if it fails again, see the server's log (out of memory: restart "
                    "it with a smaller --max-batch)."
                )
                for job in batch:
                    if not job.answer.done():
                        job.answer.set_exception(RequestError(500, detail))
            else:
                for job, (text, kana) in zip(batch, results, strict=True):
                    if not job.answer.done():
                        job.answer.set_result((text, kana, len(batch)))
            finally:
                self.decoding = 0
                self.last_batch_s = time.perf_counter() - started


def create_app(
    transcriber: "Transcriber",
    max_upload_mb: float = MAX_UPLOAD_MB,
    max_duration_s: float = MAX_DURATION_S,
    max_batch: int = MAX_BATCH,
    batch_wait_ms: float = BATCH_WAIT_MS,
    model_name: str | None = None,
    max_queue: int = MAX_QUEUE,
    decode_workers: int = DECODE_WORKERS,
    max_channels: int = MAX_CHANNELS,
    max_sample_rate: int = MAX_SAMPLE_RATE,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
) -> "FastAPI":
    """The ASGI app around a loaded `transcriber` (see the module docstring for the API).

    The batching worker and the decode threads start with the app's lifespan, so the app
    serves under uvicorn or any ASGI server that runs lifespan events. `model_name` is what
    `/health` reports.
    """
    require_extras()
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    if min(max_upload_mb, max_batch, max_queue, decode_workers, request_timeout_s) <= 0:
        raise ValueError(
            "max_upload_mb, max_batch, max_queue, decode_workers and request_timeout_s must "
            "be positive"
        )
    if batch_wait_ms < 0:
        raise ValueError(f"batch_wait_ms must be 0 or more, got {batch_wait_ms}")
    if max_channels < 1 or max_sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(
            f"max_channels must be at least 1 and max_sample_rate at least {MIN_SAMPLE_RATE} Hz"
        )
    if not 0 < max_duration_s <= MAX_DURATION_S:
        raise ValueError(
            f"max_duration_s must be in (0, {MAX_DURATION_S:g}]: Whisper hears only its first "
            f"{MAX_DURATION_S:g} s; use whisper.transcribe on the exported .pt for long audio."
        )
    max_bytes = int(max_upload_mb * 2**20)
    batcher = Batcher(transcriber, max_batch, batch_wait_ms / 1000)
    decoders: ThreadPoolExecutor | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal decoders
        decoders = ThreadPoolExecutor(decode_workers, thread_name_prefix="whisper-ft-audio")
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
            "queued": batcher.waiting,
            "decoding": batcher.decoding,
            "max_batch": max_batch,
            "max_queue": max_queue,
            "max_upload_mb": max_upload_mb,
            "max_duration_s": max_duration_s,
        }

    def admit() -> None:
        if batcher.waiting >= max_queue:
            raise RequestError(
                503,
                f"the server is busy: {batcher.waiting} requests wait (limit {max_queue}); "
                "retry after the seconds in the Retry-After header.",
                # Closed: a full server does not take in the rest of a body it will not read.
                {"Retry-After": str(batcher.retry_after_s()), "Connection": "close"},
            )

    @app.post("/transcribe")
    async def transcribe(request: Request) -> dict:
        received = time.perf_counter()
        admit()  # before the body: a full server need not receive it
        async with received_upload(request, max_bytes, request_timeout_s) as (filename, file):
            admit()
            batcher.waiting += 1  # counted out by the batch that takes the job, or below
            # libsndfile and soxr off the event loop, in the bounded pool.
            decoding = decoders.submit(
                decode_upload, file, filename, max_duration_s, max_channels, max_sample_rate
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


def uvicorn_config(
    app: "FastAPI",
    host: str = "127.0.0.1",
    port: int = 8000,
    max_connections: int = MAX_CONNECTIONS,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    keep_alive_s: int = KEEP_ALIVE_S,
    **kwargs,
) -> "uvicorn.Config":
    """uvicorn's settings for `app` with every limit set: `max_connections` (more get 503),
    request headers that must arrive within `request_timeout_s` (uvicorn has no such timeout),
    `keep_alive_s`, `BACKLOG`, `MAX_HEADER_BYTES`; log floods quieted (`quiet_floods`).
    `kwargs` go to `uvicorn.Config` as they are (`log_config`, `log_level`)."""
    uvicorn = require_extras()
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol, closing a connection whose request line and headers have not
        all arrived `request_timeout_s` after it opened or after the request's first byte: a
        client sending a header byte every few seconds would otherwise hold it forever."""

        header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.header_timer = self.loop.call_later(request_timeout_s, self.headers_late)

        def data_received(self, data: bytes) -> None:
            if self.header_timer is None and self.conn.their_state is h11.IDLE:
                self.header_timer = self.loop.call_later(request_timeout_s, self.headers_late)
            super().data_received(data)
            if self.header_timer is not None and self.conn.their_state is not h11.IDLE:
                self.header_timer.cancel()  # the headers are in; the app times the body
                self.header_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
            super().connection_lost(exc)

        def headers_late(self) -> None:
            self.header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=TimedH11Protocol,
        limit_concurrency=max_connections,
        timeout_keep_alive=keep_alive_s,
        backlog=BACKLOG,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        **kwargs,
    )
    quiet_floods()  # after Config, which configures logging
    return config


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    language: str | None = None,
    device: str | None = None,
    max_upload_mb: float = MAX_UPLOAD_MB,
    max_duration_s: float = MAX_DURATION_S,
    max_batch: int = MAX_BATCH,
    batch_wait_ms: float = BATCH_WAIT_MS,
    max_queue: int = MAX_QUEUE,
    decode_workers: int = DECODE_WORKERS,
    max_channels: int = MAX_CHANNELS,
    max_sample_rate: int = MAX_SAMPLE_RATE,
    max_connections: int = MAX_CONNECTIONS,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    keep_alive_s: int = KEEP_ALIVE_S,
) -> None:
    """Load `model` once, then serve it with uvicorn until SIGINT/SIGTERM (requests in flight
    are answered first). The `serve` command's options are this signature's parameters.
    Raises `MissingExtrasError` before loading anything without the optional extras."""
    uvicorn = require_extras()
    from whisper_ft.transcribe import Transcriber

    transcriber = Transcriber(model, language=language, device=device)
    app = create_app(
        transcriber,
        max_upload_mb=max_upload_mb,
        max_duration_s=max_duration_s,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        model_name=model,
        max_queue=max_queue,
        decode_workers=decode_workers,
        max_channels=max_channels,
        max_sample_rate=max_sample_rate,
        request_timeout_s=request_timeout_s,
    )
    print(
        f"serve: {model} on {transcriber.device} (language {transcriber.language}); "
        f"POST http://{host}:{port}/transcribe, GET /health",
        flush=True,
    )
    config = uvicorn_config(app, host, port, max_connections, request_timeout_s, keep_alive_s)
    server = uvicorn.Server(config)
    server.run()
    if not server.started:  # uvicorn.run's check: the port was taken, or the lifespan failed
        raise SystemExit(f"serve: the server did not start on {host}:{port} (see above)")


SERVE_DEFAULTS = {name: p.default for name, p in inspect.signature(serve).parameters.items()}


def _duration_s(value: str) -> float:
    seconds = positive_float(value)
    if seconds > MAX_DURATION_S:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_DURATION_S:g} s (Whisper's window), got {value}"
        )
    return seconds


def _sample_rate(value: str) -> int:
    rate = positive_int(value)
    if rate < MIN_SAMPLE_RATE:
        raise argparse.ArgumentTypeError(f"at least {MIN_SAMPLE_RATE} Hz, got {value}")
    return rate


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve` to an argparse subparsers object: one option per parameter of `serve`, with
    its default; it sets `func`, a callable(args) → exit code (0 after a clean shutdown)."""
    p = subparsers.add_parser(
        "serve",
        help="HTTP server: POST /transcribe (multipart field `file`) → JSON text and kana",
        description="Load a model once and answer POST /transcribe (multipart/form-data, audio "
        "in the field `file`) with {text, kana, duration_s, elapsed_s, batch_size}, GET /health "
        "with the model and queue. Requests that arrive together are decoded as one batch. "
        "For a public deployment, put a reverse proxy in front (README: Reliability). "
        f"Needs the optional extras ({EXTRAS_MESSAGE.split(': ')[1]}).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    options: dict[str, tuple[type | None, str]] = {  # parameter → (value type, help)
        "host": (str, "address to listen on (0.0.0.0: all)"),
        "port": (int, "TCP port"),
        "language": (str, "language token (default: the checkpoint's, else ja)"),
        "device": (str, "cuda, cuda:1, cpu (default: cuda when available)"),
        "max_upload_mb": (positive_float, "larger request bodies get 413 (MiB)"),
        "max_duration_s": (_duration_s, f"longer audio gets 422 (s, at most {MAX_DURATION_S:g})"),
        "max_batch": (positive_int, "requests decoded together"),
        "batch_wait_ms": (non_negative_float, "how long a request waits for others to join it"),
        "max_queue": (positive_int, "requests admitted to wait for a decode; more get 503"),
        "decode_workers": (positive_int, "threads decoding uploads to 16-kHz mono"),
        "max_channels": (positive_int, "uploads with more channels get 415"),
        "max_sample_rate": (_sample_rate, "uploads at a higher rate get 415 (Hz)"),
        "max_connections": (positive_int, "open connections before uvicorn answers 503"),
        "request_timeout_s": (positive_float, "headers, then body, must each arrive within (s)"),
        "keep_alive_s": (positive_int, "idle keep-alive connections are closed after (s)"),
    }
    p.add_argument("--model", required=True, help="Whisper name, .pt, .ckpt or random:<size>")
    for name, (value_type, help_text) in options.items():
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, type=value_type, default=SERVE_DEFAULTS[name], help=help_text)
    p.set_defaults(func=_serve_from_args)


def _serve_from_args(args: argparse.Namespace) -> int:
    serve(**{name: getattr(args, name) for name in SERVE_DEFAULTS})
    return 0
