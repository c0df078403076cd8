"""More corpus sources: CSV (two forms), Common Voice TSV, a folder of transcribed audio,
Hugging Face datasets (save_to_disk, audiofolder), merging manifests, and `--target`."""

import io
import json
import re
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisper_ft.cli import main
from whisper_ft.manifest import Utterance, read_manifest, write_manifest
from whisper_ft.sources import (
    SplitOptions,
    path_ids,
    prepare_csv,
    prepare_folder,
    prepare_hf,
    prepare_merge,
    prepare_tsv,
    read_folder,
)
from whisper_ft.text import to_kana

SENTENCES = ["今日はいい天気ですね。", "駅までバスで行きます。", "窓を開けてください。"]
MORE = ["猫が庭で寝ています。", "お茶を一杯ください。", "海で泳ぎました。"]


def hf_datasets():
    """Hugging Face `datasets`, or skip: run from a clone without it, `import datasets` finds
    this repository's datasets/ folder as an empty namespace package."""
    datasets = pytest.importorskip("datasets")
    if getattr(datasets, "__file__", None) is None:
        pytest.skip("Hugging Face datasets is not installed (requirements-optional.txt)")
    return datasets


def write_audio(path: Path, seconds: float, rate: int = 16_000, channels: int = 1) -> float:
    """A 220-Hz sine of `seconds` at `rate` with `channels` (24 kHz stereo is left as it is:
    prepare only reads the header; conversion happens when the audio is loaded)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = round(seconds * rate)
    wave = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / rate)
    sf.write(path, np.stack([wave] * channels, axis=1), rate)
    return n / rate


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_utterance(u: Utterance, manifest: Path, *, text: str, seconds: float) -> None:
    """Audio resolves to an existing file, text as given, kana made by OpenJTalk, duration."""
    assert u.audio_path(manifest.parent).is_file()
    assert u.text == text
    assert (
        u.kana == to_kana(text)
        and u.kana
        and all(0x30A0 <= ord(c) <= 0x30FF or unicodedata.category(c)[0] == "P" for c in u.kana)
    ), u.kana  # katakana (ー and ・ included), punctuation passed through
    assert u.target == "kana"
    assert u.duration == pytest.approx(seconds, abs=1e-3)


def test_path_ids_add_parent_folders_only_where_names_repeat():
    paths = [Path("/c/s1/001.wav"), Path("/c/s2/001.wav"), Path("/c/s2/002.flac")]
    assert path_ids(paths) == ["s1_001", "s2_001", "002"]
    # Same folder name too: go up until the paths differ.
    assert path_ids([Path("/a/x/1.wav"), Path("/b/x/1.wav")]) == ["a_x_1", "b_x_1"]


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
    with pytest.raises(ValueError, match="--split needs a speaker.*6 have none.*speaker` column"):
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
    assert done.value.code == 1
    assert "error: --val-speakers and --test-speakers need --split" in capsys.readouterr().err


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


def audio_bytes(seconds: float, rate: int = 16_000, fmt: str = "WAV") -> bytes:
    """An encoded audio file in memory, as a Hugging Face dataset holds it."""
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(np.arange(round(seconds * rate)) / 10), rate, format=fmt)
    return buffer.getvalue()


def test_hf_saved_dataset_writes_bytes_and_refers_to_paths(tmp_path, capsys):
    datasets = hf_datasets()
    train_audio = [
        {"bytes": audio_bytes(0.5, 24_000), "path": "clips/t1.wav"},
        {"bytes": audio_bytes(0.6, fmt="FLAC"), "path": None},  # suffix from the bytes
        {"bytes": audio_bytes(0.3), "path": "clips/t3.wav"},  # empty text: never written
    ]
    on_disk = tmp_path / "elsewhere" / "kept.wav"
    kept_seconds = write_audio(on_disk, 0.9)
    # save_to_disk embeds the files an Audio column names; paths stay paths as strings.
    splits = {
        "train": {"audio": train_audio, "sentence": [SENTENCES[0], SENTENCES[1], ""]},
        "validation": {"audio": [{"bytes": audio_bytes(0.7), "path": "v1.wav"}]},
        "test": {"audio": [str(on_disk), str(tmp_path / "gone.wav")], "sentence": MORE[:2]},
    }
    splits["validation"]["sentence"] = [MORE[2]]
    dataset = {}
    for name, columns in splits.items():
        columns["client_id"] = [f"c{i}" for i in range(len(columns["sentence"]))]
        dataset[name] = datasets.Dataset.from_dict(columns)
        if name != "test":
            dataset[name] = dataset[name].cast_column("audio", datasets.Audio(decode=False))
    saved = tmp_path / "ds"
    datasets.DatasetDict(dataset).save_to_disk(str(saved))

    out = tmp_path / "out"
    paths = prepare_hf(saved, out, text_column="sentence", speaker_column="client_id")

    assert paths == {name: out / f"{name}.jsonl" for name in ("train", "val", "test")}
    train, val, test = (read_manifest(paths[name]) for name in ("train", "val", "test"))
    assert [(u.id, u.audio, u.speaker) for u in train + val + test] == [
        ("t1", "audio/train/t1.wav", "c0"),
        ("train_000001", "audio/train/train_000001.flac", "c1"),
        ("v1", "audio/val/v1.wav", "c0"),
        ("kept", str(on_disk), "c0"),  # referred to where it is
    ]
    assert (out / "audio" / "train" / "t1.wav").read_bytes() == train_audio[0]["bytes"]
    assert sorted(p.name for p in (out / "audio" / "train").iterdir()) == [
        "t1.wav",
        "train_000001.flac",
    ]
    texts = [SENTENCES[0], SENTENCES[1], MORE[2], MORE[0]]
    for u, text, seconds in zip(
        train + val + test, texts, [0.5, 0.6, 0.7, kept_seconds], strict=True
    ):
        assert_utterance(u, paths["train"], text=text, seconds=seconds)
    report = capsys.readouterr().out
    assert "skipped: 2 (audio file missing: 1, empty text: 1)" in report
    assert f"empty text, e.g. {saved}[train][2]" in report
    assert f"audio file missing, e.g. {saved}[test][1]" in report


def test_hf_audiofolder_without_decoding(tmp_path, monkeypatch):
    datasets = hf_datasets()
    # Finding an audiofolder's splits leaves a lock file in the datasets cache: keep it here.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    root = tmp_path / "af"
    seconds = {
        "a": write_audio(root / "train" / "s1" / "a.wav", 0.5, rate=24_000, channels=2),
        "b": write_audio(root / "train" / "s2" / "b.wav", 0.6),
        "c": write_audio(root / "test" / "c.wav", 0.7),
    }
    (root / "train" / "metadata.csv").write_text(
        f"file_name,transcription,speaker\ns1/a.wav,{SENTENCES[0]},s1\ns2/b.wav,{SENTENCES[1]},s2\n",
        encoding="utf-8",
    )
    (root / "test" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "c.wav", "transcription": MORE[0], "speaker": "s3"}) + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    paths = prepare_hf(root, out, text_column="transcription", speaker_column="speaker")

    assert set(paths) == {"train", "test"}
    train, test = read_manifest(paths["train"]), read_manifest(paths["test"])
    assert [(u.id, u.speaker, u.audio) for u in train + test] == [
        ("a", "s1", str(root / "train" / "s1" / "a.wav")),
        ("b", "s2", str(root / "train" / "s2" / "b.wav")),
        ("c", "s3", str(root / "test" / "c.wav")),
    ]
    for u, text in zip(train + test, [SENTENCES[0], SENTENCES[1], MORE[0]], strict=True):
        assert_utterance(u, paths["train"], text=text, seconds=seconds[u.id])
    assert not (out / "audio").exists()  # files on disk are referred to, never copied

    with pytest.raises(ValueError, match="no column 'text'.*--text-column"):
        prepare_hf(root, out)


def test_hf_one_split_is_all_or_split(tmp_path):
    datasets = hf_datasets()
    rows = [(s, f"s{k // 2}") for k, s in enumerate(SENTENCES + MORE)]
    saved = tmp_path / "ds"
    datasets.Dataset.from_dict(
        {
            "audio": [{"bytes": audio_bytes(0.4), "path": f"u{k}.wav"} for k in range(len(rows))],
            "text": [text for text, _ in rows],
            "speaker": [speaker for _, speaker in rows],
        }
    ).cast_column("audio", datasets.Audio(decode=False)).save_to_disk(str(saved))

    paths = prepare_hf(saved, tmp_path / "all", speaker_column="speaker", target="text")
    assert list(paths) == ["all"]
    lines = read_lines(paths["all"])
    assert [line["id"] for line in lines] == [f"u{k}" for k in range(6)]
    assert all(line["target"] == "text" and "kana" not in line for line in lines)

    split = prepare_hf(saved, tmp_path / "split", speaker_column="speaker", split=SplitOptions())
    assert set(split) == {"train", "val", "test"}
    assert sum(len(read_manifest(p)) for p in split.values()) == 6

    with pytest.raises(ValueError, match="no column 'sound'.*--audio-column"):
        prepare_hf(saved, tmp_path / "x", audio_column="sound")


def test_hf_without_datasets_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now fails
    with pytest.raises(ModuleNotFoundError, match="pip install datasets"):
        prepare_hf(tmp_path, tmp_path / "out")
    with pytest.raises(SystemExit) as done:
        main(["prepare", "hf", str(tmp_path), "--out", str(tmp_path / "out")])
    assert done.value.code == 1
    assert "error: prepare hf reads" in capsys.readouterr().err


def test_hf_is_not_fooled_by_the_repositorys_datasets_folder(tmp_path, monkeypatch):
    import types

    namespace = types.ModuleType("datasets")  # what `import datasets` finds without the package
    namespace.__path__ = [str(Path(__file__).parents[1] / "datasets")]
    monkeypatch.setitem(sys.modules, "datasets", namespace)
    with pytest.raises(ModuleNotFoundError, match="requirements-optional.txt"):
        prepare_hf(tmp_path, tmp_path / "out")


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
    with pytest.raises(ValueError, match="different targets: kana .*text .*--target"):
        prepare_merge([kana, text], out)

    prepare_merge([kana, text], out, target="kana")
    merged = read_manifest(out)
    assert [(u.kana, u.target) for u in merged] == [
        ("キョーワ", "kana"),  # kept as it was made
        (to_kana(SENTENCES[1]), "kana"),  # filled
    ]


def test_merge_refuses_a_folder_or_a_repeated_input(tmp_path):
    a = make_manifest(tmp_path / "a", [("k", 0.5, SENTENCES[0])])
    with pytest.raises(ValueError, match="give --out a .jsonl path"):
        prepare_merge([a], tmp_path / "merged")
    with pytest.raises(ValueError, match="named more than once"):
        prepare_merge([a, tmp_path / "a" / "." / "train.jsonl"], tmp_path / "m.jsonl")
