"""`corpora.synthetic`: the offline corpus spoken by OpenJTalk, and `prepare synthetic`."""

import re
import unicodedata
from pathlib import Path

import pytest
import soundfile as sf
from corpora_helpers import (
    assert_disjoint,
    read_splits,
    run_cli,
)

from whisper_ft.corpora.synthetic import SYNTHETIC_SENTENCES, prepare_synthetic, read_sentences
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
