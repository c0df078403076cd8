"""`corpora.synthetic`: the offline corpus spoken by OpenJTalk, and `prepare synthetic`."""

import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpora_helpers import (
    MORE,
    SENTENCES,
    assert_disjoint,
    read_splits,
    run_cli,
    write_audio,
)

from whisper_ft.corpora.synthetic import (
    SYNTHETIC_SENTENCES,
    prepare_long_recordings,
    prepare_synthetic,
    read_sentences,
)
from whisper_ft.manifest import Utterance, read_manifest, write_manifest
from whisper_ft.text import to_kana

KATAKANA = re.compile(r"^[\u30a0-\u30ff、。？！]+$")  # katakana block (ー and ・ included)
# Read by every speaker, like JVS parallel100.


def test_sentences_asset_is_usable():
    sentences = read_sentences(SYNTHETIC_SENTENCES)  # raises on repeats
    assert len(sentences) >= 200
    for sentence in sentences:
        assert 6 <= len(sentence) <= 30, sentence
        kana = to_kana(sentence)
        assert kana and all(
            0x30A0 <= ord(c) <= 0x30FF or unicodedata.category(c)[0] == "P" for c in kana
        ), (sentence, kana)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("synthetic")
    return out, prepare_synthetic(out, n_sentences=12, n_speakers=3, seed=1)


def test_prepare_synthetic_writes_a_disjoint_corpus(synthetic):
    out, paths = synthetic
    splits = read_splits(paths)
    assert_disjoint(splits)
    # 12 sentences → 1 val, 1 test, 10 train; 3 speakers → one per split, none dropped.
    assert [len(splits[n]) for n in ("train", "val", "test")] == [10, 1, 1]
    assert {u.speaker for us in splits.values() for u in us} == {"syn01", "syn02", "syn03"}
    for u in (u for us in splits.values() for u in us):
        assert not Path(u.audio).is_absolute() and u.audio.startswith(f"wav/{u.speaker}/")
        info = sf.info(str(u.audio_path(out)))
        assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
        assert u.duration == pytest.approx(info.frames / 16_000, abs=1e-3) and u.duration > 0.3
        assert u.kana == to_kana(u.text) and KATAKANA.match(u.kana)
        assert u.text in read_sentences(SYNTHETIC_SENTENCES)


def test_prepare_synthetic_reuses_audio_on_a_rerun(synthetic, capsys):
    out, paths = synthetic
    wavs = sorted((out / "wav").rglob("*.wav"))
    assert len(wavs) == 12
    mtimes = [w.stat().st_mtime_ns for w in wavs]
    manifests = {n: p.read_text(encoding="utf-8") for n, p in paths.items()}

    again = prepare_synthetic(out, n_sentences=12, n_speakers=3, seed=1)

    assert "12 already on disk, synthesising 0" in capsys.readouterr().out
    assert [w.stat().st_mtime_ns for w in sorted((out / "wav").rglob("*.wav"))] == mtimes
    assert {n: p.read_text(encoding="utf-8") for n, p in again.items()} == manifests


def test_prepare_synthetic_rejects_too_few_speakers(tmp_path):
    with pytest.raises(ValueError, match="`n_speakers` must be between 3"):
        prepare_synthetic(tmp_path, n_speakers=2)


def test_cli_prepare_synthetic(tmp_path, capsys):
    out = tmp_path / "syn"
    argv = ["prepare", "synthetic", "--out", str(out), "--n-sentences", "4", "--n-speakers", "3"]
    assert run_cli(argv) == 0
    splits = read_splits({n: out / f"{n}.jsonl" for n in ("train", "val", "test")})
    assert [len(splits[n]) for n in ("train", "val", "test")] == [2, 1, 1]
    assert "dropped by the split: 0" in capsys.readouterr().out


@pytest.fixture
def sources(tmp_path) -> Path:
    """A test.jsonl of 14 sine clips of 2.5-3.8 s (lengths tell them apart), one speaker."""
    lines = []
    for k in range(14):
        seconds = write_audio(tmp_path / "wav" / f"u{k:02d}.wav", 2.5 + 0.1 * k)
        text = (SENTENCES + MORE)[k % 6]
        lines.append(
            Utterance(f"u{k:02d}", f"wav/u{k:02d}.wav", text, to_kana(text), seconds, "spk")
        )
    return write_manifest(tmp_path / "test.jsonl", lines)


def test_prepare_long_recordings_join_utterances_at_known_times(sources, capsys):
    out = sources.parent
    manifest = prepare_long_recordings(out, n_recordings=3, sentences_per_recording=12, seed=3)

    assert manifest == out / "long.jsonl"
    recordings = read_manifest(manifest)
    assert [r.id for r in recordings] == ["long_01", "long_02", "long_03"]
    by_text = {u.id: u for u in read_manifest(sources)}
    for r in recordings:
        wave, rate = sf.read(r.audio_path(out), dtype="float32")
        info = sf.info(str(r.audio_path(out)))
        assert (rate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
        assert r.duration == pytest.approx(len(wave) / rate, abs=1e-3) and r.duration >= 40.0
        segments = r.extra["segments"]
        assert len(segments) >= 12 and r.speaker == "spk"
        assert r.text == "".join(s["text"] for s in segments)
        assert r.kana == "".join(s["kana"] for s in segments) == to_kana(r.text)
        previous_end = 0.0
        for s in segments:
            assert 0.3 - 1e-3 <= s["start"] - previous_end <= 1.2 + 1e-3  # the pause before it
            start, end = round(s["start"] * rate), round(s["end"] * rate)
            # The clip of that length sits at exactly those samples, silence around it.
            source = next(
                u for u in by_text.values() if abs(u.duration - (end - start) / rate) < 1e-3
            )
            expected = sf.read(source.audio_path(out), dtype="float32")[0]
            np.testing.assert_allclose(wave[start:end], expected, atol=1e-4)
            assert not wave[round(previous_end * rate) : start].any()
            previous_end = s["end"]
        trailing = len(wave) / rate - segments[-1]["end"]
        assert 0.3 - 1e-3 <= trailing <= 1.2 + 1e-3
        assert len({s["start"] for s in segments}) == len(segments)
    assert "prepare long: 3 recordings" in capsys.readouterr().out


def test_prepare_long_recordings_reuse_files_on_a_rerun(sources):
    out = sources.parent
    first = prepare_long_recordings(out, n_recordings=2, seed=1).read_text(encoding="utf-8")
    wavs = sorted((out / "long").glob("*.wav"))
    mtimes = [w.stat().st_mtime_ns for w in wavs]

    again = prepare_long_recordings(out, n_recordings=2, seed=1).read_text(encoding="utf-8")
    other = read_manifest(prepare_long_recordings(out, n_recordings=2, seed=2))

    assert again == first and len(wavs) == 2
    assert [w.stat().st_mtime_ns for w in wavs] == mtimes
    assert {r.audio for r in other}.isdisjoint({w.relative_to(out).as_posix() for w in wavs})


def test_prepare_long_recordings_name_the_manifest_when_too_short(sources):
    with pytest.raises(ValueError, match=r"test\.jsonl: 14 utterances, fewer than"):
        prepare_long_recordings(sources.parent, sentences_per_recording=15)
    with pytest.raises(ValueError, match=r"test\.jsonl: all 14 utterances make 5\d\.\d s"):
        prepare_long_recordings(sources.parent, min_duration_s=100.0)
    with pytest.raises(ValueError, match="`pause_s` must be two seconds"):
        prepare_long_recordings(sources.parent, pause_s=(1.0, 0.5))


def test_cli_prepare_long(sources):
    out = sources.parent
    argv = ["prepare", "long", "--out", str(out), "--n-recordings", "1", "--pause", "0.5", "0.5"]
    assert run_cli(argv) == 0
    (recording,) = read_manifest(out / "long.jsonl")
    starts = [s["start"] for s in recording.extra["segments"]]
    assert starts[0] == 0.5 and recording.duration >= 40.0
