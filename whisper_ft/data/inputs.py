"""Input strategies: what a dataset item carries in place of the speech, and how a batch stacks
it. The dataset and the collator take one (lhotse's `dataset/input_strategies.py` is the model);
everything else about an item and a batch (tokens, labels, ids, texts) is the same for all.

    inputs = AudioSamples(augment)                    # live audio: read, resampled, augmented
    dataset = UtteranceDataset(utterances, manifest, tokenizer, inputs=inputs)
    collate = Collator(eot=tokenizer.eot, inputs=inputs)
    # the encoder's output read from the feature cache instead (data/feature_cache.py):
    cached = CachedFeatures(cache, dataset)
    dataset, collate = dataset.with_inputs(cached), collate.with_inputs(cached)

A strategy has two methods:
- `item(dataset, index)` → the item's input fields (`{"audio": …}`, `{"features": …}`), or
  `{"error": reason}` when the input cannot be had (the collator leaves that item out and the
  module counts it, so one file that breaks in a long run does not end it);
- `batch(items)` → the batch's input tensors for the readable items, always with
  `durations_s` (B,) float32, the seconds of speech decoding's budget comes from.
"""

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import whisper
from whisper.audio import N_SAMPLES, SAMPLE_RATE

from whisper_ft.audio import AudioError, load_audio
from whisper_ft.data.augment import NoiseBank, WaveformAugment, WorkerRng, augment_waveform
from whisper_ft.manifest import Utterance


class Utterances(Protocol):
    """What a strategy reads of its dataset (`UtteranceDataset` is one)."""

    utterances: list[Utterance]
    manifest: Path  # relative audio paths start at its folder


class InputStrategy(Protocol):
    """How the speech of an utterance reaches a batch (see the module's docstring)."""

    def item(self, dataset: Utterances, index: int) -> dict: ...

    def batch(self, items: list[dict]) -> dict[str, torch.Tensor]: ...


def read_audio(dataset: Utterances, index: int, what: str = "") -> np.ndarray | str:
    """Utterance `index`'s waveform (16 kHz mono float32), or, when its file cannot be read any
    more, the reason (warned about with the manifest line: `what` of it is skipped, the run
    goes on)."""
    utterance = dataset.utterances[index]
    try:
        return load_audio(utterance.audio_path(dataset.manifest.parent))
    except AudioError as e:
        warnings.warn(
            f"{dataset.manifest}:{utterance.line}: {what}{utterance.id} skipped, the run goes "
            f"on: {e}",
            stacklevel=2,
        )
        return str(e)


@dataclass
class AudioSamples:
    """Live audio: each item's waveform read from its file (16 kHz mono float32), augmented in
    the worker when `augment` is on; batches zero-pad or trim it to `n_samples`.

    | key             | shape          | dtype   | meaning                                   |
    | --------------- | -------------- | ------- | ----------------------------------------- |
    | `audio`         | (B, n_samples) | float32 | 16-kHz waveforms zero-padded/trimmed      |
    | `audio_lengths` | (B,)           | int64   | samples of real audio in each row         |
    | `durations_s`   | (B,)           | float32 | seconds of real audio                     |
    """

    augment: WaveformAugment | None = None  # None or disabled: the audio as read
    n_samples: int = N_SAMPLES  # waveform length the encoder takes (30 s at 16 kHz)
    _noise: NoiseBank | None = field(default=None, init=False, repr=False)
    _rng: WorkerRng = field(default_factory=WorkerRng, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.augment is not None and not self.augment.enabled:
            self.augment = None
        if self.augment is not None and self.augment.noise_prob > 0:
            self._noise = NoiseBank(self.augment.noise_dir)

    def item(self, dataset: Utterances, index: int) -> dict:
        audio = read_audio(dataset, index)
        if isinstance(audio, str):
            return {"error": audio}
        if self.augment is not None:  # per worker and epoch: DataLoader reseeds torch in each
            audio = augment_waveform(audio, self.augment, self._rng(), self._noise)
        return {"audio": audio}

    def batch(self, items: list[dict]) -> dict[str, torch.Tensor]:
        audio = np.zeros((len(items), self.n_samples), np.float32)  # (0, n_samples) if none
        for row, item in enumerate(items):
            audio[row] = whisper.pad_or_trim(item["audio"], self.n_samples)
        lengths = torch.tensor(
            [min(len(item["audio"]), self.n_samples) for item in items], dtype=torch.long
        )
        return {
            "audio": torch.from_numpy(audio),
            "audio_lengths": lengths,
            "durations_s": lengths.float() / SAMPLE_RATE,
        }
