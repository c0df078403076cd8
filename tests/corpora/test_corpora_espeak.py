"""The espeak-ng corpus: the English retention set spoken, 16-kHz audio, text targets."""

import shutil

import pytest
import soundfile as sf
from whisper.audio import SAMPLE_RATE

from whisper_ft.corpora import espeak
from whisper_ft.corpora.espeak import RETENTION_SENTENCES, prepare_espeak
from whisper_ft.corpora.synthetic import read_sentences
from whisper_ft.manifest import read_manifest

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)",
)


def test_the_retention_set_is_24_distinct_english_sentences():
    sentences = read_sentences(RETENTION_SENTENCES)
    assert len(sentences) == 24
    assert all(s.isascii() and s[-1] in ".?" for s in sentences)


@needs_espeak
def test_prepare_espeak_writes_the_sentences_with_16_khz_audio(tmp_path):
    sentences = ["The bus was late.", "Please close the window."]
    manifest = prepare_espeak(tmp_path, sentences, name="two")
    assert manifest == tmp_path / "two.jsonl"
    utterances = read_manifest(manifest)
    assert [u.text for u in utterances] == sentences
    assert [u.id for u in utterances] == ["two_001", "two_002"]
    assert {u.target for u in utterances} == {"text"}
    assert {u.speaker for u in utterances} == {"espeak-en"}
    assert all(u.kana is None for u in utterances)
    for u in utterances:
        info = sf.info(u.audio_path(tmp_path))
        assert info.samplerate == SAMPLE_RATE and info.channels == 1
        assert 0.5 < info.duration < 5.0
        assert u.duration == pytest.approx(info.duration)
    # a re-run reuses the audio on disk
    before = {u.audio: u.audio_path(tmp_path).stat().st_mtime_ns for u in utterances}
    prepare_espeak(tmp_path, sentences, name="two")
    assert {u.audio: u.audio_path(tmp_path).stat().st_mtime_ns for u in utterances} == before


def test_prepare_espeak_says_what_to_install_without_espeak(tmp_path, monkeypatch):
    monkeypatch.setattr(espeak.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="espeak-ng is not on PATH; install espeak-ng"):
        prepare_espeak(tmp_path, ["Hello there."])
    assert not any(tmp_path.iterdir())


def test_retention_set_without_espeak_is_none_and_says_how_to_install(tmp_path, monkeypatch):
    from whisper_ft.corpora import espeak

    monkeypatch.setattr(espeak.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="retention not measured: espeak-ng is not installed"):
        assert espeak.retention_set(tmp_path) is None
    assert not (tmp_path / "retention").exists()
    with pytest.raises(ValueError, match="no retention sentences for language 'fr'"):
        espeak.retention_set(tmp_path, "fr")
