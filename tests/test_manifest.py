import json
from pathlib import Path

import pytest

from whisper_ft.manifest import ManifestError, Utterance, path_ids, read_manifest, write_manifest


def test_round_trip_keeps_fields_extras_and_line_numbers(tmp_path):
    utterances = [
        Utterance("a", "wav/a.wav", "原文", kana="ゲンブン", duration=1.5, speaker="s1"),
        Utterance("b", "/abs/b.wav", "二つ目", extra={"gender": "f"}),
    ]
    path = write_manifest(tmp_path / "m.jsonl", utterances)
    back = read_manifest(path)
    assert [u.line for u in back] == [1, 2]
    assert back[0].kana == "ゲンブン" and back[0].duration == 1.5 and back[0].speaker == "s1"
    assert back[1].extra == {"gender": "f"} and back[1].kana is None
    assert back[0].audio_path(tmp_path) == tmp_path / "wav/a.wav"
    assert str(back[1].audio_path(tmp_path)) == "/abs/b.wav"
    assert "原文" in path.read_text(encoding="utf-8")  # UTF-8, not \u escapes
    assert not list(tmp_path.glob(".*tmp"))


def _manifest(tmp_path, lines: list[str]):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"id": "x", "audio": "x.wav"', "not valid JSON"),
        ('["x", "x.wav"]', "expected a JSON object"),
        ('{"id": "x", "audio": "x.wav"}', "missing or empty text"),
        ('{"id": "x", "audio": "x.wav", "text": ""}', "missing or empty text"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, bad_line, message):
    good = json.dumps({"id": "ok", "audio": "ok.wav", "text": "t"})
    path = _manifest(tmp_path, [good, "", bad_line])
    with pytest.raises(ManifestError, match=f"{path}:3: {message}"):
        read_manifest(path)


def test_duplicate_id_names_both_lines(tmp_path):
    line = json.dumps({"id": "dup", "audio": "a.wav", "text": "t"})
    path = _manifest(tmp_path, [line, line])
    with pytest.raises(ManifestError, match=r"m.jsonl:2: id 'dup' already used on line 1"):
        read_manifest(path)


def test_missing_manifest_says_how_to_make_one(tmp_path):
    with pytest.raises(ManifestError, match="prepare"):
        read_manifest(tmp_path / "none.jsonl")


def test_path_ids_add_parent_folders_only_where_names_repeat():
    paths = [Path("/c/s1/001.wav"), Path("/c/s2/001.wav"), Path("/c/s2/002.flac")]
    assert path_ids(paths) == ["s1_001", "s2_001", "002"]
    # Same folder name too: go up until the paths differ.
    assert path_ids([Path("/a/x/1.wav"), Path("/b/x/1.wav")]) == ["a_x_1", "b_x_1"]
