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
"decoding", "max_batch", "max_upload_mb", "max_duration_s"}`; `queued` requests wait for the
decoding thread, `decoding` are in the batch it decodes now.

Errors answer `{"detail": "..."}` saying what to do:
- 400: the request holds no audio: not multipart/form-data, no field `file`, a `file` that is
  not a file upload, an empty (0-byte) upload or a file with no samples;
- 413: the request body is larger than `max_upload_mb` MiB. Content-Length is checked before
  anything is read; a body without one (chunked) is read in chunks and refused as soon as it
  passes the limit, so a large upload is never held in memory or on disk;
- 415: the upload is not audio libsndfile can decode (wav, flac, ogg, mp3); names the file;
- 422: decodable audio longer than `max_duration_s` (at most Whisper's 30-s window: longer
  audio would be cut); gives the duration and the limit;
- 500: the model's decode failed (the traceback goes to the server's log); every request of
  that batch gets the message, and the server goes on serving.

Batching: handlers put decoded waveforms on one queue; a single worker task takes the first,
then whatever arrives in the next `batch_wait_ms` (up to `max_batch`), and decodes them as one
batch in one dedicated thread (the `Transcriber` is not thread-safe), so the event loop keeps
receiving uploads and answering `/health` meanwhile. Requests that queue up during a decode
form the next batch.
"""

import argparse
import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
from whisper.audio import CHUNK_LENGTH, SAMPLE_RATE

from whisper_ft.arguments import non_negative_float, positive_float, positive_int
from whisper_ft.audio import to_mono

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

    from whisper_ft.transcribe import Transcriber

MAX_UPLOAD_MB = 20.0  # request body limit (MiB): 30 s of 48-kHz stereo 24-bit WAV is 8.2 MiB
MAX_DURATION_S = float(CHUNK_LENGTH)  # Whisper's window: the model never hears audio past it
MAX_BATCH = 8  # requests decoded together at most
BATCH_WAIT_MS = 10.0  # how long the first request of a batch waits for others to join it

EXTRAS_MESSAGE = "serve needs the optional extras: pip install -r requirements-optional.txt"

log = logging.getLogger(__name__)


class MissingExtrasError(ImportError):
    """fastapi, uvicorn or python-multipart is not installed; the message says how to get them."""


class RequestError(Exception):
    """A request the server refuses: answered with `status_code` and `{"detail": detail}`."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


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


def decode_upload(data: bytes, filename: str, max_duration_s: float) -> np.ndarray:
    """An uploaded file's audio as `load_audio` reads a file: mono, float32, 16 kHz (soxr HQ).

    The duration is read from the header first, so a small compressed file that would expand
    to hours of samples is refused before it is decoded. Raises `RequestError` (400, 415, 422).

    Returns
    -------
    np.ndarray, shape = (n_samples,), float32 in [-1, 1]
    """
    if not data:
        raise RequestError(400, f"{filename}: the upload is empty (0 bytes); send an audio file.")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            duration_s = f.frames / f.samplerate
            if duration_s > max_duration_s:
                raise RequestError(
                    422,
                    f"{filename}: the audio lasts {duration_s:.1f} s, longer than this server's "
                    f"limit of {max_duration_s:g} s; cut it into shorter pieces.",
                )
            frames = f.read(dtype="float32", always_2d=True)
            file_rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError) as e:
        # libsndfile's own words: str(e) would name the in-memory buffer, not the file.
        reason = getattr(e, "error_string", str(e))
        raise RequestError(
            415,
            f"{filename}: cannot decode audio ({reason}). Send a format libsndfile reads (wav, "
            "flac, ogg, mp3); convert others with ffmpeg.",
        ) from e
    if frames.shape[0] == 0:
        raise RequestError(400, f"{filename}: the file holds no audio samples.")
    return to_mono(frames, file_rate)


async def read_upload(request: "Request", max_bytes: int) -> tuple[str, bytes]:
    """`(filename, bytes)` of the multipart field `file`, the body read in chunks and refused
    (413) as soon as it passes `max_bytes`. Raises `RequestError` (400, 413)."""
    from starlette.formparsers import MultiPartException, MultiPartParser
    from starlette.requests import ClientDisconnect

    too_large = RequestError(
        413,
        f"the upload is larger than this server's limit of {max_bytes / 2**20:g} MiB "
        f"({max_bytes} bytes); send a shorter or compressed (flac, ogg) file.",
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

    async def limited() -> AsyncIterator[bytes]:
        n_bytes = 0
        async for chunk in request.stream():
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
        return upload.filename or "the upload", await upload.read()
    finally:
        await form.close()


@dataclass
class _Job:
    waveform: np.ndarray  # 16-kHz mono float32
    answer: asyncio.Future  # set to (text, kana, batch_size) or a RequestError


class Batcher:
    """One worker task that decodes queued waveforms in batches on one dedicated thread."""

    def __init__(self, transcriber: "Transcriber", max_batch: int, batch_wait_s: float) -> None:
        self.transcriber = transcriber
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.decoding = 0  # requests in the batch being decoded now

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

    async def submit(self, waveform: np.ndarray) -> tuple[str, str | None, int]:
        """`(text, kana, batch_size)` once the batch holding `waveform` is decoded.

        waveform : np.ndarray, shape = (n_samples,), 16-kHz mono float32
        """
        job = _Job(waveform, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)
        return await job.answer

    async def _collect(self) -> list[_Job]:
        batch = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.batch_wait_s
        while len(batch) < self.max_batch:
            if not self.queue.empty():  # those that queued during the last decode join at once
                batch.append(self.queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:  # not asyncio.timeout_at: that needs Python 3.11
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:  # = TimeoutError from 3.11 on; its own class before
                break
        # A request whose client went away (handler cancelled) is not decoded.
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


def create_app(
    transcriber: "Transcriber",
    max_upload_mb: float = MAX_UPLOAD_MB,
    max_duration_s: float = MAX_DURATION_S,
    max_batch: int = MAX_BATCH,
    batch_wait_ms: float = BATCH_WAIT_MS,
    model_name: str | None = None,
) -> "FastAPI":
    """The ASGI app around a loaded `transcriber` (see the module docstring for the API).

    The batching worker starts with the app's lifespan, so the app serves under uvicorn or
    any ASGI server that runs lifespan events. `model_name` is what `/health` reports.
    """
    require_extras()
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    if max_upload_mb <= 0 or max_batch < 1 or batch_wait_ms < 0:
        raise ValueError("max_upload_mb and max_batch must be positive, batch_wait_ms >= 0")
    if not 0 < max_duration_s <= MAX_DURATION_S:
        raise ValueError(
            f"max_duration_s must be in (0, {MAX_DURATION_S:g}]: Whisper hears only its first "
            f"{MAX_DURATION_S:g} s; use whisper.transcribe on the exported .pt for long audio."
        )
    max_bytes = int(max_upload_mb * 2**20)
    batcher = Batcher(transcriber, max_batch, batch_wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="whisper-ft", lifespan=lifespan)

    @app.exception_handler(RequestError)
    async def refuse(request: Request, e: RequestError) -> JSONResponse:
        return JSONResponse({"detail": e.detail}, status_code=e.status_code)

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "model": model_name,
            "device": str(transcriber.device),
            "language": transcriber.language,
            "queued": batcher.queue.qsize(),
            "decoding": batcher.decoding,
            "max_batch": max_batch,
            "max_upload_mb": max_upload_mb,
            "max_duration_s": max_duration_s,
        }

    @app.post("/transcribe")
    async def transcribe(request: Request) -> dict:
        received = time.perf_counter()
        filename, data = await read_upload(request, max_bytes)
        # soundfile and soxr off the event loop: other requests keep being received meanwhile.
        waveform = await asyncio.to_thread(decode_upload, data, filename, max_duration_s)
        text, kana, batch_size = await batcher.submit(waveform)
        return {
            "text": text,
            "kana": kana,
            "duration_s": round(len(waveform) / SAMPLE_RATE, 3),
            "elapsed_s": round(time.perf_counter() - received, 3),
            "batch_size": batch_size,
        }

    return app


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
) -> None:
    """Load `model` once, then serve it with uvicorn until SIGINT/SIGTERM (requests in flight
    are answered first). Raises `MissingExtrasError` before loading anything without the
    optional extras."""
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
    )
    print(
        f"serve: {model} on {transcriber.device} (language {transcriber.language}); "
        f"POST http://{host}:{port}/transcribe, GET /health",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port)


def _duration_s(value: str) -> float:
    seconds = positive_float(value)
    if seconds > MAX_DURATION_S:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_DURATION_S:g} s (Whisper's window), got {value}"
        )
    return seconds


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve` to an argparse subparsers object; it sets `func`, a callable(args) → exit
    code (0 after a clean shutdown)."""
    p = subparsers.add_parser(
        "serve",
        help="HTTP server: POST /transcribe (multipart field `file`) → JSON text and kana",
        description="Load a model once and answer POST /transcribe (multipart/form-data, audio "
        "in the field `file`) with {text, kana, duration_s, elapsed_s, batch_size}, GET /health "
        "with the model and queue. Requests that arrive together are decoded as one batch. "
        f"Needs the optional extras ({EXTRAS_MESSAGE.split(': ')[1]}).",
    )
    p.add_argument("--model", required=True, help="Whisper name, .pt, .ckpt or random:<size>")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--language", help="language token (default: the checkpoint's, else ja)")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument(
        "--max-upload-mb",
        type=positive_float,
        default=MAX_UPLOAD_MB,
        help="larger request bodies get 413 (MiB)",
    )
    p.add_argument(
        "--max-duration-s",
        type=_duration_s,
        default=MAX_DURATION_S,
        help=f"longer audio gets 422 (seconds, at most {MAX_DURATION_S:g})",
    )
    p.add_argument(
        "--max-batch", type=positive_int, default=MAX_BATCH, help="requests decoded together"
    )
    p.add_argument(
        "--batch-wait-ms",
        type=non_negative_float,
        default=BATCH_WAIT_MS,
        help="how long a request waits for others to share its batch",
    )
    p.set_defaults(func=_serve_from_args)


def _serve_from_args(args: argparse.Namespace) -> int:
    serve(
        args.model,
        host=args.host,
        port=args.port,
        language=args.language,
        device=args.device,
        max_upload_mb=args.max_upload_mb,
        max_duration_s=args.max_duration_s,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
    )
    return 0
