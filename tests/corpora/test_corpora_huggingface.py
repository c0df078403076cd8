"""`corpora.huggingface`: save_to_disk datasets and audiofolders, never decoded through
`datasets`."""

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpora_helpers import (
    MORE,
    SENTENCES,
    assert_utterance,
    read_lines,
    write_audio,
)

from whisper_ft.cli.entry import main
from whisper_ft.corpora.huggingface import prepare_hf
from whisper_ft.corpora.split import SplitOptions
from whisper_ft.manifest import read_manifest


def hf_datasets():
    """Hugging Face `datasets`, or skip: run from a clone without it, `import datasets` finds
    this repository's datasets/ folder as an empty namespace package."""
    datasets = pytest.importorskip("datasets")
    if getattr(datasets, "__file__", None) is None:
        pytest.skip("Hugging Face datasets is not installed (requirements-optional.txt)")
    return datasets


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

    with pytest.raises(ValueError, match="no column 'text'.*`text_column`"):
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

    with pytest.raises(ValueError, match="no column 'sound'.*`audio_column`"):
        prepare_hf(saved, tmp_path / "x", audio_column="sound")


def test_hf_without_datasets_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now fails
    with pytest.raises(ModuleNotFoundError, match="pip install datasets"):
        prepare_hf(tmp_path, tmp_path / "out")
    with pytest.raises(SystemExit) as done:
        main(["prepare", "hf", str(tmp_path), "--out", str(tmp_path / "out")])
    assert str(done.value.code).startswith("error: prepare hf reads")


def test_hf_is_not_fooled_by_the_repositorys_datasets_folder(tmp_path, monkeypatch):
    import types

    namespace = types.ModuleType("datasets")  # what `import datasets` finds without the package
    namespace.__path__ = [str(Path(__file__).parents[2] / "datasets")]
    monkeypatch.setitem(sys.modules, "datasets", namespace)
    with pytest.raises(ModuleNotFoundError, match="requirements-optional.txt"):
        prepare_hf(tmp_path, tmp_path / "out")
