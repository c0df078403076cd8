"""Speechless training clips: made from their lines, empty targets that end at once, mixed with
an utterance dataset for the sampler and the collator."""

import numpy as np
import pytest
import soundfile as sf
from whisper.audio import SAMPLE_RATE

from whisper_ft.data.collate import IGNORE_INDEX, Collator
from whisper_ft.data.dataset import UtteranceDataset
from whisper_ft.data.speechless import (
    KINDS,
    ConcatUtterances,
    speechless_clip,
    speechless_dataset,
    speechless_utterances,
)
from whisper_ft.decoding import speechless_clips
from whisper_ft.manifest import Utterance


def test_a_clip_has_its_kind_length_and_level():
    assert not speechless_clip("silence", 1.5, 0.1, seed=3).any()
    for kind in ("white_noise", "pink_noise"):
        clip = speechless_clip(kind, 1.5, 0.02, seed=3)
        assert clip.shape == (int(1.5 * SAMPLE_RATE),) and clip.dtype == np.float32
        assert float(np.sqrt(np.mean(clip.astype(np.float64) ** 2))) == pytest.approx(
            0.02, rel=1e-3
        )
        assert np.array_equal(clip, speechless_clip(kind, 1.5, 0.02, seed=3))  # seeded
        assert not np.array_equal(clip, speechless_clip(kind, 1.5, 0.02, seed=4))
    with pytest.raises(ValueError, match="kinds: silence, white_noise, pink_noise"):
        speechless_clip("hum", 1.0, 0.1, seed=0)


def test_lines_take_turns_of_kind_and_are_never_the_evaluations_clips():
    lines = speechless_utterances(9, seed=1, seconds=(2.0, 4.0))
    assert [u.audio.split(":")[1] for u in lines] == list(KINDS) * 3
    assert len({u.id for u in lines}) == 9 and all(2.0 <= u.duration <= 4.0 for u in lines)
    assert speechless_utterances(9, seed=1, seconds=(2.0, 4.0)) == lines
    assert speechless_utterances(9, seed=2, seconds=(2.0, 4.0)) != lines
    evaluation = speechless_clips(2.0)  # what every test decodes (seed 0, fixed levels)
    made = [speechless_clip(*_parts(u)) for u in lines]
    for clip in evaluation.values():
        assert not any(len(m) == len(clip) and np.array_equal(m, clip) for m in made if m.any())


def _parts(u: Utterance):
    _, kind, rms, seed = u.audio.split(":")
    return kind, u.duration, float(rms), int(seed)


def test_a_speechless_item_is_trained_to_end_right_after_the_sot_sequence(ja_tokenizer):
    clips = speechless_dataset(3, ja_tokenizer, "kana", seed=1)
    item = clips[1]
    assert item["text"] == "" and item["speaker"] == "speechless"
    assert item["tokens"] == list(ja_tokenizer.sot_sequence_including_notimestamps)
    assert len(item["audio"]) == round(clips.utterances[1].duration * SAMPLE_RATE)
    batch = Collator(eot=ja_tokenizer.eot, pad_to_multiple_of=1)([clips[i] for i in range(3)])
    labels = batch["labels"][0].tolist()
    assert labels == [*ja_tokenizer.sot_sequence_including_notimestamps[1:], ja_tokenizer.eot]
    assert IGNORE_INDEX not in labels  # nothing padded: every clip has the same 4 tokens


def _one_utterance(folder, tokenizer) -> UtteranceDataset:
    """A dataset of one 0.5-s tone read as はい (kana ハイ), its wav written under `folder`."""
    t = np.arange(8000) / SAMPLE_RATE
    sf.write(folder / "a.wav", 0.3 * np.sin(2 * np.pi * 220 * t), SAMPLE_RATE)
    return UtteranceDataset(
        [Utterance("a", "a.wav", "はい", kana="ハイ", duration=0.5, speaker="s1", line=1)],
        folder / "m.jsonl",
        tokenizer,
    )


def test_with_no_speech_a_speechless_item_teaches_nospeech_after_sot_and_speech_its_language(
    tmp_path, ja_tokenizer
):
    speech = _one_utterance(tmp_path, ja_tokenizer)
    mixed = ConcatUtterances([speech, speechless_dataset(1, ja_tokenizer)])
    collate = Collator(eot=ja_tokenizer.eot, pad_to_multiple_of=1, no_speech=ja_tokenizer.no_speech)
    labels = collate([mixed[0], mixed[1]])["labels"].tolist()
    sot_sequence = list(ja_tokenizer.sot_sequence_including_notimestamps)
    # Whisper's no-speech probability is <|nospeech|>'s after SOT: taught on the clip only.
    assert labels[1][:4] == [ja_tokenizer.no_speech, *sot_sequence[2:], ja_tokenizer.eot]
    assert labels[0][:3] == [ja_tokenizer.language_token, *sot_sequence[2:]]
    assert ja_tokenizer.decode_with_timestamps([ja_tokenizer.no_speech]) == "<|nospeech|>"


def test_speech_and_speechless_clips_read_as_one_dataset(tmp_path, ja_tokenizer):
    speech = _one_utterance(tmp_path, ja_tokenizer)
    clips = speechless_dataset(2, ja_tokenizer)
    mixed = ConcatUtterances([speech, clips])
    assert len(mixed) == 3 and [u.id for u in mixed.utterances][0] == "a"
    assert mixed.tokens == speech.tokens + clips.tokens
    assert mixed.durations_s == [0.5, *clips.durations_s]
    assert mixed[0]["text"] == "ハイ" and mixed[2]["id"] == clips.utterances[1].id
    batch = Collator(eot=ja_tokenizer.eot)([mixed[i] for i in range(3)])
    assert batch["ids"] == ["a", *[u.id for u in clips.utterances]]
    assert batch["texts"] == ["ハイ", "", ""] and batch["audio"].shape[0] == 3
    assert mixed.manifest == speech.manifest and mixed.augment is None


def test_a_fit_with_speechless_share_trains_on_the_clips_from_the_feature_cache(
    micro, corpus, make_trainer, tmp_path
):
    from whisper_ft.data.datamodule import WhisperDataModule

    paths = {f"{split}_manifest": str(path) for split, path in corpus.items()}
    datamodule = WhisperDataModule(
        **paths, batch_size=4, num_workers=0, speechless_share=0.25, feature_cache=str(tmp_path)
    )
    make_trainer(max_steps=2, limit_val_batches=1).fit(micro, datamodule)
    train = datamodule.datasets["train"]
    speech = [u for u in train.utterances if u.speaker != "speechless"]
    clips = [u for u in train.utterances if u.speaker == "speechless"]
    assert len(clips) == round(0.25 * len(speech)) > 0
    item = train[len(speech)]  # the first clip, read from the cache
    assert item["text"] == "" and item["features"].shape == (1500, 64)
    no_speech = micro.tokenizer.no_speech
    assert datamodule.collators["train"]([item])["labels"][0, 0] == no_speech  # on by default
    assert WhisperDataModule(no_speech_label=False).hparams.no_speech_label is False
    with pytest.raises(ValueError, match=r"`speechless_share` must be in \[0, 1\]"):
        WhisperDataModule(train_manifest="t.jsonl", speechless_share=1.5)
