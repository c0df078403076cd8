"""`UtteranceDataset`: checked utterances → items of target tokens and the speech as its input
strategy gives it (`data/inputs.py`: live audio, or cached encoder features).

Owns what one item is (below); batching is `collate.Collator`'s, ordering the sampler's.
"""

import copy
from pathlib import Path

from torch.utils.data import Dataset
from whisper.tokenizer import Tokenizer

from whisper_ft.data.augment import WaveformAugment
from whisper_ft.data.collate import decoder_tokens
from whisper_ft.data.inputs import AudioSamples, InputStrategy
from whisper_ft.manifest import ManifestError, Target, Utterance, read_manifest


class UtteranceDataset(Dataset):
    """Utterances (already checked: see `whisper_ft.data.check`), targets tokenised once, the
    speech read per item by `inputs` (default: `AudioSamples(augment)`, the audio file).

    Each item is `{"id": str, "tokens": list[int] (SOT sequence + target tokens), "text": str
    (the target), "speaker": str}` with the input strategy's fields: `"audio": np.ndarray
    (n_samples,) float32 at 16 kHz` for live audio, `"features"` and `"duration"` for cached
    ones. It is `{"id": str, "error": str}` when the input cannot be had (a file that cannot be
    read any more): the collator leaves it out and the module counts it, so one file that
    breaks during a long run does not end it.
    """

    def __init__(
        self,
        utterances: list[Utterance],
        manifest: str | Path,
        tokenizer: Tokenizer,
        target: Target = "kana",
        augment: WaveformAugment | None = None,
        *,
        inputs: InputStrategy | None = None,
    ) -> None:
        self.manifest = Path(manifest)  # relative audio paths start at its folder
        self.utterances = utterances
        self.targets = target_texts(utterances, target, self.manifest)
        self.tokens = [decoder_tokens(tokenizer, text) for text in self.targets]
        self.durations_s = [u.duration or 0.0 for u in utterances]
        if inputs is not None and augment is not None:
            raise ValueError("give `augment` to the input strategy, not beside it")
        self.inputs: InputStrategy = inputs if inputs is not None else AudioSamples(augment)

    @classmethod
    def from_manifest(
        cls, manifest: str | Path, tokenizer: Tokenizer, target: Target = "kana"
    ) -> "UtteranceDataset":
        """Every line of a manifest `prepare` wrote, without the data check (errors stop)."""
        return cls(read_manifest(manifest), manifest, tokenizer, target)

    def cache_rows(self) -> list[tuple[str, str]]:
        """(id, audio) of each item: what the encoder-feature cache's key holds of the data."""
        return [(u.id, u.audio) for u in self.utterances]

    def with_inputs(self, inputs: InputStrategy) -> "UtteranceDataset":
        """The same utterances and targets, their speech given by `inputs` instead."""
        other = copy.copy(self)
        other.inputs = inputs
        return other

    @property
    def augment(self) -> WaveformAugment | None:
        """The waveform augmentation of live audio (None: off, or not live audio)."""
        return getattr(self.inputs, "augment", None)

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> dict:
        return utterance_item(self, index)


def utterance_item(dataset: "UtteranceDataset", index: int) -> dict:
    """Item `index` of a dataset of single utterances (`UtteranceDataset`'s docstring), its
    speech from the dataset's input strategy."""
    utterance = dataset.utterances[index]
    speech = dataset.inputs.item(dataset, index)
    if "error" in speech:
        return {"id": utterance.id, "error": speech["error"]}
    return {
        "id": utterance.id,
        **speech,
        "tokens": dataset.tokens[index],
        "text": dataset.targets[index],
        "speaker": utterance.speaker or "",
    }


def target_texts(utterances: list[Utterance], target: Target, manifest: Path) -> list[str]:
    """Each utterance's `target` field; a line without one is an error naming it."""
    texts = []
    for utterance in utterances:
        text = getattr(utterance, target)
        if text is None:
            raise ManifestError(
                f"{manifest}:{utterance.line}: no {target!r} field; run the manifest through "
                "`python -m whisper_ft check-data`, or make it with `prepare`."
            )
        texts.append(text)
    return texts
