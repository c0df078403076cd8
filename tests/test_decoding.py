"""Decoding options and the katakana constraint."""

import dataclasses

import numpy as np
import pytest
import torch
import whisper
from whisper.model import ModelDimensions, Whisper

from whisper_ft.decoding import (
    LoopGuard,
    budgets_for,
    decode_guarded,
    decode_results,
    decoding_budget,
    decoding_options,
    hit_budget,
    non_katakana_tokens,
)
from whisper_ft.text import to_kana


def test_katakana_transcripts_never_need_a_suppressed_token(ja_tokenizer):
    suppressed = set(non_katakana_tokens(ja_tokenizer))
    assert 40_000 < len(suppressed) < ja_tokenizer.eot  # most of the vocabulary goes
    for text in (
        "今日は良い天気ですね。こんにちは、世界！",
        "キャッシュ・フロー「ヴ」",
        "ヒャクニジューサンエン",
    ):
        tokens = ja_tokenizer.encode(to_kana(text))
        assert not suppressed & set(tokens), text
    for text in ("今日", "hello", "ひらがな", "123"):  # kanji, latin, hiragana, digits
        assert set(ja_tokenizer.encode(text)) & suppressed, text


def test_decoding_options_keep_whispers_default_list_unless_given_one(ja_tokenizer):
    import torch

    cpu = torch.device("cpu")
    assert decoding_options("ja", "transcribe", cpu).suppress_tokens == "-1"
    ids = non_katakana_tokens(ja_tokenizer)
    assert decoding_options("ja", "transcribe", cpu, suppress_tokens=ids).suppress_tokens == ids


def test_decoding_leaves_the_katakana_list_unchanged(ja_tokenizer):
    """Whisper extends the suppress list it is handed; a cached list grew by 6 per decode."""
    import torch
    import whisper
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    model = Whisper(ModelDimensions(80, 1500, 16, 2, 1, 51865, 448, 16, 2, 1)).eval()
    before = list(non_katakana_tokens(ja_tokenizer))  # a copy
    mel = torch.zeros(1, 80, whisper.audio.N_FRAMES)
    for _ in range(2):
        options = decoding_options(
            "ja", "transcribe", torch.device("cpu"), 3, non_katakana_tokens(ja_tokenizer)
        )
        model.decode(mel, options)
    assert non_katakana_tokens(ja_tokenizer) == before


def test_hit_budget_means_cut_at_the_budget_not_ended():
    cut = whisper.DecodingResult(audio_features=torch.zeros(1), language="ja", tokens=[1] * 4)
    ended = whisper.DecodingResult(audio_features=torch.zeros(1), language="ja", tokens=[1] * 3)
    assert hit_budget(cut, 4) and not hit_budget(ended, 4)


def test_the_budget_comes_from_the_duration_alone():
    assert decoding_budget(3.0, 448) == 15 * 3 + 8
    assert decoding_budget(0.1, 448) == 2 + 8
    assert decoding_budget(30.0, 448) == 224  # Whisper's own default, half the context
    assert decoding_budget(None, 448) == decoding_budget(0.0, 448) == 224  # unknown duration
    assert decoding_budget(3.0, 448, cap=16) == 16
    assert budgets_for(torch.tensor([1.0, 2.0]), 448) == [23, 38]


@pytest.fixture(scope="module")
def never_ending():
    """A random 1-layer model: it never emits end-of-text, so every row runs to its budget."""
    torch.manual_seed(0)
    return Whisper(ModelDimensions(80, 1500, 16, 2, 1, 51865, 448, 16, 2, 1)).eval()


def test_a_rows_result_does_not_depend_on_its_batch(never_ending):
    """Evaluation used to cut every row at 1.25 × the batch's longest reference: the same
    utterance scored differently beside a longer one. Each row now stops at its own budget."""
    torch.manual_seed(1)
    mel = torch.randn(2, 80, whisper.audio.N_FRAMES)
    options = decoding_options("ja", "transcribe", torch.device("cpu"))
    together = decode_results(never_ending, mel, options, [5, 12])
    alone = decode_results(never_ending, mel[:1], options, [5])
    assert together[0].tokens == alone[0].tokens and len(alone[0].tokens) == 5
    assert len(together[1].tokens) == 12
    assert [hit_budget(r, b) for r, b in zip(together, [5, 12], strict=True)] == [True, True]


class _Scripted:
    """A stand-in model whose `decode` answers from a script: temperature → per-row results."""

    is_multilingual, num_languages = True, 99

    def __init__(self, script):
        self.script, self.calls = script, []

    def decode(self, features, options):
        self.calls.append((options.temperature, len(features)))
        rows = self.script[options.temperature]
        return [rows[int(f.flatten()[0])] for f in features]


def _result(text, logprob=-0.2, ratio=1.2, no_speech=0.01, n=3):
    return whisper.DecodingResult(
        audio_features=torch.zeros(1), language="ja", tokens=[1] * n, text=text,
        avg_logprob=logprob, compression_ratio=ratio, no_speech_prob=no_speech,
    )  # fmt: skip


def test_the_loop_guard_decodes_failed_rows_again_and_empties_silence():
    fine, loop, silence = (
        _result("アイ"),
        _result("ササササ", ratio=5.0),
        _result("ア", -2.0, 1, 0.9),
    )
    model = _Scripted(
        {
            0.0: [fine, loop, silence],
            0.2: {1: _result("ササ", ratio=3.0)},
            0.4: {1: _result("カサ")},
        }
    )
    features = torch.arange(3.0).reshape(3, 1, 1).expand(3, 2, 2)  # row i starts with i
    options = decoding_options("ja", "transcribe", torch.device("cpu"))
    guard = LoopGuard()
    results = decode_guarded(model, features, options, [10, 10, 10], guard)
    assert [r.text for r in results] == ["アイ", "カサ", ""]
    assert model.calls == [(0.0, 3), (0.2, 1), (0.4, 1)]  # only the looping row again
    model.calls.clear()
    assert [r.text for r in decode_guarded(model, features, options, [10] * 3, None)] == [
        "アイ", "ササササ", "ア",
    ]  # fmt: skip
    assert model.calls == [(0.0, 3)]


def test_the_no_speech_rule_empties_silence_and_decodes_nothing_again():
    from whisper_ft.decoding import NO_SPEECH_RULE
    from whisper_ft.inference.transcriber import Transcriber

    rows = (
        _result("ア", -2.0, 1, 0.9),  # whisper.transcribe skips this window
        _result("ア", -2.0, 1, 0.1),  # speech, unsure
        _result("アイ", -0.2, 1, 0.9),  # likely text: kept, as Whisper keeps it
        _result("。", -0.05, 1, 0.99),  # no word: what a model that would end at once says
        _result("。", -0.05, 1, 0.1),
        _result("イヤンチャーチャー", -0.2, 1, 0.999),  # a taught <|nospeech|>, then a loop
        _result("アイ", -0.2, 1, 0.95),  # base's no-speech probability is at most 0.93
    )
    model = _Scripted({0.0: list(rows)})
    features = torch.arange(7.0).reshape(7, 1, 1).expand(7, 2, 2)
    options = decoding_options("ja", "transcribe", torch.device("cpu"))
    results = decode_guarded(model, features, options, [10] * 7, NO_SPEECH_RULE)
    assert [r.text for r in results] == ["", "ア", "アイ", "", "。", "", "アイ"]
    assert model.calls == [(0.0, 7)]  # no temperature fallback
    whispers_own = dataclasses.replace(NO_SPEECH_RULE, certain_no_speech=None)
    assert not whispers_own.silent(rows[5]) and NO_SPEECH_RULE.silent(rows[5])
    assert Transcriber.loop_guard is NO_SPEECH_RULE  # what transcribe and serve decode with


def test_a_row_cut_at_its_budget_is_tried_again():
    guard = LoopGuard()
    assert guard.failed(_result("アイウ", n=3), 3) and not guard.failed(_result("アイ", n=2), 3)
    assert not guard.failed(dataclasses.replace(_result("ア", -2.0, 1, 0.9)), 3)  # silence


def test_speechless_clips_hold_no_speech_and_each_is_decoded():
    from whisper_ft.decoding import SPEECHLESS_SECONDS, speechless_clips, speechless_outputs
    from whisper_ft.models.loading import load_base_model

    clips = speechless_clips()
    assert list(clips) == ["silence", "white_noise", "pink_noise"]
    assert all(
        c.dtype == np.float32 and len(c) == SPEECHLESS_SECONDS * 16000 for c in clips.values()
    )
    assert not clips["silence"].any()
    rms = {name: float(np.sqrt(np.mean(c.astype(np.float64) ** 2))) for name, c in clips.items()}
    assert rms["white_noise"] == pytest.approx(0.01, rel=1e-3)
    assert rms["pink_noise"] == pytest.approx(0.05, rel=1e-3)
    # pink: most of the power below 1 kHz; white: spread evenly (about 1/8 below 1 kHz)
    low = {}
    for name in ("white_noise", "pink_noise"):
        power = np.abs(np.fft.rfft(clips[name])) ** 2
        low[name] = float(power[: int(SPEECHLESS_SECONDS * 1000)].sum() / power.sum())
    assert low["pink_noise"] > 0.5 > 0.2 > low["white_noise"]
    assert np.array_equal(speechless_clips()["pink_noise"], clips["pink_noise"])  # seeded
    torch.manual_seed(0)
    model = load_base_model("random:micro").eval()
    options = whisper.DecodingOptions(language="ja", without_timestamps=True, fp16=False)
    said = speechless_outputs(model, options)
    assert list(said) == list(clips) and all(isinstance(t, str) for t in said.values())
