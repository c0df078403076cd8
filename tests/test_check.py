"""The preflight data check: every kind of bad line found on its line, good lines filled, cache."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisper_ft import check
from whisper_ft.check import REASONS, check_manifest, write_report
from whisper_ft.cli import main
from whisper_ft.manifest import ManifestError
from whisper_ft.text import to_kana

STEREO_KANA = "トーキョー・オーサカ"  # the middle dot is punctuation: fine
LONG_TEXT = "今日はとてもいい天気なので、公園まで散歩に行きましょう。" * 30


def sine(path: Path, seconds: float, rate: int = 16000, channels: int = 1) -> Path:
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.1 * np.sin(2 * np.pi * 440 * t)
    sf.write(path, np.stack([wave] * channels, axis=1), rate, subtype="PCM_16")
    return path


def line(utt_id: str, audio: str, text: str, **more) -> str:
    return json.dumps({"id": utt_id, "audio": audio, "text": text, **more}, ensure_ascii=False)


# (line number, id, reason) of every problem in the manifest `bad_manifest` writes
EXPECTED = [
    (3, None, "bad_json"),
    (4, "no_audio", "missing_field"),
    (5, "good", "duplicate_id"),
    (6, "gone", "missing_audio"),
    (7, "zero_bytes", "unreadable_audio"),
    (8, "garbage", "unreadable_audio"),
    (9, "truncated_flac", "unreadable_audio"),
    (10, "no_frames", "empty_audio"),
    (11, "long_audio", "too_long_audio"),
    (12, "no_text", "empty_text"),
    (13, "punctuation", "empty_target"),
    (14, "emoji", "not_katakana"),
    (15, "long_text", "too_many_tokens"),
    (16, "bad_duration", "bad_field"),
]
EXPECTED_COUNTS = {
    "bad_json": 1, "missing_field": 1, "bad_field": 1, "duplicate_id": 1, "empty_text": 1,
    "empty_target": 1, "not_katakana": 1, "too_many_tokens": 1, "missing_audio": 1,
    "unreadable_audio": 3, "empty_audio": 1, "too_long_audio": 1,
}  # fmt: skip


@pytest.fixture
def bad_manifest(tmp_path) -> Path:
    """A manifest with one line of each problem (EXPECTED), three good lines (1, 2, 18) and a
    blank line (17) that must not shift the line numbers."""
    wav = tmp_path / "data" / "wav"  # relative audio paths start at the manifest's folder
    wav.mkdir(parents=True)
    sine(wav / "good.wav", 1.0)
    sine(wav / "stereo24k.wav", 1.5, rate=24000, channels=2)  # neither is a problem
    (wav / "zero.wav").write_bytes(b"")
    (wav / "garbage.wav").write_bytes(bytes(range(256)) * 20)
    sf.write(wav / "no_frames.wav", np.zeros((0, 1)), 16000, subtype="PCM_16")
    sine(wav / "long.wav", 31.0)
    sf.write(wav / "whole.flac", np.sin(np.arange(48000) / 10) * 0.1, 16000)
    flac = (wav / "whole.flac").read_bytes()
    (wav / "truncated.flac").write_bytes(flac[: len(flac) // 2])  # header intact, body cut
    lines = [
        line("good", "wav/good.wav", "今日は晴れです。"),
        line("stereo", str(wav / "stereo24k.wav"), "東京・大阪", kana=STEREO_KANA, duration=9.9),
        '{"id": "broken", "audio": ',
        json.dumps({"id": "no_audio", "text": "はい"}),
        line("good", "wav/good.wav", "同じ id です"),
        line("gone", "wav/gone.wav", "はい"),
        line("zero_bytes", "wav/zero.wav", "はい"),
        line("garbage", "wav/garbage.wav", "はい"),
        line("truncated_flac", "wav/truncated.flac", "はい"),
        line("no_frames", "wav/no_frames.wav", "はい"),
        line("long_audio", "wav/long.wav", "はい"),
        line("no_text", "wav/good.wav", ""),
        line("punctuation", "wav/good.wav", "。、！"),
        line("emoji", "wav/good.wav", "😀"),
        line("long_text", "wav/good.wav", LONG_TEXT),
        line("bad_duration", "wav/good.wav", "はい", duration="long"),
        "",
        line("abc", "wav/good.wav", "ABCです"),
    ]  # fmt: skip
    path = tmp_path / "data" / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def found(result) -> list[tuple[int, str | None, str]]:
    return [(p.line, p.id, p.reason) for p in result.problems]


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


def test_good_lines_come_back_with_kana_and_duration_filled(bad_manifest, tmp_path):
    result = check_manifest(bad_manifest, workers=1, cache_dir=tmp_path)
    good = {u.id: u for u in result.utterances}
    assert list(good) == ["good", "stereo", "abc"]
    assert [u.line for u in result.utterances] == [1, 2, 18]
    assert good["good"].kana == to_kana("今日は晴れです。") == "キョーワハレデス。"
    assert good["good"].duration == 1.0
    assert good["abc"].kana == "エイビーシーデス"  # Latin letters are read out: fine
    # a line's own kana and duration are kept
    assert (good["stereo"].kana, good["stereo"].duration) == (STEREO_KANA, 9.9)


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
    pool = check.ProcessPoolExecutor
    monkeypatch.setattr(check, "ProcessPoolExecutor", lambda **kw: pools.append(kw) or pool(**kw))
    one = check_manifest(bad_manifest, workers=1, cache_dir=tmp_path / "one")
    assert pools == []
    two = check_manifest(bad_manifest, workers=2, cache_dir=tmp_path / "two")
    assert pools == [{"max_workers": 2}] and not two.cached
    assert two.problems == one.problems and two.utterances == one.utterances


def test_an_unchanged_manifest_is_not_checked_twice(bad_manifest, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = check_manifest(bad_manifest, workers=1, cache_dir=cache)
    assert len(list(cache.glob("*.json"))) == 1

    opened = []
    decode = check._decoded_duration_s
    monkeypatch.setattr(check, "_decoded_duration_s", lambda p: opened.append(p) or decode(p))
    again = check_manifest(bad_manifest, workers=1, cache_dir=cache)
    assert again.cached and opened == []
    assert again.problems == first.problems and again.utterances == first.utterances
    assert again.summary().endswith(
        "cached result, audio not reopened (--recheck to check it again)"
    )

    # a deleted audio file, recheck, another target, or a changed manifest: checked again
    (bad_manifest.parent / "wav" / "good.wav").unlink()
    deleted = check_manifest(bad_manifest, workers=1, cache_dir=cache)
    assert not deleted.cached and (1, "good", "missing_audio") in found(deleted)
    rechecked = check_manifest(bad_manifest, workers=1, cache_dir=cache, recheck=True)
    assert not rechecked.cached and found(rechecked) == found(deleted)
    assert not check_manifest(bad_manifest, target="text", workers=1, cache_dir=cache).cached
    with bad_manifest.open("a", encoding="utf-8") as f:
        f.write(line("new", "wav/stereo24k.wav", "はい") + "\n")
    changed = check_manifest(bad_manifest, workers=1, cache_dir=cache)
    assert not changed.cached and changed.n_lines == 18 and changed.utterances[-1].id == "new"
    assert len(list(cache.glob("*.json"))) == 1  # one entry per manifest path


def test_the_same_manifest_bytes_elsewhere_are_checked_again(bad_manifest, tmp_path):
    check_manifest(bad_manifest, workers=1, cache_dir=tmp_path / "cache")
    copy = tmp_path / "elsewhere.jsonl"  # its relative audio paths point where no file is
    copy.write_bytes(bad_manifest.read_bytes())
    result = check_manifest(copy, workers=1, cache_dir=tmp_path / "cache")
    assert not result.cached and (1, "good", "missing_audio") in found(result)


def test_a_symlinked_manifest_is_checked_against_its_own_folder(bad_manifest, tmp_path):
    check_manifest(bad_manifest, workers=1, cache_dir=tmp_path / "cache")
    link = tmp_path / "elsewhere" / "train.jsonl"  # its relative audio paths point nowhere
    link.parent.mkdir()
    link.symlink_to(bad_manifest)
    result = check_manifest(link, workers=1, cache_dir=tmp_path / "cache")
    assert not result.cached and (1, "good", "missing_audio") in found(result)
    assert check_manifest(bad_manifest, workers=1, cache_dir=tmp_path / "cache").cached


def test_an_audio_file_replaced_under_an_unchanged_manifest_is_checked_again(
    bad_manifest, tmp_path
):
    first = check_manifest(bad_manifest, workers=1, cache_dir=tmp_path / "cache")
    audio = first.utterances[0].audio_path(bad_manifest.parent)
    original = audio.read_bytes()
    try:
        audio.write_bytes(b"")  # truncated in place: the manifest's bytes are the same
        again = check_manifest(bad_manifest, workers=1, cache_dir=tmp_path / "cache")
    finally:
        audio.write_bytes(original)
    assert not again.cached and (1, first.utterances[0].id, "unreadable_audio") in found(again)


def test_cli_prints_each_problem_then_counts_then_summary(
    bad_manifest, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("WHISPER_FT_CACHE", str(tmp_path / "cache"))
    before = bad_manifest.read_bytes()
    report = tmp_path / "report.tsv"
    args = ["check-data", str(bad_manifest), "--workers", "1", "--report", str(report)]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 0
    out = capsys.readouterr().out.splitlines()
    rows = [o.split("\t") for o in out[: len(EXPECTED)]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (f"{bad_manifest}:{n}", utt_id or "-", reason) for n, utt_id, reason in EXPECTED
    ]
    counts = [c.split(maxsplit=2) for c in out[len(EXPECTED) : -1]]
    assert [(n, reason) for n, reason, _ in counts] == [
        (str(n), f"{reason}:") for reason, n in EXPECTED_COUNTS.items()
    ]
    assert counts[-1][2] == REASONS["too_long_audio"]
    assert out[-1].startswith(f"data check {bad_manifest}: 14 of 17 lines excluded (bad_json 1")
    assert out[-1].endswith(f"; report: {report}")

    with report.open(encoding="utf-8") as f:
        written = list(csv.DictReader(f, delimiter="\t"))
    assert list(written[0]) == ["line", "id", "reason", "detail"]
    assert [(int(r["line"]), r["id"] or None, r["reason"]) for r in written] == EXPECTED

    with pytest.raises(SystemExit) as exit_:
        main([*args, "--strict"])
    assert exit_.value.code == 1
    assert "cached result" in capsys.readouterr().out.splitlines()[-1]
    assert bad_manifest.read_bytes() == before


def test_strict_passes_a_clean_manifest(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WHISPER_FT_CACHE", str(tmp_path / "cache"))
    sine(tmp_path / "a.wav", 0.5)
    manifest = tmp_path / "clean.jsonl"
    manifest.write_text(line("a", "a.wav", "はい") + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        main(["check-data", str(manifest), "--strict", "--workers", "1"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"data check {manifest}: 0 of 1 lines excluded\n"


def test_progress_bar_only_for_large_manifests(tmp_path, capsys):
    sine(tmp_path / "a.wav", 0.1)
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    small.write_text(line("a", "a.wav", "はい") + "\n", encoding="utf-8")
    lines = [line(f"u{i}", "a.wav", "はい") for i in range(check.PROGRESS_MIN_LINES)]
    large.write_text("\n".join(lines) + "\n", encoding="utf-8")
    check_manifest(small, workers=1, cache_dir=tmp_path / "cache")
    assert capsys.readouterr().err == ""
    result = check_manifest(large, workers=1, cache_dir=tmp_path / "cache")
    assert len(result.utterances) == check.PROGRESS_MIN_LINES
    assert f"{check.PROGRESS_MIN_LINES}/{check.PROGRESS_MIN_LINES}" in capsys.readouterr().err


def test_write_report_and_a_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="no such manifest"):
        check_manifest(tmp_path / "none.jsonl", cache_dir=tmp_path)
    result = check.CheckResult(
        tmp_path / "m.jsonl", 1, [], [check.Problem(1, None, "bad_json", "x")]
    )
    path = write_report(result, tmp_path / "r" / "report.tsv")
    assert path.is_absolute() and path.read_text() == "line\tid\treason\tdetail\n1\t\tbad_json\tx\n"


def test_several_manifests_get_a_report_each_in_the_report_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WHISPER_FT_CACHE", str(tmp_path / "cache"))
    sine(tmp_path / "a.wav", 0.5)
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text(line("a", "a.wav", "はい") + "\n", encoding="utf-8")
    val.write_text(line("b", "b.wav", "はい") + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        main(
            ["check-data", str(train), str(val), "--workers", "1", "--report", str(tmp_path / "r")]
        )
    assert exit_.value.code == 0
    assert (tmp_path / "r" / "train.tsv").read_text() == "line\tid\treason\tdetail\n"
    assert "\tmissing_audio\t" in (tmp_path / "r" / "val.tsv").read_text()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"data check {train}: 0 of 1 lines excluded; report: {tmp_path}/r/train.tsv"
    assert out[1].startswith(f"{val}:1\tb\tmissing_audio\t")

    (tmp_path / "other").mkdir()
    same_stem = tmp_path / "other" / "train.jsonl"
    same_stem.write_bytes(train.read_bytes())
    with pytest.raises(SystemExit, match="several manifests named train"):
        main(["check-data", str(train), str(same_stem), "--report", str(tmp_path / "r")])


def test_a_damaged_cache_file_means_checking_again(tmp_path):
    sine(tmp_path / "a.wav", 0.5)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(line("a", "a.wav", "はい") + "\n", encoding="utf-8")
    check_manifest(manifest, workers=1, cache_dir=tmp_path / "cache")
    [entry] = (tmp_path / "cache").glob("*.json")
    entry.write_text(entry.read_text()[:-20])
    result = check_manifest(manifest, workers=1, cache_dir=tmp_path / "cache")
    assert not result.cached and [u.duration for u in result.utterances] == [0.5]
    assert check_manifest(manifest, workers=1, cache_dir=tmp_path / "cache").cached
