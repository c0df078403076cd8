"""Helpers shared by the tests of `whisper_ft.corpora`: audio made in the test, manifests
read back."""

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisper_ft.cli.entry import main
from whisper_ft.manifest import Utterance, read_manifest
from whisper_ft.text import normalize, to_kana

SENTENCES = ["今日はいい天気ですね。", "駅までバスで行きます。", "窓を開けてください。"]
MORE = ["猫が庭で寝ています。", "お茶を一杯ください。", "海で泳ぎました。"]


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


def read_splits(paths: dict[str, Path]) -> dict[str, list[Utterance]]:
    assert set(paths) == {"train", "val", "test"}
    for name, path in paths.items():
        assert path == path.parent / f"{name}.jsonl" and path.is_file()
    return {name: read_manifest(path) for name, path in paths.items()}


def assert_disjoint(splits: dict[str, list[Utterance]]) -> None:
    speakers = {name: {u.speaker for u in us} for name, us in splits.items()}
    sentences = {name: {normalize(u.text) for u in us} for name, us in splits.items()}
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not speakers[a] & speakers[b], (a, b)
        assert not sentences[a] & sentences[b], (a, b)
    assert splits["val"] and splits["test"]


def run_cli(argv: list[str]) -> int | str:
    """`python -m whisper_ft ARGV`'s exit code: 0, or the one `error: …` line it ends with."""
    with pytest.raises(SystemExit) as done:
        main(argv)
    return done.value.code
