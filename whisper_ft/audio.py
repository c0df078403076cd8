"""Audio in: any file soundfile reads, as mono float32 at 16 kHz; log-mel on any device."""

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
import whisper
from whisper.audio import N_FRAMES, N_SAMPLES, SAMPLE_RATE

# Audio files looked for in folders (`prepare folder`, `transcribe DIR`): formats libsndfile
# reads, so `load_audio` can too.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au")


class AudioError(ValueError):
    """An audio file that cannot be read; the message names the file and what to do."""


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file, mix it to mono and resample it (soxr) to `sample_rate`.

    Returns
    -------
    np.ndarray, shape = (n_samples,), float32 in [-1, 1]
    """
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(
            f"{path}: cannot read audio ({e}). Check that the file exists and is a format "
            "libsndfile reads (wav, flac, ogg, mp3); convert others with ffmpeg."
        ) from e
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no audio samples; remove it from the manifest.")
    return to_mono(data, file_rate, sample_rate)


def to_mono(frames: np.ndarray, file_rate: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decoded samples mixed to mono and resampled (soxr, HQ) to `sample_rate`, as
    `load_audio` returns them; for audio decoded elsewhere (an upload held in memory).

    frames : np.ndarray, shape = (n_frames, n_channels), float32

    Returns
    -------
    np.ndarray, shape = (n_samples,), float32 in [-1, 1]
    """
    mono = frames.mean(axis=1)
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def audio_duration_s(path: str | Path) -> float:
    """Duration of an audio file in seconds, read from its header (no decoding)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{path}: cannot read audio header ({e}).") from e
    return info.frames / info.samplerate


def log_mel_batch(audio: torch.Tensor, n_mels: int) -> torch.Tensor:
    """Whisper's log-mel spectrogram of each row, computed on `audio`'s device.

    Each row goes through `whisper.log_mel_spectrogram` on its own: that function clamps the
    dynamic range to 8 (log10 units) below the maximum of the whole tensor it is given, so one
    call on a batch would make every item's features depend on the loudest item in the batch.

    Parameters
    ----------
    audio : torch.Tensor, shape = (batch, n_samples), float32 at 16 kHz

    Returns
    -------
    torch.Tensor, shape = (batch, n_mels, n_samples // HOP_LENGTH)
    """
    # Always in float32: under mixed precision, autocast would run the mel-filter matmul in
    # bf16/fp16 and round the features before the encoder ever sees them.
    with torch.autocast(audio.device.type, enabled=False):
        return torch.stack([whisper.log_mel_spectrogram(row, n_mels) for row in audio.float()])


def window_mel(
    waveforms: list[np.ndarray], n_mels: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The log-mel of 16-kHz waveforms each padded with silence or trimmed to one 30-s window
    (as training, `whisper.decode` and transformers see them), computed on `device`.

    returns : torch.Tensor, shape = (len(waveforms), n_mels, 3000)
    """
    audio = torch.stack([torch.from_numpy(whisper.pad_or_trim(w, N_SAMPLES)) for w in waveforms])
    return log_mel_batch(audio.to(device), n_mels)


def pink(noise: np.ndarray) -> np.ndarray:
    """White `noise` (one row of 16-kHz samples) shaped to a 1/f power spectrum: the hum of a
    fan or a room. Its level is left to the caller."""
    spectrum = np.fft.rfft(noise)
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(len(noise), 1 / SAMPLE_RATE), 1.0))
    return np.fft.irfft(spectrum, len(noise))


def transcribe_window_mel(audio: torch.Tensor, n_mels: int) -> torch.Tensor:
    """The log-mel `whisper.transcribe` feeds the encoder for the first window of `audio`
    (all of a clip shorter than 30 s): the log-mel of `audio` followed by 30 s of zeros, cut
    to its content frames (len(audio) // HOP_LENGTH), padded with zeros in the normalised
    log-mel (`pad_or_trim` on the mel). `window_mel` pads the waveform instead, whose silence
    is the clamped floor of the log-mel, not zeros. Computed on `audio`'s device, in float32.

    audio : torch.Tensor, shape = (n_samples,), float32 at 16 kHz
    returns : torch.Tensor, shape = (n_mels, N_FRAMES)
    """
    with torch.autocast(audio.device.type, enabled=False):
        mel = whisper.log_mel_spectrogram(audio.float(), n_mels, padding=N_SAMPLES)
    content_frames = mel.shape[-1] - N_FRAMES
    return whisper.pad_or_trim(mel[:, : min(N_FRAMES, content_frames)], N_FRAMES)
