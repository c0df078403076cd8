"""Retention: English WER of a model before and after fine-tuning, with Whisper's normaliser."""

import math

import pytest
import torch

from whisper_ft.evaluation.retention import (
    RETENTION_HEADER,
    Retention,
    encode_clips,
    retention,
    retention_row,
    retention_scores,
    scores_of,
)
from whisper_ft.models.loading import load_base_model


def test_wer_on_hand_made_hypotheses_uses_whispers_english_normaliser():
    references = ["The cat sat on the mat.", "Two dogs ran.", "I will call you at ten o'clock."]
    hypotheses = ["the cat sat on a mat", "two dogs ran away", "I'll call you at 10 o'clock"]
    scores = scores_of(references, hypotheses, "en", budget_hits=[False, True, False])
    # one substitution (the → a), one insertion (away); I'll = I will, 10 = ten after normalising
    assert [s.word_errors for s in scores.utterances] == [1, 1, 0]
    assert (scores.word_errors, scores.words) == (2, 16)
    assert scores.wer == 2 / 16
    assert (scores.budget_hits, scores.repeating, scores.n_utterances) == (1, 0, 3)
    looping = scores_of(["Go."], ["go go go go go"], "en")  # has_loop: units of 1-4 characters
    assert (looping.word_errors, looping.words, looping.repeating) == (4, 1, 1)


def test_retention_row_gives_before_after_and_ratio():
    # words, not numbers: the English normaliser writes "one two" as "12"
    before = scores_of(["red green blue black"], ["red green blue white"], "en")  # 1/4
    after = scores_of(["red green blue black"], ["red pink blue white"], "en")  # 2/4
    result = Retention(before, after)
    assert result.ratio == 2.0
    assert retention_row(result) == "| en | 1 | 0.250 | 0.500 | 2.00 | 0 / 0 | 0 / 0 |\n"
    assert RETENTION_HEADER.count("|") // 2 == retention_row(result).count("|")
    perfect = scores_of(["red"], ["red"], "en")
    assert Retention(perfect, perfect).ratio == 1.0
    assert math.isinf(Retention(perfect, before).ratio)


def test_retention_refuses_japanese(tmp_path):
    with pytest.raises(ValueError, match="retention is measured in another one"):
        retention_scores(load_base_model("random:micro"), tmp_path / "x.jsonl", "ja")


def test_retention_decodes_every_clip_as_plain_english(english_clips):
    manifest = english_clips
    torch.manual_seed(0)
    model = load_base_model("random:micro").train()
    result = retention(model, model, manifest, "en", batch_size=2)
    assert model.training  # given back as it came
    for scores in (result.before, result.after):
        assert scores.n_utterances == 2 and scores.words == 7
        assert scores.word_errors == sum(s.word_errors for s in scores.utterances)
        assert all(isinstance(h, str) for h in scores.hypotheses)
    # greedy decoding is deterministic: the same model scores the same twice
    assert result.before.hypotheses == result.after.hypotheses
    assert result.ratio == 1.0


def test_models_sharing_an_encoder_decode_from_one_encoder_pass(english_clips):
    manifest = english_clips
    torch.manual_seed(0)
    model = load_base_model("random:micro")
    features = encode_clips(model, manifest, batch_size=1)
    assert features.shape == (2, model.dims.n_audio_ctx, model.dims.n_audio_state)
    assert features.dtype == torch.float32 and model.training  # given back as it came
    own = retention_scores(model, manifest, "en", batch_size=2)
    encoder, calls = model.encoder.forward, []
    model.encoder.forward = lambda *args: calls.append(args) or encoder(*args)
    shared = retention_scores(model, manifest, "en", batch_size=2, audio_features=features)
    assert calls == []  # decoded from the features: the encoder never ran
    assert shared.hypotheses == own.hypotheses and shared.word_errors == own.word_errors
