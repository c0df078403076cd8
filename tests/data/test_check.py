"""The preflight data check of a manifest: good lines filled, the TSV report, the `check-data`
command."""

import csv
from pathlib import Path

import pytest
from check_helpers import (
    EXPECTED,
    EXPECTED_COUNTS,
    STEREO_KANA,
    line,
    sine,
    write_bad_manifest,
)

from whisper_ft.cli.entry import main
from whisper_ft.data import check
from whisper_ft.data.check import REASONS, CheckResult, Problem, check_manifest, write_report
from whisper_ft.manifest import ManifestError
from whisper_ft.text import to_kana


@pytest.fixture
def bad_manifest(tmp_path) -> Path:
    return write_bad_manifest(tmp_path)


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
    result = CheckResult(tmp_path / "m.jsonl", 1, [], [Problem(1, None, "bad_json", "x")])
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
    with pytest.raises(SystemExit, match="several manifests named train.*its own --report"):
        main(["check-data", str(train), str(same_stem), "--report", str(tmp_path / "r")])
    # the library names its parameter; the command line above named the flag
    with pytest.raises(ManifestError, match="several manifests named train.*its own `report`"):
        check.check_data([str(train), str(same_stem)], report=tmp_path / "r")


def test_check_data_flags_reach_the_check(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WHISPER_FT_CACHE", str(tmp_path / "cache"))
    sine(tmp_path / "a.wav", 0.5)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(line("a", "a.wav", "😀") + "\n", encoding="utf-8")
    args = ["check-data", str(manifest), "--workers", "1"]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--strict"])
    assert exit_.value.code == 1
    assert "\tnot_katakana\t" in capsys.readouterr().out
    # --target text: no kana checks; --recheck: the audio is opened again
    assert check.check_data([str(manifest)], strict=True, target="text", workers=1) == 0
    assert "0 of 1 lines excluded" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--target", "text", "--recheck"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"data check {manifest}: 0 of 1 lines excluded\n"
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--workers", "0"])
    assert exit_.value.code == 2
    assert "--workers: expected a whole number of at least 1" in capsys.readouterr().err


def test_a_target_longer_than_its_audio_can_decode_to_is_warned_about(
    tmp_path, monkeypatch, capsys
):
    """Up to 448 prompt + target tokens passed while decoding emits at most its budget (15
    tokens a second of audio + 8, at most 224): such a line could never be transcribed whole."""
    monkeypatch.setenv("WHISPER_FT_CACHE", str(tmp_path / "cache"))
    sine(tmp_path / "a.wav", 1.0)  # budget 15 + 8 = 23 tokens
    sine(tmp_path / "b.wav", 1.0)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        line("short", "a.wav", "はい") + "\n" + line("long", "b.wav", "アイウエオ" * 12) + "\n",
        encoding="utf-8",
    )
    assert check.check_data([str(manifest)], workers=1) == 0
    out = capsys.readouterr().out
    assert f"warning: 1 line of {manifest} has a target longer than decoding can produce" in out
    assert f"{manifest}:2 (long)" in out and "budget 23" in out and "(short)" not in out
    assert out.endswith(f"data check {manifest}: 0 of 2 lines excluded\n")  # it still trains
