"""Helpers shared by the tests of the data check (`check`, `check_lines`, `check_cache`):
audio made in the test, and a manifest with one line of each problem."""

import json
from pathlib import Path

import numpy as np
import soundfile as sf

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


def write_bad_manifest(tmp_path: Path) -> Path:
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
