"""Shared fixtures: a small synthetic corpus (made once per session) and micro Whisper modules."""

import json

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import whisper.tokenizer

from whisper_ft.module import WhisperFineTuner
from whisper_ft.prepare import prepare_synthetic


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict:
    """Synthetic corpus: 3 voices (one each for train/val/test), 30 sentences: 24/3/3 lines."""
    return prepare_synthetic(tmp_path_factory.mktemp("corpus"), n_sentences=30, n_speakers=3)


@pytest.fixture(scope="session")
def ja_tokenizer():
    return whisper.tokenizer.get_tokenizer(True, language="ja", task="transcribe")


@pytest.fixture
def micro(request) -> WhisperFineTuner:
    """A randomly initialised 2-layer Whisper of width 64 (seeded), decoder trained alone."""
    pl.seed_everything(0, verbose=False)
    kwargs = getattr(request, "param", {})
    return WhisperFineTuner(base_model="random:micro", lr_warmup_steps=0, **kwargs)


def write_manifest_with_audio(folder, texts: list[str], seconds: float = 1.0) -> str:
    """A manifest whose utterances are short tones (distinct pitch per line); returns its path."""
    lines = []
    for i, text in enumerate(texts):
        t = np.arange(int(16000 * seconds)) / 16000
        sf.write(folder / f"u{i}.wav", 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t), 16000)
        record = {"id": f"u{i}", "audio": f"u{i}.wav", "text": text, "kana": text}
        lines.append(json.dumps(record, ensure_ascii=False))
    path = folder / "tones.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)
