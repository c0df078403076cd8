"""Clips without speech for training: the model learns to end at once where there is nothing to
say, instead of talking (and looping) on silence, hum and noise.

    clips = speechless_dataset(n=30, tokenizer=tokenizer, target="kana", seed=1)
    train = ConcatUtterances([train, clips])      # what the sampler and the collator read

Each clip is silence, white noise or pink noise at a seeded level and length; its target is
empty, so its tokens are the SOT sequence alone and its one label is `<|endoftext|>` right
after `<|notimestamps|>`. The clips are made from their seed and index (no files); the
evaluation's speechless clips (`decoding.speechless_clips`, seed 0, 5 s at fixed levels) are
never among them, so what every test reports on silence stays a held-out measurement.
"""

import bisect
import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset
from whisper.audio import SAMPLE_RATE
from whisper.tokenizer import Tokenizer

from whisper_ft.audio import pink
from whisper_ft.data.augment import WaveformAugment
from whisper_ft.data.dataset import UtteranceDataset, utterance_item
from whisper_ft.data.inputs import AudioSamples, InputStrategy, Utterances
from whisper_ft.manifest import Target, Utterance

KINDS = ("silence", "white_noise", "pink_noise")
SPEAKER = "speechless"  # the clips' speaker id in batches and reports


def speechless_clip(kind: str, seconds: float, rms: float, seed: int) -> np.ndarray:
    """A 16-kHz mono float32 clip of `kind` (`KINDS`) at `rms` (digital silence: zeros).

    returns : np.ndarray, shape = (round(seconds * 16000),)
    """
    n = round(seconds * SAMPLE_RATE)
    if kind == "silence":
        return np.zeros(n, dtype=np.float32)
    rng = np.random.default_rng(seed)
    if kind == "white_noise":
        noise = rng.standard_normal(n)
    elif kind == "pink_noise":
        noise = pink(rng.standard_normal(n))
    else:
        raise ValueError(f"no speechless clip of kind {kind!r}; kinds: {', '.join(KINDS)}")
    return (rms * noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def speechless_utterances(
    n: int, seed: int = 1, seconds: tuple[float, float] = (1.0, 10.0)
) -> list[Utterance]:
    """`n` clips' lines: kinds in turn, lengths drawn from `seconds`, levels from -50 to -20
    dBFS (RMS); everything is in the line (`audio` names kind, level and seed), so the list
    keys a feature cache as a manifest does."""
    if n < 0:
        raise ValueError(f"`n` must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    utterances = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        duration = round(float(rng.uniform(*seconds)), 2)
        rms = round(float(10 ** (rng.uniform(-50, -20) / 20)), 5)
        clip_seed = int(rng.integers(2**31))
        utterances.append(
            Utterance(
                id=f"{SPEAKER}-{seed}-{i:05d}",
                audio=f"{SPEAKER}:{kind}:{rms}:{clip_seed}",
                text="",
                kana="",
                duration=duration,
                speaker=SPEAKER,
            )
        )
    return utterances


@dataclass
class SpeechlessAudio:
    """The input strategy (`data/inputs.py`) of speechless lines: each item's clip made from
    its line (`speechless_utterances`) instead of read from a file; batches as live audio."""

    samples: AudioSamples = field(default_factory=AudioSamples)  # pads and stacks

    def item(self, dataset: Utterances, index: int) -> dict:
        utterance = dataset.utterances[index]
        _, kind, rms, seed = utterance.audio.split(":")
        return {"audio": speechless_clip(kind, utterance.duration or 0.0, float(rms), int(seed))}

    def batch(self, items: list[dict]) -> dict[str, torch.Tensor]:
        return self.samples.batch(items)


def speechless_dataset(
    n: int, tokenizer: Tokenizer, target: Target = "kana", seed: int = 1
) -> UtteranceDataset:
    """`n` speechless clips as a dataset whose targets are empty (see the module's docstring)."""
    return UtteranceDataset(
        speechless_utterances(n, seed), "speechless", tokenizer, target, inputs=SpeechlessAudio()
    )


class ConcatUtterances(Dataset):
    """Several datasets read as one, in order: `tokens`, `durations_s`, `utterances` and
    `targets` joined (what the batch sampler and the feature cache read), each item from its
    own dataset and input strategy. `manifest` and `inputs` are the first dataset's, for
    messages and for the collator: its strategies must stack each other's items (live audio
    with speechless audio, or cached features with cached features)."""

    def __init__(self, datasets: list[UtteranceDataset]) -> None:
        if not datasets:
            raise ValueError("ConcatUtterances needs at least one dataset")
        self.datasets = datasets
        self.manifest = datasets[0].manifest
        self.inputs = datasets[0].inputs
        self.utterances = [u for d in datasets for u in d.utterances]
        self.tokens = [t for d in datasets for t in d.tokens]
        self.targets = [t for d in datasets for t in d.targets]
        self.durations_s = [s for d in datasets for s in d.durations_s]
        self._ends = np.cumsum([len(d) for d in datasets]).tolist()
        self._joined_inputs = False  # True once `with_inputs` gave one strategy for all

    @property
    def augment(self) -> WaveformAugment | None:
        """The waveform augmentation any part applies (None: none does)."""
        return next((d.augment for d in self.datasets if d.augment is not None), None)

    def cache_rows(self) -> list[tuple[str, str]]:
        """(id, audio) of every item, in order: the feature cache's key."""
        return [(u.id, u.audio) for u in self.utterances]

    def with_inputs(self, inputs: InputStrategy) -> "ConcatUtterances":
        """The same items, their speech from `inputs` for all (the cache built over this
        dataset: `CachedFeatures` reads row `index` of the whole)."""
        other = copy.copy(self)
        other.inputs, other._joined_inputs = inputs, True
        return other

    def __len__(self) -> int:
        return self._ends[-1]

    def __getitem__(self, index: int) -> dict:
        if not self._joined_inputs:
            part = bisect.bisect_right(self._ends, index)
            start = self._ends[part - 1] if part else 0
            return self.datasets[part][index - start]
        return utterance_item(self, index)
