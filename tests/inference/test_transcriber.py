"""The transcription engine: inputs from files, folders and manifests, in order, ids unique."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisper_ft.audio import AudioError
from whisper_ft.cli.entry import main
from whisper_ft.inference.transcriber import collect_inputs
from whisper_ft.manifest import ManifestError


def write_wav(path: Path, seconds: float, freq: float = 440.0, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)
    return path


def write_manifest(path: Path, lines: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return path


def test_inputs_come_in_order_from_files_folders_and_manifests(tmp_path):
    one = write_wav(tmp_path / "one.wav", 0.1)
    folder = tmp_path / "folder"
    write_wav(folder / "b.wav", 0.1)
    write_wav(folder / "a" / "z.flac", 0.1)
    (folder / "notes.txt").write_text("not audio")
    (folder / "._b.wav").write_bytes(b"macOS resource fork")  # hidden: left out
    write_wav(folder / ".cache" / "x.wav", 0.1)
    manifest = write_manifest(
        tmp_path / "data" / "test.jsonl",
        [
            {"id": "u1", "audio": "wav/u1.wav", "text": "あ"},
            {"id": "u2", "audio": str(one), "text": "い"},
        ],
    )
    inputs = collect_inputs([str(one), str(folder), str(manifest)])
    assert [i.path for i in inputs] == [
        str(one),
        str(folder / "a" / "z.flac"),
        str(folder / "b.wav"),
        str(tmp_path / "data" / "wav" / "u1.wav"),  # relative to the manifest's folder
        str(one),
    ]
    assert [i.id for i in inputs] == ["one", "z", "b", "u1", "u2"]
    assert [i.reference for i in inputs] == [None, None, None, "あ", "い"]
    assert inputs[0].where == str(one) and inputs[3].where == f"{manifest}:1"


def test_files_of_the_same_name_get_distinct_ids(tmp_path):
    x = write_wav(tmp_path / "x" / "001.wav", 0.1)
    y = write_wav(tmp_path / "y" / "001.wav", 0.1)
    inputs = collect_inputs([str(x), str(y), str(x)])
    assert [i.id for i in inputs] == ["x_001", "y_001", "x_001-2"]


def test_missing_inputs_are_one_error_naming_each(tmp_path):
    (tmp_path / "empty").mkdir()
    write_wav(tmp_path / "ok.wav", 0.1)
    with pytest.raises(AudioError) as error:
        collect_inputs([str(tmp_path / name) for name in ("ok.wav", "nope.wav", "empty")])
    message = str(error.value)
    assert f"{tmp_path / 'nope.wav'}: no such file or folder" in message
    assert f"{tmp_path / 'empty'}: a folder without audio files" in message
    assert "ok.wav" not in message
    with pytest.raises(ManifestError, match="no such manifest"):
        collect_inputs([str(tmp_path / "missing.jsonl")])
    with pytest.raises(SystemExit) as exit_:
        main(["transcribe", "--model", "random:micro", str(tmp_path / "nope.wav")])
    line = str(exit_.value.code)
    assert line.startswith("error: ") and str(tmp_path / "nope.wav") in line and "\n" not in line


def test_a_transcriber_of_a_model_in_memory_decodes_as_one_that_loads_it():
    import torch

    from whisper_ft.decoding import DecodingSettings
    from whisper_ft.inference.transcriber import Transcriber

    torch.manual_seed(0)
    loaded = Transcriber("random:micro", device="cpu")
    model = loaded.model.train()
    in_memory = Transcriber.from_model(model)
    assert in_memory.model is model and not model.training  # not loaded again; eval mode
    assert in_memory.options == loaded.options and in_memory.load_s == 0.0
    wave = np.sin(np.linspace(0, 800, 16000)).astype(np.float32)
    assert in_memory([wave]) == loaded([wave])
    kana = Transcriber.from_model(model, DecodingSettings(target="kana", kana_decoding=True))
    assert kana.options.suppress_tokens != loaded.options.suppress_tokens  # the settings apply


def _split_inside_a_character(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """`text`'s tokens cut where the first part ends inside a character's bytes."""
    tokens = tokenizer.encode(text)
    for k in range(1, len(tokens)):
        try:
            tokenizer.encoding.decode_bytes(tokens[:k]).decode("utf-8")
        except UnicodeDecodeError:
            return tokens[:k], tokens[k:]
    raise AssertionError(f"no token of {text!r} ends inside a character")


def test_a_timestamp_inside_a_character_cuts_no_character_in_two():
    from whisper.tokenizer import get_tokenizer

    from whisper_ft.inference.transcriber import segment_texts

    tokenizer = get_tokenizer(True, language="ja", task="transcribe")
    first, second = _split_inside_a_character(tokenizer, "鬱蒼とした森")
    t0, t1, t2 = (tokenizer.timestamp_begin + i for i in (0, 50, 100))
    segments = [
        {"seek": 0, "tokens": [t0, *first, t1]},
        {"seek": 0, "tokens": [t1, *second, t2]},
    ]
    # Whisper's own decoding of each segment replaces the cut character on both sides.
    assert "\ufffd" in tokenizer.decode(first) + tokenizer.decode(second)
    texts = segment_texts(segments, tokenizer)
    assert "".join(texts) == "鬱蒼とした森" and "\ufffd" not in "".join(texts)
    assert texts[0] == tokenizer.encoding.decode_bytes(first).decode("utf-8", "ignore")


def test_an_unfinished_character_at_a_window_end_is_dropped_not_carried():
    from whisper.tokenizer import get_tokenizer

    from whisper_ft.inference.transcriber import segment_texts

    tokenizer = get_tokenizer(True, language="ja", task="transcribe")
    first, second = _split_inside_a_character(tokenizer, "鬱蒼とした森")
    t0, t1 = tokenizer.timestamp_begin, tokenizer.timestamp_begin + 50
    texts = segment_texts(
        [{"seek": 0, "tokens": [t0, *first, t1]}, {"seek": 3000, "tokens": [t0, *first, *second]}],
        tokenizer,
    )
    assert texts == [
        tokenizer.encoding.decode_bytes(first).decode("utf-8", "ignore"),
        "鬱蒼とした森",
    ]
