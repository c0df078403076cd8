"""`evaluation.longform`: a recording's transcript segments against its known sentence times."""

import math

import pytest

from whisper_ft.evaluation.longform import LongFormScore, combine, score_recording
from whisper_ft.evaluation.metrics import score

# Four sentences of a recording, as `prepare long` writes them (seconds).
REFERENCE = [
    {"start": 0.5, "end": 3.0, "text": "窓を開けて", "kana": "マドヲアケテ"},
    {"start": 4.0, "end": 6.5, "text": "海で泳いだ", "kana": "ウミデオヨイダ"},
    {"start": 7.5, "end": 10.0, "text": "猫が寝ている", "kana": "ネコガネテイル"},
    {"start": 11.0, "end": 13.0, "text": "お茶をください", "kana": "オチャヲクダサイ"},
]


def test_exact_hypothesis_scores_zero():
    hypothesis = [{"start": r["start"], "end": r["end"], "text": r["kana"]} for r in REFERENCE]
    s = score_recording(REFERENCE, hypothesis)
    assert (s.kana_errors, s.kana_chars, s.dropped, s.looping_segments) == (0, 28, 0, 0)
    assert s.start_errors_s == (0.0, 0.0, 0.0, 0.0)
    assert s.starts_within(0.3) == 1.0 and s.median_start_error_s == 0.0


def test_a_late_start_a_dropped_sentence_and_a_loop_give_their_figures():
    hypothesis = [
        {"start": 0.5, "end": 3.0, "text": "マドヲアケテ"},
        {"start": 4.4, "end": 6.5, "text": "ウミデオヨイダ"},  # 0.4 s late
        # sentence 3 (7.5-10.0 s) dropped: nothing overlaps it
        {"start": 10.0, "end": 13.0, "text": "オチャヲクダサイサイサイサイ"},  # a loop, 1 s early
        {"start": 13.0, "end": 14.0, "text": "   "},  # no text: not a segment
    ]
    s = score_recording(REFERENCE, hypothesis)

    assert s.sentences == 4 and s.hypothesis_segments == 3
    # Nearest starts: 0.0, 0.4, |10.0 - 7.5| = 2.5, 1.0 (the dropped one still has a nearest).
    assert s.start_errors_s == (0.0, 0.4, 2.5, 1.0)
    assert s.starts_within(0.5) == 0.5  # 0.0 and 0.4
    assert s.starts_within(0.3) == 0.25  # 0.0 only: 0.4 late misses 0.3
    assert s.median_start_error_s == 0.4  # nearest rank: the 2nd of 0.0, 0.4, 1.0, 2.5
    assert s.p90_start_error_s == 2.5
    assert s.dropped == 1 and s.looping_segments == 1 and s.repeated_segments == 0
    # CER over the whole recording: ネコガネテイル (7) deleted, サイサイサイ (6) inserted.
    expected = score("".join(r["kana"] for r in REFERENCE), "".join(h["text"] for h in hypothesis))
    assert (s.kana_errors, s.kana_chars) == (expected.kana_errors, 28) == (13, 28)
    assert s.kana_cer == pytest.approx(13 / 28)
    assert s.row()["starts_within_0.5s"] == 0.5 and s.row()["dropped"] == 1


def test_repeated_windows_and_a_silent_transcript():
    hypothesis = [
        {"start": 0.0, "end": 6.0, "text": "マドヲアケテ"},
        {"start": 6.0, "end": 12.0, "text": "マドヲアケテ。"},  # the same text again
    ]
    s = score_recording(REFERENCE, hypothesis)
    assert s.repeated_segments == 1 and s.looping_segments == 0
    assert s.dropped == 0  # both segments overlap every sentence's time between them

    silent = score_recording(REFERENCE, [])
    assert silent.dropped == 4 and silent.kana_errors == 28 and silent.kana_cer == 1.0
    assert silent.start_errors_s == (math.inf,) * 4 and silent.starts_within(0.5) == 0.0


def test_pipeline_reads_text_hypotheses_into_kana():
    hypothesis = [{"start": r["start"], "end": r["end"], "text": r["text"]} for r in REFERENCE]
    s = score_recording(REFERENCE, hypothesis)
    # Kanji count as errors for a kana model; read by OpenJTalk, the text is the kana.
    assert (s.kana_errors, s.pipeline_errors) == (12, 0)
    assert s.row(pipeline=True)["kana_cer"] == round(s.pipeline_kana_cer, 4)


def test_combine_sums_edits_and_pools_starts():
    a = score_recording(REFERENCE, [{"start": 0.5, "end": 13.0, "text": "マドヲアケテ"}])
    b = score_recording(REFERENCE[:1], [{"start": 0.6, "end": 3.0, "text": "マドヲアケテ"}])
    total = combine([a, b])
    assert isinstance(total, LongFormScore)
    assert (total.recordings, total.sentences) == (2, 5)
    assert (a.kana_errors, b.kana_errors) == (22, 0)  # 3 of 4 sentences deleted in `a`
    assert (total.kana_errors, total.kana_chars) == (22, 28 + 6)
    assert total.kana_cer == pytest.approx(22 / 34)  # a mean of the two rates: 0.39
    assert total.start_errors_s == (0.0, 3.5, 7.0, 10.5, 0.1)
    with pytest.raises(ValueError, match="score at least one recording"):
        combine([])


def test_hypothesis_segments_are_the_timed_ones_else_every_window_at_its_forced_times():
    from whisper_ft.evaluation.longform import hypothesis_segments

    result = {
        "segments": [
            {"start": 0.0, "end": 30.0, "text": " アイ "},
            {"start": 30.0, "end": 41.0, "text": ""},
        ]
    }
    timed = [{"start": 0.5, "end": 1.2, "text": "アイ"}]
    assert hypothesis_segments(result, timed) == (timed, True)
    assert hypothesis_segments(result, None) == (
        [
            {"start": 0.0, "end": 30.0, "text": "アイ"},
            {"start": 30.0, "end": 41.0, "text": ""},
        ],
        False,
    )
