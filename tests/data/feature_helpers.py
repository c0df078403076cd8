"""Helpers shared by the tests of the encoder-feature cache (`features`, `feature_build`,
`feature_dataset`): a manifest of sine waves, a micro Whisper, a counting encoder."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import whisper
from whisper.audio import SAMPLE_RATE
from whisper.model import Whisper

from whisper_ft.audio import log_mel_batch
from whisper_ft.data.dataset import UtteranceDataset
from whisper_ft.data.feature_cache import FeatureCache, build_feature_cache
from whisper_ft.manifest import read_manifest
from whisper_ft.models.loading import load_base_model

KANA = ["ア", "アイ", "アイウ", "アイウエ"]
# float16 keeps 11 significant bits: storing rounds by at most 2^-11 of a value. 1e-5 more
# allows for float32 CPU kernels summing in another order for another batch size.
FP16_RTOL, BATCH_ATOL = 2.0**-11, 1e-5
LOSS_RTOL = 1e-6  # decoder loss from cached features vs live ones, relative


def sine_fixtures():
    """The fixtures `manifest` (4 sine waves of 0.5–2 s at 16 kHz with kana targets, audio
    paths relative), `dataset` (its UtteranceDataset) and `model` (a seeded random:micro), for
    a test module to bind: `manifest, dataset, model = sine_fixtures()`."""

    @pytest.fixture
    def manifest(tmp_path):
        (tmp_path / "wav").mkdir()
        lines = []
        for i, kana in enumerate(KANA):
            seconds = 0.5 * (i + 1)
            t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
            wave = 0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t).astype(np.float32)
            sf.write(tmp_path / "wav" / f"u{i}.wav", wave, SAMPLE_RATE)
            line = {"id": f"u{i}", "audio": f"wav/u{i}.wav", "text": kana, "kana": kana}
            lines.append(json.dumps(line | {"duration": seconds}, ensure_ascii=False))
        path = tmp_path / "train.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    @pytest.fixture
    def dataset(manifest, ja_tokenizer) -> UtteranceDataset:
        return UtteranceDataset(read_manifest(manifest), manifest, ja_tokenizer, "kana")

    @pytest.fixture
    def model() -> Whisper:
        torch.manual_seed(0)
        return load_base_model("random:micro")

    return manifest, dataset, model


def count_rows(model: Whisper) -> list[int]:
    """Batch sizes the encoder is called with from now on (appended to the returned list)."""
    sizes: list[int] = []
    forward = model.encoder.forward

    def counting(mel):
        sizes.append(len(mel))
        return forward(mel)

    model.encoder.forward = counting
    return sizes


def build(model, dataset, cache_dir, **kwargs) -> FeatureCache:
    return build_feature_cache(
        model, dataset, cache_dir, **({"batch_size": 3, "num_workers": 0} | kwargs)
    )


def live_features(model: Whisper, dataset: UtteranceDataset, row: int) -> torch.Tensor:
    """The encoder output the module computes for one utterance: (n_audio_ctx, n_audio_state)."""
    audio = torch.from_numpy(whisper.pad_or_trim(dataset[row]["audio"]))[None]
    with torch.no_grad():
        return model.encoder(log_mel_batch(audio, model.dims.n_mels))[0]
