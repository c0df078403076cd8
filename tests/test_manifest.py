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
        ('["x", "x.wav"]', "a JSON list, not an object"),
        ('{"id": "x", "audio": "x.wav"}', "no text; every line needs id, audio, text"),
        ('{"id": "x", "audio": "x.wav", "text": ""}', "text is empty or whitespace"),
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


GOOD = {"id": "good", "audio": "a.wav", "text": "今日は"}
# What a hostile or careless manifest holds, and the one message every reader gives for it.
BAD_LINES = [
    (b'{"id": "b", "audio": "a.wav", "text": "\xff"}', "bad_json", "not UTF-8 (invalid start byte at byte 40); save the manifest as UTF-8"),  # noqa: E501
    (b'{"id": "b", "audio": "a.wav"', "bad_json", "not valid JSON: Expecting ',' delimiter at column 29"),  # noqa: E501
    (b'["b", "a.wav"]', "bad_json", "a JSON list, not an object"),
    (b'{"id": "b", "audio": "a.wav"}', "missing_field", "no text; every line needs id, audio, text"),  # noqa: E501
    (b'{"id": "b", "audio": "a.wav", "text": "t", "duration": "2.0s"}', "bad_field", 'duration "2.0s" is not a number of seconds (write 2.0, not "2.0s")'),  # noqa: E501
    *[
        (b'{"id": "b", "audio": "a.wav", "text": "t", "duration": %s}' % value.encode(), "bad_field", f"duration {shown} is not a finite positive number of seconds; correct it, or delete the key and check-data measures the audio")  # noqa: E501
        for value, shown in [("NaN", "nan"), ("Infinity", "inf"), ("-1.5", "-1.5"), ("0", "0")]
    ],
    (b'{"id": "b", "audio": "a.wav", "text": "t", "target": "romaji"}', "bad_field", "target 'romaji' is not kana or text"),  # noqa: E501
]  # fmt: skip


def _with_audio(tmp_path, lines: list[bytes]):
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "a.wav", np.zeros(16000, dtype=np.float32), 16000)
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize(("line", "reason", "detail"), BAD_LINES)
def test_every_reader_gives_one_message_naming_file_and_line(
    tmp_path, capsys, line, reason, detail
):
    from whisper_ft.corpora.merge import prepare_merge
    from whisper_ft.data.check import check_manifest
    from whisper_ft.inference.transcriber import collect_inputs

    path = _with_audio(tmp_path, [json.dumps(GOOD, ensure_ascii=False).encode(), line])
    message = f"{path}:2: {detail}."
    result = check_manifest(path, workers=1, cache_dir=tmp_path / "cache")
    assert [(p.line, p.reason, p.detail) for p in result.problems] == [(2, reason, detail)]
    assert [u.id for u in result.utterances] == ["good"]
    for read in (read_manifest, collect_inputs):
        with pytest.raises(ManifestError) as e:
            read(path) if read is read_manifest else read([str(path)])
        assert str(e.value) == message and e.value.reason == reason
    prepare_merge([path], tmp_path / "merged.jsonl", min_duration_s=0.5, max_duration_s=60)
    assert f"bad line ({reason}), e.g. {message}" in capsys.readouterr().out
    assert [u.id for u in read_manifest(tmp_path / "merged.jsonl")] == ["good"]


def test_a_utf8_bom_is_not_a_bad_line_anywhere(tmp_path):
    from whisper_ft.data.check import check_manifest
    from whisper_ft.inference.transcriber import collect_inputs

    path = _with_audio(tmp_path, [b"\xef\xbb\xbf" + json.dumps(GOOD).encode()])
    assert [u.id for u in read_manifest(path)] == ["good"]
    assert check_manifest(path, workers=1, cache_dir=tmp_path / "cache").problems == []
    assert [i.id for i in collect_inputs([str(path)])] == ["good"]


def test_write_manifest_refuses_nan_instead_of_writing_non_standard_json(tmp_path):
    path = tmp_path / "m.jsonl"
    with pytest.raises(ManifestError, match=r"m.jsonl: utterance 'a' holds a NaN or infinite"):
        write_manifest(path, [Utterance("a", "a.wav", "t", duration=float("nan"))])
    assert not path.exists()


def test_path_ids_add_parent_folders_only_where_names_repeat():
    paths = [Path("/c/s1/001.wav"), Path("/c/s2/001.wav"), Path("/c/s2/002.flac")]
    assert path_ids(paths) == ["s1_001", "s2_001", "002"]
    # Same folder name too: go up until the paths differ.
    assert path_ids([Path("/a/x/1.wav"), Path("/b/x/1.wav")]) == ["a_x_1", "b_x_1"]
