"""`corpora.merge`: several manifests → one, by duration, ids kept unique."""

from pathlib import Path

import pytest
from corpora_helpers import MORE, SENTENCES, write_audio

from whisper_ft.corpora.merge import prepare_merge
from whisper_ft.manifest import Utterance, read_manifest, write_manifest
from whisper_ft.text import to_kana


def make_manifest(folder: Path, rows: list[tuple[str, float | None, str]], **fields) -> Path:
    """A manifest in `folder`, audio beside it under wav/ (relative paths)."""
    utterances = []
    for utt_id, seconds, text in rows:
        write_audio(folder / "wav" / f"{utt_id}.wav", seconds or 0.5)
        utterances.append(
            Utterance(id=utt_id, audio=f"wav/{utt_id}.wav", text=text, duration=seconds, **fields)
        )
    return write_manifest(folder / "train.jsonl", utterances)


def test_merge_rewrites_paths_filters_and_keeps_ids_unique(tmp_path, capsys):
    a = make_manifest(tmp_path / "jvs", [("x", 1.0, SENTENCES[0]), ("y", 5.0, SENTENCES[1])])
    b = make_manifest(tmp_path / "cv", [("x", None, MORE[0]), ("z", 0.2, MORE[1])])
    with b.open("a", encoding="utf-8") as f:
        f.write('{"id": "w", "audio": "wav/none.wav", "text": "無い"}\nnot json\n')
    out = tmp_path / "merged" / "all.jsonl"

    paths = prepare_merge([a, b], out, min_duration_s=0.3, max_duration_s=4.0)

    assert paths == {"all": out}
    merged = read_manifest(out)
    assert [u.id for u in merged] == ["x", "cv_train_x"]  # the later x takes its manifest's name
    assert [u.audio for u in merged] == ["../jvs/wav/x.wav", "../cv/wav/x.wav"]
    assert all(u.audio_path(out.parent).is_file() for u in merged)
    assert merged[1].duration == pytest.approx(0.5, abs=1e-3)  # read from the header
    report = capsys.readouterr().out
    assert "renamed: 1 ids an earlier line holds, e.g. x → cv_train_x" in report
    assert "dropped by duration: 2 (longer than 4 s: 1, shorter than 0.3 s: 1)" in report
    assert f"audio file missing, e.g. {b}:3" in report
    assert f"bad line (bad_json), e.g. {b}:4: not valid JSON: Expecting value at column 1." in (
        report
    )


def test_merge_targets(tmp_path):
    kana = make_manifest(tmp_path / "a", [("k", 0.5, SENTENCES[0])], kana="キョーワ", target="kana")
    text = make_manifest(tmp_path / "b", [("t", 0.5, SENTENCES[1])], target="text")
    out = tmp_path / "m.jsonl"
    with pytest.raises(ValueError, match="different targets: kana .*text .*`target`"):
        prepare_merge([kana, text], out)

    prepare_merge([kana, text], out, target="kana")
    merged = read_manifest(out)
    assert [(u.kana, u.target) for u in merged] == [
        ("キョーワ", "kana"),  # kept as it was made
        (to_kana(SENTENCES[1]), "kana"),  # filled
    ]


def test_merge_refuses_a_folder_or_a_repeated_input(tmp_path):
    a = make_manifest(tmp_path / "a", [("k", 0.5, SENTENCES[0])])
    with pytest.raises(ValueError, match="give `out` a .jsonl path"):
        prepare_merge([a], tmp_path / "merged")
    with pytest.raises(ValueError, match="named more than once"):
        prepare_merge([a, tmp_path / "a" / "." / "train.jsonl"], tmp_path / "m.jsonl")
