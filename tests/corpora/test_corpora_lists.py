"""`corpora.lists`: CSV, TSV (Common Voice, ReazonSpeech) and folders of transcribed audio."""

import re
from pathlib import Path

import pytest
from corpora_helpers import MORE, SENTENCES, assert_utterance, read_lines, write_audio

from whisper_ft.cli.entry import main
from whisper_ft.corpora.lists import prepare_csv, prepare_folder, prepare_tsv, read_folder
from whisper_ft.corpora.split import SplitOptions
from whisper_ft.manifest import read_manifest


def test_csv_with_header(tmp_path, capsys):
    root = tmp_path / "corpus"
    seconds = {
        "a": write_audio(root / "wav" / "a.wav", 0.5, rate=24_000, channels=2),
        "b": write_audio(root / "wav" / "b.wav", 0.75),
    }
    write_audio(root / "wav" / "c.wav", 0.2)
    csv_path = root / "list.csv"
    csv_path.write_text(
        "audio,text,speaker\n"
        f"wav/a.wav,{SENTENCES[0]},spk1\n"
        f'{root / "wav" / "b.wav"},"{SENTENCES[1]}",spk2\n'  # absolute, quoted
        f"wav/missing.wav,{SENTENCES[2]},spk1\n"
        "wav/c.wav,  ,spk2\n"
        "\n"
        f"wav/a.wav,{MORE[0]},spk1\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    paths = prepare_csv(csv_path, out)

    assert paths == {"all": out / "all.jsonl"} and paths["all"].is_absolute()
    utterances = read_manifest(paths["all"])
    assert [(u.id, u.speaker) for u in utterances] == [("a", "spk1"), ("b", "spk2")]
    for u, text in zip(utterances, SENTENCES, strict=False):
        assert_utterance(u, paths["all"], text=text, seconds=seconds[u.id])
        assert Path(u.audio).is_absolute()
    report = capsys.readouterr().out
    assert "skipped: 3 (audio file listed twice: 1, audio file missing: 1, empty text: 1)" in report
    assert f"audio file listed twice, e.g. {csv_path}:7 (as on {csv_path}:2)" in report
    assert f"audio file missing, e.g. {csv_path}:4" in report
    assert f"empty text, e.g. {csv_path}:5" in report
    assert f"→ {out / 'all.jsonl'}" in report


def test_csv_deepspeech_form_reads_transcript_files(tmp_path, capsys):
    root = tmp_path / "an4"
    seconds = write_audio(root / "wav" / "x1.wav", 0.4)
    write_audio(root / "wav" / "x2.wav", 0.6)
    write_audio(root / "wav" / "x3.wav", 0.6)
    (root / "txt").mkdir()
    # A transcript's line break becomes a space; a BOM is dropped.
    (root / "txt" / "x1.txt").write_text("\ufeff今日は\n晴れです。\n", encoding="utf-8")
    (root / "txt" / "x2.txt").write_text("", encoding="utf-8")
    csv_path = root / "train_manifest.csv"
    csv_path.write_text(
        f"{root / 'wav' / 'x1.wav'},{root / 'txt' / 'x1.txt'}\n"
        "wav/x2.wav,txt/x2.txt\n"
        "wav/x3.wav,txt/x3.txt\n"
        "wav/x1.wav\n",
        encoding="utf-8",
    )
    paths = prepare_csv(csv_path, tmp_path / "out", target="text")

    (line,) = read_lines(paths["all"])
    assert line == {
        "id": "x1",
        "audio": str(root / "wav" / "x1.wav"),
        "text": "今日は 晴れです。",
        "duration": pytest.approx(seconds, abs=1e-3),
        "target": "text",
    }  # no kana for the text target, no speaker in this form
    report = capsys.readouterr().out
    assert "skipped: 3 (empty text: 1, line without 2 fields" in report
    assert f"transcript file missing, e.g. {csv_path}:3" in report


def test_csv_with_an_unknown_first_line_names_the_forms(tmp_path):
    csv_path = tmp_path / "x.csv"
    csv_path.write_text("path,sentence,client\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{re.escape(str(csv_path))}:1: expected a header"):
        prepare_csv(csv_path, tmp_path / "out")


def make_speaker_csv(root: Path, with_speaker: bool = True) -> Path:
    """3 speakers reading 2 sentences of their own each."""
    lines = ["audio,text,speaker" if with_speaker else "audio,text"]
    for k, speaker in enumerate(["s1", "s2", "s3"]):
        for i in range(2):
            write_audio(root / speaker / f"{i}.wav", 0.3 + 0.1 * i)
            row = f"{speaker}/{i}.wav,{(SENTENCES + MORE)[2 * k + i]}"
            lines.append(f"{row},{speaker}" if with_speaker else row)
    csv_path = root / "list.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path


def test_csv_split_is_disjoint_by_speaker(tmp_path):
    csv_path = make_speaker_csv(tmp_path / "c")
    paths = prepare_csv(csv_path, tmp_path / "out", split=SplitOptions(test_speakers=["s2"]))

    assert set(paths) == {"train", "val", "test"}
    splits = {name: read_manifest(path) for name, path in paths.items()}
    speakers = {name: {u.speaker for u in us} for name, us in splits.items()}
    assert speakers["test"] == {"s2"} and len(speakers["train"] | speakers["val"]) == 2
    assert sum(len(us) for us in splits.values()) == 6  # own sentences: nothing dropped
    assert {u.id for u in splits["test"]} == {"s2_0", "s2_1"}  # 0.wav repeats: folder added
    assert not (tmp_path / "out" / "all.jsonl").exists()


def test_split_without_speakers_says_how_to_get_them(tmp_path):
    csv_path = make_speaker_csv(tmp_path / "c", with_speaker=False)
    with pytest.raises(ValueError, match="`split` needs a speaker.*6 have none.*speaker` column"):
        prepare_csv(csv_path, tmp_path / "out", split=SplitOptions())


def test_cli_prepare_csv(tmp_path, capsys):
    csv_path = make_speaker_csv(tmp_path / "c")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as done:
        main(["prepare", "csv", str(csv_path), "--out", str(out), "--split", "--seed", "1"])
    assert done.value.code == 0
    assert sorted(p.name for p in out.iterdir()) == ["test.jsonl", "train.jsonl", "val.jsonl"]
    assert f"→ {out / 'val.jsonl'}" in capsys.readouterr().out

    with pytest.raises(SystemExit) as done:
        main(["prepare", "csv", str(csv_path), "--out", str(out), "--val-speakers", "s1"])
    assert done.value.code == "error: --val-speakers and --test-speakers need --split."


def make_common_voice(root: Path) -> dict[str, float]:
    """A Common Voice folder: train/dev/test.tsv, clips/ (mp3, as CV ships, and wav)."""
    header = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\n"
    rows = {
        "train": [("c1", "cv_1.mp3", '彼は"はい"と言った。'), ("c1", "cv_2.wav", SENTENCES[0])],
        "dev": [("c2", "cv_3.wav", SENTENCES[1]), ("c2", "cv_missing.mp3", SENTENCES[2])],
        "test": [("c3", "cv_4.wav", MORE[0])],
    }
    seconds = {}
    for split, lines in rows.items():
        body = header
        for client, clip, sentence in lines:
            body += f"{client}\t{clip}\t0\t{sentence}\t\t2\n"
            if "missing" not in clip:
                rate = 24_000 if clip.endswith(".mp3") else 16_000
                seconds[Path(clip).stem] = write_audio(root / "clips" / clip, 0.5, rate=rate)
        if split == "train":
            body += "c1\tcv_9.wav\tbroken line\n"
        (root / f"{split}.tsv").write_text(body, encoding="utf-8")
    return seconds


def test_tsv_common_voice_folder(tmp_path, capsys):
    root = tmp_path / "cv-corpus" / "ja"
    seconds = make_common_voice(root)
    out = tmp_path / "out"
    paths = prepare_tsv(root, out)

    assert paths == {name: out / f"{name}.jsonl" for name in ("train", "val", "test")}
    splits = {name: read_manifest(path) for name, path in paths.items()}
    assert [u.id for u in splits["train"]] == ["cv_1", "cv_2"]
    assert [u.id for u in splits["val"]] == ["cv_3"] and [u.id for u in splits["test"]] == ["cv_4"]
    quoted = splits["train"][0]
    assert_utterance(quoted, paths["train"], text='彼は"はい"と言った。', seconds=seconds["cv_1"])
    assert quoted.speaker == "c1" and quoted.audio == str(root / "clips" / "cv_1.mp3")
    report = capsys.readouterr().out
    assert f"audio file missing, e.g. {root / 'dev.tsv'}:3" in report
    assert f"line without the header's 6 fields, e.g. {root / 'train.tsv'}:4" in report


def test_tsv_single_file_is_named_after_it(tmp_path):
    root = tmp_path / "ja"
    make_common_voice(root)
    (root / "test.tsv").rename(root / "validated.tsv")
    paths = prepare_tsv(root / "validated.tsv", tmp_path / "out", target="text")
    assert paths == {"validated": tmp_path / "out" / "validated.jsonl"}
    (line,) = read_lines(paths["validated"])
    assert (line["id"], line["speaker"], line["target"], "kana" in line) == (
        "cv_4",
        "c3",
        "text",
        False,
    )


def test_tsv_reazonspeech_lines_without_a_header(tmp_path, capsys):
    root = tmp_path / "reazon"
    seconds = {"a1": write_audio(root / "000" / "a1.flac", 0.5, rate=24_000)}
    seconds["a2"] = write_audio(root / "001" / "a2.flac", 0.7)
    (root / "train.tsv").write_text(
        f"000/a1.flac\t{SENTENCES[0]}\n001/a2.flac\t{SENTENCES[1]}\n002/a3.flac\n",
        encoding="utf-8",
    )
    paths = prepare_tsv(root / "train.tsv", tmp_path / "out")
    utterances = read_manifest(paths["train"])
    assert [u.id for u in utterances] == ["a1", "a2"]
    assert_utterance(utterances[1], paths["train"], text=SENTENCES[1], seconds=seconds["a2"])
    assert utterances[0].speaker is None
    assert f"line without 2 fields (audio, transcript), e.g. {root / 'train.tsv'}:3" in (
        capsys.readouterr().out
    )


def test_tsv_without_split_files_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="no train.tsv, dev.tsv or test.tsv"):
        prepare_tsv(tmp_path, tmp_path / "out")


def test_folder_of_transcribed_audio(tmp_path, capsys):
    root = tmp_path / "corpus"
    seconds = {
        "spk1_001": write_audio(root / "spk1" / "001.wav", 0.5, rate=24_000, channels=2),
        "b": write_audio(root / "spk1" / "chapter2" / "b.flac", 0.6),
        "c": write_audio(root / "c.wav", 0.7),
        "spk2_001": write_audio(root / "spk2" / "001.wav", 0.8),
    }
    write_audio(root / "spk2" / "untranscribed.wav", 0.2)
    texts = {"spk1_001": SENTENCES[0], "b": SENTENCES[1], "c": SENTENCES[2], "spk2_001": MORE[0]}
    (root / "spk1" / "001.txt").write_text(texts["spk1_001"] + "\n", encoding="utf-8")
    (root / "spk1" / "chapter2" / "b.lab").write_text(texts["b"], encoding="utf-8")
    (root / "c.txt").write_text(texts["c"], encoding="utf-8")
    (root / "spk2" / "001.lab").write_text(texts["spk2_001"], encoding="utf-8")
    (root / "spk2" / "orphan.txt").write_text("音声なし", encoding="utf-8")

    out = tmp_path / "out"
    paths = prepare_folder(root, out)

    utterances = read_manifest(paths["all"])
    assert {u.id: u.speaker for u in utterances} == {
        "c": None,  # directly in the root
        "spk1_001": "spk1",
        "b": "spk1",  # the first folder under the root, not chapter2
        "spk2_001": "spk2",
    }
    for u in utterances:
        assert_utterance(u, paths["all"], text=texts[u.id], seconds=seconds[u.id])
    report = capsys.readouterr().out
    assert (
        "skipped: 2 (audio file without a .txt or .lab transcript: 1, transcript without" in report
    )
    assert str(root / "spk2" / "untranscribed.wav") in report
    assert str(root / "spk2" / "orphan.txt") in report


def test_folder_reports_unreadable_audio_and_does_not_stop(tmp_path):
    root = tmp_path / "corpus"
    write_audio(root / "a.wav", 0.3)
    (root / "a.txt").write_text(SENTENCES[0], encoding="utf-8")
    (root / "b.wav").write_bytes(b"not audio at all")
    (root / "b.txt").write_text(SENTENCES[1], encoding="utf-8")
    utterances, skipped = read_folder(root)
    assert [u.id for u in utterances] == ["a"]
    assert skipped.counts == {"audio file unreadable": 1}
    assert skipped.examples["audio file unreadable"] == [str(root / "b.wav")]


def test_nothing_usable_is_an_error_not_an_empty_manifest(tmp_path):
    root = tmp_path / "corpus"
    write_audio(root / "a.wav", 0.3)
    with pytest.raises(ValueError, match="(?s)no usable utterance.*without a .txt or .lab"):
        prepare_folder(root, tmp_path / "out")
    assert not (tmp_path / "out").exists()
