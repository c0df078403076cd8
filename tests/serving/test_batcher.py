"""The decode pool: requests that arrive together share a decode; one that left is not decoded;
a failed decode answers its batch with a 500 and the worker lives on."""

import asyncio

import numpy as np
import pytest

from whisper_ft.serving.batcher import Batcher
from whisper_ft.serving.uploads import RequestError


class CountingTranscriber:
    """Says `n<samples>` per waveform and records the batches it was given; `fail_next`
    raises inside the decode."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.fail_next = False

    def __call__(self, waveforms: list[np.ndarray]) -> list[str]:
        self.batches.append([len(w) for w in waveforms])
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        return [f"n{len(w)}" for w in waveforms]

    def kana(self, text: str) -> str:
        return text.upper()


def submit(batcher: Batcher, n_samples: int) -> asyncio.Future:
    batcher.waiting += 1  # as the app's handler counts a request in before its upload decodes
    return batcher.submit(np.zeros(n_samples, np.float32))


async def with_batcher(transcriber, max_batch: int, work) -> tuple:
    batcher = Batcher(transcriber, max_batch, batch_wait_s=0.2)
    batcher.start()
    try:
        return await work(batcher), batcher
    finally:
        await batcher.stop()


def test_requests_that_wait_together_share_a_batch_of_at_most_max_batch():
    transcriber = CountingTranscriber()

    async def four(batcher):
        return await asyncio.gather(*(submit(batcher, n) for n in (1, 2, 3, 4)))

    answers, batcher = asyncio.run(with_batcher(transcriber, 3, four))
    assert transcriber.batches == [[1, 2, 3], [4]]
    assert answers == [("n1", "N1", 3), ("n2", "N2", 3), ("n3", "N3", 3), ("n4", "N4", 1)]
    assert (batcher.waiting, batcher.decoding) == (0, 0)


def test_a_request_whose_client_left_is_not_decoded():
    transcriber = CountingTranscriber()

    async def one_leaves(batcher):
        stays, leaves = submit(batcher, 1), submit(batcher, 2)
        leaves.cancel()  # its client disconnected before a batch took it
        return await stays

    answer, batcher = asyncio.run(with_batcher(transcriber, 8, one_leaves))
    assert answer == ("n1", "N1", 1) and transcriber.batches == [[1]]
    assert batcher.waiting == 0


def test_a_failed_decode_answers_its_batch_with_500_and_the_next_batch_decodes():
    transcriber = CountingTranscriber()
    transcriber.fail_next = True

    async def fail_then_serve(batcher):
        failed = await asyncio.gather(
            submit(batcher, 1), submit(batcher, 2), return_exceptions=True
        )
        return failed, await submit(batcher, 3)

    (failed, answer), _ = asyncio.run(with_batcher(transcriber, 8, fail_then_serve))
    assert all(isinstance(e, RequestError) and e.status_code == 500 for e in failed)
    assert "decoding failed (RuntimeError: boom); the server keeps running" in failed[0].detail
    assert answer == ("n3", "N3", 1) and transcriber.batches == [[1, 2], [3]]


@pytest.mark.parametrize(("waiting", "decoding", "expected"), [(0, 0, 1), (5, 0, 6), (5, 1, 8)])
def test_retry_after_counts_the_batches_ahead(waiting, decoding, expected):
    batcher = Batcher(CountingTranscriber(), max_batch=2, batch_wait_s=0.0)
    batcher.waiting, batcher.decoding, batcher.last_batch_s = waiting, decoding, 2.0
    assert batcher.retry_after_s() == expected  # ceil(waiting / 2) + (decoding > 0) batches × 2 s
