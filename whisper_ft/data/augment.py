"""Training-time augmentation: speed, volume and noise on each item's waveform (in the Dataset),
SpecAugment on the batch's log-mel (in the module). Everything is off unless asked for.

Waveform: `augment_waveform(audio, WaveformAugment(...), WorkerRng()(), NoiseBank(dir))`
applies, each with its own probability, speed perturbation → additive noise → gain, then clips
to [-1, 1]. SpecAugment: `spec_augment(mel, SpecAugment(...), valid_frame_counts(n_samples))`
masks mel bands and frames of each row it picks.
"""

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr
import torch
from whisper.audio import HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE

from whisper_ft.audio import load_audio

NOISE_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")  # noise files NoiseBank lists (any case)


class AugmentError(ValueError):
    """An augmentation setting that cannot work; the message names it and what to give."""


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise AugmentError(f"augmentation setting {name}={value}: a probability lies in [0, 1].")


def _check_range(name: str, value: tuple[float, float]) -> None:
    if len(value) != 2 or value[0] > value[1]:
        raise AugmentError(
            f"augmentation setting {name}={value}: give [low, high] with low <= high."
        )


@dataclass(frozen=True)
class WaveformAugment:
    """Waveform augmentation of training items; every kind is off (probability 0) by default.

    Applied in this order, each drawn independently: speed, noise, volume; then the result is
    clipped to [-1, 1]. Noise before gain keeps the drawn SNR exact.

    Args:
        speed_prob: Chance an item is speed-perturbed (resampled: tempo and pitch move).
        speeds: Factors drawn uniformly; 1.1 plays 1.1× faster.
        volume_prob: Chance an item's gain is changed.
        gain_db: Gain range in dB, drawn uniformly.
        noise_prob: Chance noise from noise_dir is added.
        noise_dir: Folder searched recursively for wav/flac/ogg/mp3 noise files.
        snr_db: Speech-to-noise power ratio range in dB.
    """

    speed_prob: float = 0.0
    speeds: tuple[float, ...] = (0.9, 1.0, 1.1)
    volume_prob: float = 0.0
    gain_db: tuple[float, float] = (-6.0, 6.0)
    noise_prob: float = 0.0
    noise_dir: str | None = None
    snr_db: tuple[float, float] = (10.0, 30.0)

    def __post_init__(self) -> None:
        for name in ("speed_prob", "volume_prob", "noise_prob"):
            _check_prob(name, getattr(self, name))
        _check_range("gain_db", self.gain_db)
        _check_range("snr_db", self.snr_db)
        if not self.speeds or min(self.speeds) <= 0:
            raise AugmentError(f"augmentation setting speeds={self.speeds}: give factors > 0.")
        if self.noise_prob > 0 and not self.noise_dir:
            raise AugmentError(
                f"augmentation setting noise_prob={self.noise_prob} needs noise_dir, a folder of "
                "noise recordings (wav, flac, ogg, mp3), e.g. MUSAN's noise/."
            )

    @property
    def enabled(self) -> bool:
        return max(self.speed_prob, self.volume_prob, self.noise_prob) > 0


class NoiseBank:
    """The noise files under one folder, listed once (recursively, sorted); a file is read with
    `load_audio` (16 kHz mono) when first drawn, and the `max_cached` most recent are kept.

    Picklable for DataLoader workers: a worker receives the file list and an empty cache.
    """

    def __init__(self, noise_dir: str | Path, max_cached: int = 16) -> None:
        self.noise_dir = Path(noise_dir)
        if not self.noise_dir.is_dir():
            raise AugmentError(
                f"{self.noise_dir}: noise folder not found; set augment.noise_dir to a folder of "
                "noise recordings."
            )
        self.files = sorted(
            p for p in self.noise_dir.rglob("*") if p.suffix.lower() in NOISE_SUFFIXES
        )
        if not self.files:
            raise AugmentError(
                f"{self.noise_dir}: no noise files ({', '.join(NOISE_SUFFIXES)}) in this folder "
                "or below; point augment.noise_dir at a folder of noise recordings."
            )
        self.max_cached = max_cached
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.files)

    def __getstate__(self) -> dict:
        # Workers would otherwise each receive a copy of the parent's decoded audio.
        return {**self.__dict__, "_cache": OrderedDict()}

    def load(self, index: int) -> np.ndarray:
        """Noise file `index` as (n_samples,) float32 at 16 kHz."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        audio = load_audio(self.files[index])
        self._cache[index] = audio
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return audio

    def segment(self, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        """`n_samples` of a random file from a random offset; a file shorter than that is
        repeated end to start (tiled).

        Returns
        -------
        np.ndarray, shape = (n_samples,), float32
        """
        noise = self.load(int(rng.integers(len(self.files))))
        room = len(noise) - n_samples
        start = int(rng.integers(room + 1)) if room >= 0 else int(rng.integers(len(noise)))
        return np.take(noise, np.arange(start, start + n_samples), mode="wrap")


def speed_perturb(audio: np.ndarray, speed: float) -> np.ndarray:
    """Play `audio` `speed`× faster, tempo and pitch together (sox `speed`): resampled from
    SAMPLE_RATE·speed to SAMPLE_RATE with soxr, so the length becomes round(n / speed).

    audio : np.ndarray, shape = (n_samples,), float32 at 16 kHz → shape = (round(n / speed),)
    """
    if speed == 1.0:
        return audio
    return soxr.resample(audio, SAMPLE_RATE * speed, SAMPLE_RATE, quality="HQ")


def gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """`audio` scaled by `gain_db` decibels (amplitude × 10^(gain_db / 20)), not clipped.

    audio : np.ndarray, shape = (n_samples,) → same shape
    """
    return audio * np.float32(10.0 ** (gain_db / 20.0))


def add_noise(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`speech` plus `noise` scaled so that mean speech power / mean noise power (over the whole
    utterance) is `snr_db` decibels. Silent speech or silent noise leaves `speech` as it is:
    no finite scale gives the ratio, and dividing by zero power would give NaN.

    speech, noise : np.ndarray, shape = (n_samples,) → shape = (n_samples,), float32
    """
    speech_power = float(np.mean(np.square(speech, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    if speech_power == 0.0 or noise_power == 0.0:
        return speech
    scale = math.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (speech + np.float32(scale) * noise).astype(np.float32)


def augment_waveform(
    audio: np.ndarray,
    config: WaveformAugment,
    rng: np.random.Generator,
    noise: NoiseBank | None = None,
) -> np.ndarray:
    """One training item's waveform, augmented as `config` says (see WaveformAugment).

    A speed that would push the item past Whisper's 30-s window is not drawn (the collator
    would cut the end of the speech while the transcript keeps it); an item that no speed
    keeps within 30 s keeps its speed. `audio` itself is returned when nothing was applied.

    audio : np.ndarray, shape = (n_samples,), float32 at 16 kHz

    Returns
    -------
    np.ndarray, shape = (n_samples',), float32 in [-1, 1]; n_samples' differs after a speed change
    """
    if not config.enabled:
        return audio
    if config.noise_prob > 0 and noise is None:
        raise ValueError(
            f"noise_prob={config.noise_prob} needs noise=NoiseBank({config.noise_dir!r})."
        )
    out = audio
    if config.speed_prob > 0 and rng.random() < config.speed_prob:
        fitting = [s for s in config.speeds if round(len(audio) / s) <= N_SAMPLES]
        if fitting:
            out = speed_perturb(out, float(fitting[rng.integers(len(fitting))]))
    if config.noise_prob > 0 and rng.random() < config.noise_prob:
        out = add_noise(out, noise.segment(len(out), rng), rng.uniform(*config.snr_db))
    if config.volume_prob > 0 and rng.random() < config.volume_prob:
        out = gain(out, rng.uniform(*config.gain_db))
    if out is audio:
        return audio
    return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)


class WorkerRng:
    """The generator for waveform augmentation in whichever process calls it: a Dataset holds
    one and calls it in `__getitem__` (`augment_waveform(audio, config, self.rng(), ...)`).

    Seeded from `torch.initial_seed()`. A DataLoader seeds torch in each worker with its own
    seed (base seed + worker id; the base is drawn from the parent's generator for every epoch
    unless workers are persistent), so workers draw different augmentations and a run seeded
    with `seed_everything` draws the same ones again. A new torch seed makes a new generator;
    otherwise the same one goes on, so epochs differ also in persistent workers and without
    workers.
    """

    def __init__(self) -> None:
        self._seed: int | None = None  # the torch seed the generator was made from
        self._rng: np.random.Generator | None = None

    def __call__(self) -> np.random.Generator:
        seed = torch.initial_seed()
        if self._rng is None or seed != self._seed:
            self._seed, self._rng = seed, np.random.default_rng(seed)
        return self._rng


@dataclass(frozen=True)
class SpecAugment:
    """SpecAugment (Park et al., 2019) on Whisper's log-mel, without time warping. The default
    sizes are the paper's SS policy; `prob` = 0 (the default) turns it off.

    Widths are drawn uniformly from 0..F (0..T), starts uniformly where the mask fits; masks
    may overlap. Masked cells take the row's mean log-mel over its valid frames.

    Args:
        prob: Chance each utterance of a training batch is masked.
        n_freq_masks: Frequency masks per masked utterance (mF).
        freq_mask_bins: Widest frequency mask in mel bins (F).
        n_time_masks: Time masks per masked utterance (mT).
        time_mask_frames: Widest time mask in 10-ms frames (T).
        max_time_mask_fraction: A time mask spans at most this share of valid frames (p).
    """

    prob: float = 0.0
    n_freq_masks: int = 2
    freq_mask_bins: int = 27
    n_time_masks: int = 2
    time_mask_frames: int = 70
    max_time_mask_fraction: float = 0.2

    def __post_init__(self) -> None:
        _check_prob("prob", self.prob)
        _check_prob("max_time_mask_fraction", self.max_time_mask_fraction)
        for name in ("n_freq_masks", "freq_mask_bins", "n_time_masks", "time_mask_frames"):
            if getattr(self, name) < 0:
                raise AugmentError(f"SpecAugment setting {name}={getattr(self, name)}: give >= 0.")

    @property
    def enabled(self) -> bool:
        return self.prob > 0


def valid_frame_counts(n_samples: torch.Tensor) -> torch.Tensor:
    """Log-mel frames holding audio, for waveforms of `n_samples` samples before padding:
    ceil(n_samples / HOP_LENGTH), at most N_FRAMES.

    n_samples : torch.Tensor, shape = (batch,), int → shape = (batch,), int64
    """
    frames = torch.div(n_samples.long() + HOP_LENGTH - 1, HOP_LENGTH, rounding_mode="floor")
    return frames.clamp(max=N_FRAMES)


def mask_spans(
    n_masks: int,
    max_width: torch.Tensor,
    length: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n_masks` random spans [start, start + width) per row: width uniform over
    0..max_width, start uniform over 0..length - width. Requires max_width <= length.

    Numbers are drawn on `generator`'s device (or the default generator of `length`'s device)
    and moved to `length`'s device, so a CPU generator reproduces masks on any device.

    max_width, length : torch.Tensor, shape = (batch,), int64

    Returns
    -------
    starts, widths : torch.Tensor, shape = (batch, n_masks), int64 on `length`'s device
    """
    device = length.device
    draw_on = generator.device if generator is not None else device
    u = torch.rand((2, len(length), n_masks), generator=generator, device=draw_on).to(device)
    max_width, length = max_width[:, None], length[:, None]
    widths = torch.minimum((u[0] * (max_width + 1)).long(), max_width)
    room = length - widths
    starts = torch.minimum((u[1] * (room + 1)).long(), room)
    return starts, widths


def spans_to_mask(starts: torch.Tensor, widths: torch.Tensor, length: int) -> torch.Tensor:
    """starts, widths (batch, n_masks) → bool mask (batch, length), True inside any span."""
    positions = torch.arange(length, device=starts.device)
    inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])
    return inside.any(dim=1)


def spec_augment(
    mel: torch.Tensor,
    config: SpecAugment,
    n_valid_frames: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Frequency and time masks on the rows of a log-mel batch that draw < `config.prob`.

    Time masks stay inside each row's first `n_valid_frames` frames: masking Whisper's
    padding would waste the mask. Masked cells get the row's mean over those frames (all
    bins), the paper's choice (it masks zero-mean features with 0). Whisper's log-mel is not
    zero-mean: 0 there is log10 power -4, louder than most of an utterance, and the padding
    floor would look like silence, so neither is neutral.

    mel : torch.Tensor, shape = (batch, n_mels, n_frames), on any device
    n_valid_frames : torch.Tensor, shape = (batch,), int; None: every frame is valid

    Returns
    -------
    torch.Tensor, shape = (batch, n_mels, n_frames): a new tensor; `mel` is unchanged
    """
    batch, n_mels, n_frames = mel.shape
    device = mel.device
    if not config.enabled:
        return mel.clone()
    if n_valid_frames is None:
        valid = torch.full((batch,), n_frames, dtype=torch.long, device=device)
    else:
        valid = n_valid_frames.to(device=device, dtype=torch.long).clamp(0, n_frames)
    draw_on = generator.device if generator is not None else device
    chosen = torch.rand(batch, generator=generator, device=draw_on).to(device) < config.prob

    freq_width = torch.full((batch,), min(config.freq_mask_bins, n_mels), device=device)
    freq_starts, freq_widths = mask_spans(
        config.n_freq_masks, freq_width, torch.full_like(freq_width, n_mels), generator
    )
    time_width = torch.clamp(
        (valid * config.max_time_mask_fraction).long(), max=config.time_mask_frames
    )
    time_starts, time_widths = mask_spans(config.n_time_masks, time_width, valid, generator)

    freq_mask = spans_to_mask(freq_starts, freq_widths, n_mels) & chosen[:, None]
    time_mask = spans_to_mask(time_starts, time_widths, n_frames) & chosen[:, None]
    frame_valid = torch.arange(n_frames, device=device) < valid[:, None]  # (batch, n_frames)
    row_sum = (mel * frame_valid[:, None, :]).sum(dim=(1, 2))
    fill = row_sum / (valid * n_mels).clamp(min=1)
    masked = freq_mask[:, :, None] | time_mask[:, None, :]
    return torch.where(masked, fill[:, None, None].to(mel.dtype), mel)
