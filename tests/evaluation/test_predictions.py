"""A tested run's per-utterance results: predictions.tsv read (bad rows named by line),
aligned by character, summed by speaker, the worst first."""

import re
import unicodedata

import pytest
from report_helpers import write_predictions

from whisper_ft.evaluation.predictions import (
    Prediction,
    ReportError,
    aligned,
    by_speaker,
    read_predictions,
    worst_utterances,
)


def display_width(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


def test_aligned_marks_substitution_insertion_deletion():
    assert aligned("アイウエオ", "アイカエオオ") == ("アイウエ　オ", "アイカエオオ", "　　Ｓ　Ｉ　")
    assert aligned("アイウ", "アウ") == ("アイウ", "ア　ウ", "　Ｄ　")
    assert aligned("タチ", "") == ("タチ", "　　", "ＤＤ")
    assert aligned("AB", "AC") == ("AB", "AC", " S")


def test_aligned_lines_keep_columns_with_mixed_widths():
    ref, hyp, marks = aligned("ABアイ", "AカアイX")
    # B→カ is written full-width (Ｂ over カ), the inserted X half-width.
    assert (ref, hyp, marks) == ("AＢアイ ", "AカアイX", " Ｓ　　I")
    assert display_width(ref) == display_width(hyp) == display_width(marks)


def test_read_predictions_and_bad_rows(tmp_path):
    path = write_predictions(tmp_path)
    predictions = read_predictions(path)
    assert predictions[0] == Prediction("u1", "アイウエオ", "アイカエオオ", 0.4, "spk_a")
    assert [p.errors for p in predictions] == [2, 0, 1, 2]
    assert predictions[3].hypothesis == ""

    with path.open("a", encoding="utf-8") as f:
        f.write("u5\tアイ\tアイ\tnot-a-number\tspk_a\n")
    with pytest.raises(
        ReportError, match=rf"{re.escape(str(path))}:6: expected 5 tab-separated fields"
    ):
        read_predictions(path)
    path.write_text("id\treference\n", encoding="utf-8")
    with pytest.raises(ReportError, match=rf"{re.escape(str(path))}:1: the header is not"):
        read_predictions(path)


def test_a_tests_predictions_carry_the_looping_signs_and_read_back(tmp_path):
    from whisper_ft.evaluation.metrics import score
    from whisper_ft.training.results import write_test_report

    looping = score("アイウ", "アイウウウウウウ", hit_budget=True)  # cut at its budget, repeating
    fine = score("カキク", "カキ")
    path, _ = write_test_report(tmp_path, [("b", "s2", fine), ("a", "s1", looping)], {})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t")[-3:] == ["hit_budget", "loop", "insertions"]
    assert lines[1].split("\t")[-3:] == ["1", "1", "5"] and lines[2].split("\t")[-3:] == [
        "0",
        "0",
        "0",
    ]
    assert [p.id for p in read_predictions(path)] == ["a", "b"]  # the 5 columns report reads
    with path.open("a", encoding="utf-8") as f:
        f.write("c\tア\tア\t0.0\ts1\n")  # the looping columns missing
    with pytest.raises(ReportError, match=r":4: expected 8 tab-separated fields"):
        read_predictions(path)


def test_by_speaker_sums_edits_and_worst_counts_edits(tmp_path):
    predictions = read_predictions(write_predictions(tmp_path))
    # spk_b: (1 + 2) / (5 + 2); spk_a: (2 + 0) / (5 + 3); worst CER first
    assert by_speaker(predictions) == [("spk_b", 2, 3, 7, 3 / 7), ("spk_a", 2, 2, 8, 0.25)]
    # most edits first (u1 and u4 have 2: by id), u2 without errors never listed
    assert [p.id for p in worst_utterances(predictions, 10)] == ["u1", "u4", "u3"]
    assert [p.id for p in worst_utterances(predictions, 1)] == ["u1"]
