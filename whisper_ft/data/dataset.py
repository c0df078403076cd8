"""`UtteranceDataset`: checked utterances → items of audio and target tokens, read per item.

Owns what one item is (below); batching is `collate.Collator`'s, ordering the sampler's.
"""

import warnings
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from whisper.tokenizer import Tokenizer

from whisper_ft.audio import AudioError, load_audio
from whisper_ft.data.augment import NoiseBank, WaveformAugment, WorkerRng, augment_waveform
from whisper_ft.data.collate import decoder_tokens
from whisper_ft.manifest import ManifestError, Target, Utterance, read_manifest


class UtteranceDataset(Dataset):
    """Utterances (already checked: see `whisper_ft.data.check`): audio read per item, targets
    tokenised once.

    Each item is `{"id": str, "audio": np.ndarray (n_samples,) float32 at 16 kHz,
    "tokens": list[int] (SOT sequence + target tokens), "text": str (the target)}`, or
    `{"id": str, "error": str}` when the audio file cannot be read any more: the collator
    leaves it out and the module counts it, so one file that breaks during a long run does
    not end it.
    """

    def __init__(
        self,
        utterances: list[Utterance],
        manifest: str | Path,
        tokenizer: Tokenizer,
        target: Target = "kana",
        augment: WaveformAugment = WaveformAugment(),  # noqa: B008 (frozen: one shared default is safe)
    ) -> None:
        self.manifest = Path(manifest)  # relative audio paths start at its folder
        self.utterances = utterances
        self.targets: list[str] = []
        for utterance in utterances:
            text = getattr(utterance, target)
            if text is None:
                raise ManifestError(
                    f"{self.manifest}:{utterance.line}: no {target!r} field; run the manifest "
                    "through `python -m whisper_ft check-data`, or make it with `prepare`."
                )
            self.targets.append(text)
        self.tokens = [decoder_tokens(tokenizer, text) for text in self.targets]
        self.durations_s = [u.duration or 0.0 for u in utterances]
        self.augment = augment if augment is not None and augment.enabled else None
        noisy = self.augment is not None and self.augment.noise_prob > 0
        self.noise = NoiseBank(self.augment.noise_dir) if noisy else None
        self.rng = WorkerRng()  # per worker and epoch: DataLoader reseeds torch in each

    @classmethod
    def from_manifest(
        cls, manifest: str | Path, tokenizer: Tokenizer, target: Target = "kana"
    ) -> "UtteranceDataset":
        """Every line of a manifest `prepare` wrote, without the data check (errors stop)."""
        return cls(read_manifest(manifest), manifest, tokenizer, target)

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> dict:
        utterance = self.utterances[index]
        try:
            audio: np.ndarray = load_audio(utterance.audio_path(self.manifest.parent))
        except AudioError as e:
            warnings.warn(
                f"{self.manifest}:{utterance.line}: {utterance.id} skipped, the run goes on: {e}",
                stacklevel=1,
            )
            return {"id": utterance.id, "error": str(e)}
        if self.augment is not None:
            audio = augment_waveform(audio, self.augment, self.rng(), self.noise)
        return {
            "id": utterance.id,
            "audio": audio,
            "tokens": self.tokens[index],
            "text": self.targets[index],
            "speaker": utterance.speaker or "",
        }
