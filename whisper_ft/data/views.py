"""Views of a training utterance for the encoder-feature cache: the same speech padded or
altered in one fixed way, each cached as its own encoder output (`feature_cache.py`), one of
them drawn for each training item per (seed, epoch, index).

    views = parse_views(["audio", "mel", "noise:10", "speed:1.1"])
    wave = view_waveform(audio, views[2], "utt-001")   # pink noise at 10 dB SNR, seeded by id
    mel = view_mel_batch(padded, lengths, views[1], 80)  # as whisper.transcribe pads it

| view            | what the encoder sees                                                   |
| --------------- | ----------------------------------------------------------------------- |
| `audio`         | the waveform padded with silence to 30 s, then log-mel (`window_mel`):  |
|                 | what training, `whisper.decode` and transformers see                    |
| `mel`           | the log-mel of the waveform + 30 s of zeros cut to its content frames,  |
|                 | padded with zeros in the normalised log-mel: what `whisper.transcribe`  |
|                 | and faster-whisper's `transcribe` feed the encoder for a clip < 30 s    |
| `noise:<dB>`    | pink noise added at that SNR (over the utterance), then as `audio`;     |
|                 | the noise is seeded by the utterance id and the view, so it is fixed    |
| `speed:<f>`     | resampled to play f times faster (duration / f), then as `audio`        |

A model fine-tuned on `audio` windows only gives other text in `whisper.transcribe`'s default
call than in `whisper.decode` on many clips (the padding differs); training the decoder on
both paddings is what `["audio", "mel"]` is for.
"""

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from whisper.audio import N_FRAMES, N_SAMPLES, SAMPLE_RATE

from whisper_ft.audio import log_mel_batch, pink, transcribe_window_mel
from whisper_ft.data.augment import add_noise, speed_perturb

VIEW_KINDS = ("audio", "mel", "noise", "speed")
ACCEPTED = "use audio, mel, noise:<snr dB> or speed:<factor>"
MAX_SECONDS = N_SAMPLES / SAMPLE_RATE  # a view's waveform must fit Whisper's window


@dataclass(frozen=True)
class View:
    """One view (the module's table): its kind and, for noise and speed, its value."""

    kind: str  # one of VIEW_KINDS
    value: float | None = None  # SNR in dB (noise), play-back factor (speed); None otherwise

    @property
    def name(self) -> str:
        """The canonical name, part of a cache key: `audio`, `mel`, `noise:10`, `speed:0.9`."""
        return self.kind if self.value is None else f"{self.kind}:{self.value:g}"

    @property
    def slug(self) -> str:
        """The name as a folder name's part: `noise10`, `speed0.9`."""
        return self.name.replace(":", "")

    @property
    def speed(self) -> float:
        """How many times faster the view plays than the utterance (durations divide by it)."""
        return self.value if self.kind == "speed" else 1.0


AUDIO = View("audio")


def parse_view(name: str) -> View:
    """A view from its name; a ValueError says what is accepted."""
    kind, sep, value = str(name).strip().partition(":")
    if kind in ("audio", "mel") and not sep:
        return View(kind)
    if kind in ("noise", "speed") and sep:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if kind == "noise" and math.isfinite(number):
            return View(kind, number)
        if kind == "speed" and math.isfinite(number) and number > 0:
            return View(kind, number)
        what = "an SNR in dB" if kind == "noise" else "a factor > 0 (1.1 plays 1.1x faster)"
        raise ValueError(f"cache_views {name!r}: {kind}: takes {what}; {ACCEPTED}")
    raise ValueError(f"cache_views {name!r}: {ACCEPTED}")


def parse_views(names: Sequence[str]) -> list[View]:
    """Views from their names, in order; at least one, each once."""
    if isinstance(names, str):
        names = [names]
    views = [parse_view(name) for name in names]
    if not views:
        raise ValueError(f"cache_views is empty: give at least one view ({ACCEPTED})")
    seen = [view.name for view in views]
    if len(set(seen)) != len(seen):
        twice = sorted({name for name in seen if seen.count(name) > 1})
        raise ValueError(f"cache_views names {', '.join(twice)} more than once; give each once")
    return views


def view_seed(utterance_id: str, view: View) -> int:
    """The seed of a view's randomness for one utterance: fixed by its id and the view's name,
    so a cached view does not depend on the dataset's order or the run's seed."""
    digest = hashlib.sha256(f"{utterance_id}\0{view.name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def view_waveform(audio: np.ndarray, view: View, utterance_id: str) -> np.ndarray:
    """The waveform the view's log-mel is computed from (`audio` and `mel`: `audio` itself).
    A speed view longer than 30 s is a ValueError (`check_speed_fits` finds it beforehand).

    audio : np.ndarray, shape = (n,), float32 at 16 kHz → shape = (n,), or (round(n / f),)
        for `speed:f`
    """
    if view.kind == "noise":
        rng = np.random.default_rng(view_seed(utterance_id, view))
        return add_noise(audio, pink(rng.standard_normal(len(audio))), view.value)
    if view.kind == "speed":
        wave = speed_perturb(audio, view.value)
        if len(wave) > N_SAMPLES:
            raise ValueError(
                f"{utterance_id}: the view {view.name} lasts {len(wave) / SAMPLE_RATE:.2f} s, "
                f"longer than Whisper's {MAX_SECONDS:.0f}-s window; use a factor of at least "
                f"{len(audio) / N_SAMPLES:.3f} or leave the utterance out"
            )
        return np.asarray(wave, dtype=np.float32)
    return audio


def view_mel_batch(
    audio: torch.Tensor, lengths: torch.Tensor, view: View, n_mels: int
) -> torch.Tensor:
    """The log-mel the encoder takes for each row of a view's padded waveforms: `mel` pads as
    `whisper.transcribe` does (`audio.transcribe_window_mel` on each row's `lengths` samples),
    every other view as training does (`log_mel_batch` of the zero-padded 30 s).

    audio : torch.Tensor, shape = (B, N_SAMPLES), float32 at 16 kHz, zero-padded
    lengths : torch.Tensor, shape = (B,), int64, real samples per row
    returns : torch.Tensor, shape = (B, n_mels, N_FRAMES), float32, on `audio`'s device
    """
    if not len(audio):
        return torch.zeros((0, n_mels, N_FRAMES), device=audio.device)
    if view.kind != "mel":
        return log_mel_batch(audio, n_mels)
    pairs = zip(audio, lengths.tolist(), strict=True)
    return torch.stack([transcribe_window_mel(row[:n], n_mels) for row, n in pairs])


def check_speed_fits(
    views: Sequence[View], durations_s: Sequence[float], ids: Sequence[str], where: str
) -> None:
    """A ValueError, before anything is computed, when a slowing `speed` view would make an
    utterance (manifest duration) longer than 30 s; it names the longest and the factor that
    fits."""
    longest = int(np.argmax(durations_s)) if len(durations_s) else None
    for view in views:
        if longest is None or view.kind != "speed":
            continue
        too_long = sum(d / view.value > MAX_SECONDS for d in durations_s)
        if too_long:
            seconds = durations_s[longest]
            raise ValueError(
                f"{where}: cache_views {view.name!r} makes {too_long} utterance(s) longer than "
                f"Whisper's {MAX_SECONDS:.0f}-s window (the longest, {ids[longest]}, "
                f"{seconds:.2f} s → {seconds / view.value:.2f} s); use a factor of at least "
                f"{seconds / MAX_SECONDS:.3f}, or leave utterances longer than "
                f"{MAX_SECONDS * view.value:.1f} s out of the manifest"
            )
