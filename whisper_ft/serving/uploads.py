"""Uploads to the server, treated as hostile: the request body received within size and time
limits (`received_upload`), then the audio decoded within channel, rate and duration limits
(`decode_upload`). Owns `RequestError`, how the server refuses a request (4xx/5xx).

The header is checked before any sample is decoded, and the samples are read block by block
(`DECODE_BLOCK_FRAMES`), each block mixed to mono and resampled to 16 kHz as a stream, so a
decode's memory is its 16-kHz output (at most `max_duration_s`) plus one block, whatever the
file's rate and channels. starlette (the optional extras) is imported only inside
`received_upload`.
"""

import asyncio
import io
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import soundfile as sf
import soxr
from whisper.audio import CHUNK_LENGTH, SAMPLE_RATE

if TYPE_CHECKING:
    from fastapi import Request

MAX_UPLOAD_MB = 20.0  # request body limit (MiB): 30 s of 48-kHz stereo 24-bit WAV is 8.2 MiB
MAX_DURATION_S = float(CHUNK_LENGTH)  # Whisper's window: the model never hears audio past it
MAX_CHANNELS = 8  # 7.1 surround; a file with more is not a recording to transcribe
MAX_SAMPLE_RATE = 192_000  # Hz, the highest rate common audio interfaces record at
MIN_SAMPLE_RATE = 1_000  # Hz; below it there is no speech left to hear
DECODE_BLOCK_FRAMES = 65_536  # frames read at once: 2 MiB of float32 at 8 channels


class RequestError(Exception):
    """A request the server refuses: answered with `status_code`, `{"detail": detail}` and
    `headers`."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


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
