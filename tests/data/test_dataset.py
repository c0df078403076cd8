"""UtteranceDataset: the item it returns, a file that breaks during a run, a missing target;
the input strategy it and the collator share."""

import numpy as np
import pytest
import soundfile as sf
import torch
from whisper.audio import SAMPLE_RATE

from whisper_ft.data.augment import WaveformAugment
from whisper_ft.data.collate import Collator, decoder_tokens
from whisper_ft.data.dataset import UtteranceDataset
from whisper_ft.data.inputs import AudioSamples
from whisper_ft.manifest import ManifestError, Utterance


@pytest.fixture
def utterances(tmp_path) -> list[Utterance]:
    """Two lines of a manifest in `tmp_path`: a 0.5-s sine at 8 kHz (resampled when read) and
    one whose audio is not a sound file."""
    t = np.arange(4000) / 8000
    sf.write(tmp_path / "a.wav", 0.3 * np.sin(2 * np.pi * 220 * t), 8000)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    return [
        Utterance("a", "a.wav", "はい", kana="ハイ", duration=0.5, speaker="s1", line=1),
        Utterance("b", "broken.wav", "いいえ", kana="イイエ", line=2),
    ]


def test_items_are_audio_at_16_khz_and_the_targets_tokens(utterances, tmp_path, ja_tokenizer):
    dataset = UtteranceDataset(utterances, tmp_path / "m.jsonl", ja_tokenizer, "kana")
    item = dataset[0]
    assert set(item) == {"id", "audio", "tokens", "text", "speaker"}
    assert item["audio"].dtype == np.float32 and item["audio"].shape == (SAMPLE_RATE // 2,)
    assert item["text"] == "ハイ" and item["speaker"] == "s1"
    assert item["tokens"] == decoder_tokens(ja_tokenizer, "ハイ")
    assert dataset.durations_s == [0.5, 0.0]  # unknown durations count as 0 for the sampler
    assert UtteranceDataset(utterances, tmp_path / "m.jsonl", ja_tokenizer, "text")[0]["text"] == (
        "はい"
    )


def test_audio_that_breaks_is_an_error_item_and_a_warning(utterances, tmp_path, ja_tokenizer):
    dataset = UtteranceDataset(utterances, tmp_path / "m.jsonl", ja_tokenizer)
    with pytest.warns(UserWarning, match=r"m\.jsonl:2: b skipped, the run goes on"):
        item = dataset[1]
    assert set(item) == {"id", "error"} and item["id"] == "b"


def test_a_line_without_its_target_names_its_line(utterances, tmp_path, ja_tokenizer):
    utterances[1].kana = None
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: no 'kana' field; run the manifest"):
        UtteranceDataset(utterances, tmp_path / "m.jsonl", ja_tokenizer, "kana")


def test_the_dataset_takes_no_cache_setting(utterances, tmp_path, ja_tokenizer):
    # The feature cache is an input strategy (feature_cache.CachedFeatures) given as `inputs`;
    # a setting here was never read, so passing one must fail rather than silently do nothing.
    with pytest.raises(TypeError, match="feature_cache"):
        UtteranceDataset(utterances, tmp_path, ja_tokenizer, "kana", None, feature_cache="off")


def test_one_input_strategy_feeds_both_the_items_and_the_batch(utterances, tmp_path, ja_tokenizer):
    """Any object with `item` and `batch` replaces the audio: the dataset keeps its tokens and
    texts, the collator its padding, and an `error` from the strategy skips the item."""

    class Constant:
        def item(self, dataset, index):
            if index == 1:
                return {"error": "gone"}
            return {"level": float(index)}

        def batch(self, items):
            levels = [item["level"] for item in items]
            return {"levels": torch.tensor(levels), "durations_s": torch.ones(len(items))}

    inputs = Constant()
    dataset = UtteranceDataset(utterances, tmp_path / "m.jsonl", ja_tokenizer, inputs=inputs)
    live = UtteranceDataset(utterances, tmp_path / "m.jsonl", ja_tokenizer)
    assert dataset[0]["tokens"] == live.tokens[0] and "audio" not in dataset[0]
    assert dataset[1] == {"id": utterances[1].id, "error": "gone"}
    batch = Collator(eot=ja_tokenizer.eot, inputs=inputs)([dataset[i] for i in range(len(dataset))])
    assert batch["skipped"] == [utterances[1].id]
    assert batch["levels"].tolist() == [0.0] and batch["ids"] == [utterances[0].id]
    assert batch["dec_input_ids"].shape[0] == 1
    assert "audio" not in batch


def test_augmentation_belongs_to_the_input_strategy(utterances, tmp_path, ja_tokenizer):
    augment = WaveformAugment(volume_prob=1.0)
    dataset = UtteranceDataset(utterances, tmp_path / "m.jsonl", ja_tokenizer, "kana", augment)
    assert dataset.augment is augment and dataset.inputs.augment is augment
    with pytest.raises(ValueError, match="input strategy"):
        UtteranceDataset(
            utterances, tmp_path, ja_tokenizer, "kana", augment, inputs=AudioSamples(augment)
        )
