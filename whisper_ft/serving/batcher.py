"""The server's decode pool: `Batcher`, one worker task that gathers the decoded uploads
that arrive together into one batch and decodes it on one dedicated thread (the
`Transcriber` is not thread-safe), so the event loop keeps receiving uploads and answering
`/health` meanwhile.

The worker takes the first waveform queued, then whatever arrives in the next `batch_wait_s`
(up to `max_batch`); requests that queue up during a decode form the next batch. A request
whose client left (its future cancelled) is never decoded; a failed decode answers every
request of its batch with a 500 and the worker lives on.
"""

import asyncio
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from whisper_ft.serving.uploads import RequestError

if TYPE_CHECKING:
    from whisper_ft.inference.transcriber import Transcriber

MAX_BATCH = 8  # requests decoded together at most
BATCH_WAIT_MS = 10.0  # how long the first request of a batch waits for others to join it

log = logging.getLogger(__name__)


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
