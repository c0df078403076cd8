"""The encoder-feature store read for training: `CachedFeatureDataset` (items) and
`FeatureCollator` (batches), in place of `UtteranceDataset` and `Collator`.

    items = CachedFeatureDataset(dataset, cache)                    # "features" for "audio"
    loader = DataLoader(items, collate_fn=FeatureCollator(collator, cache.feature_shape))

Owns what a cached item and batch are; the store itself is `features`', its build
`feature_build`'s.
"""

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from whisper_ft.collate import Collator
from whisper_ft.dataset import UtteranceDataset
from whisper_ft.features import FeatureCache, FeatureCacheError

_NO_AUDIO = np.zeros(0, np.float32)  # stands in for the waveform when only tokens are padded


class CachedFeatureDataset(Dataset):
    """The utterances of an UtteranceDataset with their cached encoder output in place of the
    audio: no audio is read. Items are `{"id": str, "features": torch.Tensor (n_audio_ctx,
    n_audio_state) in the storage dtype, "tokens": list[int], "text": str}`, or `{"id",
    "error"}` for a row the cache lacks (unreadable audio when built); `FeatureCollator`
    batches them. `tokens` and `durations_s` are the dataset's, for the batch sampler.
    """

    def __init__(self, dataset: UtteranceDataset, cache: FeatureCache) -> None:
        utterances = [(u.id, u.audio) for u in dataset.utterances]
        if utterances != cache.utterances:
            raise FeatureCacheError(
                f"{cache.path} was built for other utterances than {dataset.manifest} holds "
                "now (ids, audio paths or their order differ); build the cache for it again."
            )
        self.dataset, self.cache = dataset, cache
        self.tokens = dataset.tokens
        self.durations_s = dataset.durations_s
        self.stored = cache.done()  # (N,) bool, read once

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        utterance_id = self.dataset.utterances[index].id
        if not self.stored[index]:
            return {
                "id": utterance_id,
                "error": f"not in the encoder-feature cache {self.cache.path}: its audio could "
                "not be read when the cache was built",
            }
        return {
            "id": utterance_id,
            "features": self.cache.features(index),
            "tokens": self.dataset.tokens[index],
            "text": self.dataset.targets[index],
            "speaker": self.dataset.utterances[index].speaker or "",
            "duration": self.dataset.durations_s[index],  # the manifest's (check-data fills it)
        }


@dataclass
class FeatureCollator:
    """Batches `CachedFeatureDataset` items: tokens padded by `collator` itself (the same
    rounding, eot and -100 padding, skipped ids and target as audio batches), features
    stacked. The batch is Collator's (see `whisper_ft.collate`) with one key in place of
    `audio` and `audio_lengths`:

    | `features` | (B, n_audio_ctx, n_audio_state) | the cache's dtype (float16) |

    and `durations_s` from the items' manifest durations (0: unknown) instead of from audio.

    Cast it on the device before use: `.float()` for the decoder (autocast then picks the
    compute dtype) and for decoding on the CPU; decoding with fp16 on CUDA halves it itself.
    """

    collator: Collator  # the audio collator of the same split; its n_samples is not used
    feature_shape: tuple[int, int]  # (n_audio_ctx, n_audio_state): an empty batch's shape
    dtype: torch.dtype = torch.float16  # the cache's storage dtype
    _tokens: Collator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._tokens = replace(self.collator, n_samples=0)

    def __call__(self, items: list[dict]) -> dict:
        readable = [item for item in items if "error" not in item]
        batch = self._tokens(
            [item if "error" in item else item | {"audio": _NO_AUDIO} for item in items]
        )
        del batch["audio"], batch["audio_lengths"]
        batch["durations_s"] = torch.tensor(
            [item.get("duration") or 0.0 for item in readable], dtype=torch.float32
        )
        batch["features"] = (
            torch.stack([item["features"] for item in readable])
            if readable
            else torch.zeros((0, *self.feature_shape), dtype=self.dtype)
        )
        return batch
