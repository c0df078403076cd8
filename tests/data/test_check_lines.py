"""The checks of one line and its audio: every kind of bad line found on its line, with its
reason; targets; workers."""

from pathlib import Path

import pytest
from check_helpers import EXPECTED, EXPECTED_COUNTS, found, line, sine, write_bad_manifest

from whisper_ft.data import check as check_lines
from whisper_ft.data.check import REASONS, check_manifest, run_jobs


@pytest.fixture
def bad_manifest(tmp_path) -> Path:
    return write_bad_manifest(tmp_path)


def test_every_bad_line_is_reported_on_its_line_with_its_reason(bad_manifest, tmp_path):
    before = bad_manifest.read_bytes()
    result = check_manifest(bad_manifest, workers=1, cache_dir=tmp_path / "cache")

    assert found(result) == EXPECTED
    assert result.n_lines == 17 and result.n_excluded == len(EXPECTED) and not result.cached
    assert result.counts() == EXPECTED_COUNTS
    assert list(result.counts()) == list(REASONS)  # every reason, in the table's order
    detail = {p.id: p.detail for p in result.problems}
    assert "line 1" in detail["good"]  # the duplicate names the first line
    assert "31.0 s" in detail["long_audio"] and "30-s window" in detail["long_audio"]
    assert "0-byte" in detail["zero_bytes"] and "decod" in detail["truncated_flac"]
    assert "U+1F600" in detail["emoji"] and "OpenJTalk" in detail["emoji"]
    assert "more than the decoder's 448" in detail["long_text"]
    assert bad_manifest.read_bytes() == before  # never rewritten
    assert result.summary() == (
        f"data check {bad_manifest}: 14 of 17 lines excluded (bad_json 1, missing_field 1, "
        "bad_field 1, duplicate_id 1, empty_text 1, empty_target 1, not_katakana 1, "
        "too_many_tokens 1, missing_audio 1, unreadable_audio 3, empty_audio 1, too_long_audio 1)"
    )


def test_text_target_skips_the_kana_checks(bad_manifest, tmp_path):
    result = check_manifest(bad_manifest, target="text", workers=1, cache_dir=tmp_path)
    problems = found(result)
    assert (14, "emoji", "not_katakana") not in problems
    assert (13, "punctuation", "empty_target") in problems  # nothing to learn either way
    good = {u.id: u for u in result.utterances}
    assert "emoji" in good and good["good"].kana is None  # no kana made for a text target
    assert result.target == "text" and good["good"].duration == 1.0


def test_target_is_read_from_the_lines_and_must_agree(tmp_path):
    sine(tmp_path / "a.wav", 0.5)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "\n".join(
            [line("a", "a.wav", "😀", target="text"), line("b", "a.wav", "はい", target="kana"),
             line("c", "a.wav", "はい", target="romaji")]
        ), encoding="utf-8",
    )  # fmt: skip
    result = check_manifest(manifest, workers=1, cache_dir=tmp_path / "cache")
    assert result.target == "text" and [u.id for u in result.utterances] == ["a"]
    assert found(result) == [(2, "b", "bad_field"), (3, "c", "bad_field")]
    assert "line 1 has 'text'" in result.problems[0].detail
    # an explicit target overrides the lines' (a bad value stays bad)
    result = check_manifest(manifest, target="kana", workers=1, cache_dir=tmp_path / "cache")
    assert found(result) == [(1, "a", "not_katakana"), (3, "c", "bad_field")]


def test_two_workers_give_the_same_result_as_one(bad_manifest, tmp_path, monkeypatch):
    pools = []
    pool = check_lines.ProcessPoolExecutor
    monkeypatch.setattr(
        check_lines, "ProcessPoolExecutor", lambda **kw: pools.append(kw) or pool(**kw)
    )
    one = check_manifest(bad_manifest, workers=1, cache_dir=tmp_path / "one")
    assert pools == []
    two = check_manifest(bad_manifest, workers=2, cache_dir=tmp_path / "two")
    assert pools == [{"max_workers": 2}] and not two.cached
    assert two.problems == one.problems and two.utterances == one.utterances


def test_a_worker_count_below_one_is_refused_by_its_parameter_name():
    with pytest.raises(ValueError, match="^`workers` must be at least 1, got 0"):
        run_jobs([], 0, desc="checking", show=False)
