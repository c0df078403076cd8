"""Uploads treated as hostile: refused from the header, decoded block by block."""

import io

import numpy as np
import pytest
import soundfile as sf

from whisper_ft.audio import to_mono
from whisper_ft.serving.uploads import RequestError, check_header, decode_upload


def audio_bytes(wave: np.ndarray, rate: int, format: str = "WAV", subtype="PCM_16") -> bytes:
    """`wave` (frames, channels) written by libsndfile in `format`/`subtype`."""
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=format, subtype=subtype)
    return buffer.getvalue()


class CountingFile(io.BytesIO):
    """A BytesIO that counts the bytes read from it."""

    n_read = 0

    def read(self, size=-1):
        data = super().read(size)
        self.n_read += len(data)
        return data


def test_a_decode_bomb_is_refused_before_its_samples_are_read():
    """The issue's bomb: 30 s of 8-channel FLAC at 655,350 Hz, 170 kB that decode to 629 MB
    of float32. Only its header is read."""
    upload = CountingFile(audio_bytes(np.zeros((655350 * 30, 8), np.int16), 655350, "FLAC"))
    with pytest.raises(RequestError, match="655350 Hz") as refused:
        decode_upload(upload, "bomb.flac")
    assert refused.value.status_code == 415
    assert upload.n_read < 16384, upload.n_read  # the header, not 170 kB of frames


def test_decoding_memory_is_bounded_by_the_output_not_the_file():
    """8 channels at 192 kHz for 4 s (the most the limits let through, for 4 s) are 24.6 MB
    as float32; decoded block by block the peak stays a fraction of that, and the samples are
    exactly `load_audio`'s (mono mix, then soxr HQ)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal((192000 * 4, 8))).astype(np.float32)
    upload = audio_bytes(wave, 192000)
    tracemalloc.start()
    try:
        waveform = decode_upload(io.BytesIO(upload), "wide.wav", max_duration_s=30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8e6, f"{peak / 1e6:.1f} MB"
    whole = sf.read(io.BytesIO(upload), dtype="float32", always_2d=True)[0]
    np.testing.assert_array_equal(waveform, to_mono(whole, 192000))
    assert waveform.shape == (16000 * 4,)


@pytest.mark.parametrize(
    ("header", "status", "words"),
    [
        ((9, 16000, 16000), 415, "9 channels, more than this server's limit of 8"),
        ((1, 999, 999), 415, "999 Hz, outside this server's limits of 1000-192000 Hz"),
        ((1, 16000, 16000 * 2 + 1), 422, "lasts 2.0 s, longer than this server's limit of 2 s"),
    ],
    ids=["channels", "rate", "duration"],
)
def test_the_header_alone_is_refused_with_its_status(header, status, words):
    channels, rate, frames = header
    check_header(1, 16000, 16000 * 2, "ok.wav", max_duration_s=2)  # at the limits: accepted
    with pytest.raises(RequestError) as refused:
        check_header(channels, rate, frames, "x.wav", max_duration_s=2)
    assert refused.value.status_code == status
    assert refused.value.detail.startswith("x.wav: ") and words in refused.value.detail


def test_empty_and_sample_less_uploads_are_400():
    with pytest.raises(RequestError, match="empty \\(0 bytes\\)") as refused:
        decode_upload(io.BytesIO(b""), "empty.wav")
    assert refused.value.status_code == 400
    with pytest.raises(RequestError, match="holds no audio samples") as refused:
        decode_upload(io.BytesIO(audio_bytes(np.zeros((0, 1)), 16000)), "silent.wav")
    assert refused.value.status_code == 400
