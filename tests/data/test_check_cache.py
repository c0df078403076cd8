"""The data check's cache: an unchanged manifest is not checked twice; a change to it, to its
folder or to an audio file it names is."""

from pathlib import Path

import pytest
from check_helpers import found, line, sine, write_bad_manifest

from whisper_ft.data import check as check_lines
from whisper_ft.data.check import check_manifest


@pytest.fixture
def bad_manifest(tmp_path) -> Path:
    return write_bad_manifest(tmp_path)


def test_an_unchanged_manifest_is_not_checked_twice(bad_manifest, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = check_manifest(bad_manifest, workers=1, cache_dir=cache)
    assert len(list(cache.glob("*.json"))) == 1

    opened = []
    decode = check_lines._decoded_duration_s
    monkeypatch.setattr(check_lines, "_decoded_duration_s", lambda p: opened.append(p) or decode(p))
    again = check_manifest(bad_manifest, workers=1, cache_dir=cache)
    assert again.cached and opened == []
    assert again.problems == first.problems and again.utterances == first.utterances
    assert again.summary().endswith(
        "cached result, audio not reopened (--recheck to check it again)"
    )

    # a deleted audio file, recheck, another target, or a changed manifest: checked again
    (bad_manifest.parent / "wav" / "good.wav").unlink()
    deleted = check_manifest(bad_manifest, workers=1, cache_dir=cache)
    assert not deleted.cached and (1, "good", "missing_audio") in found(deleted)
    rechecked = check_manifest(bad_manifest, workers=1, cache_dir=cache, recheck=True)
    assert not rechecked.cached and found(rechecked) == found(deleted)
    assert not check_manifest(bad_manifest, target="text", workers=1, cache_dir=cache).cached
    with bad_manifest.open("a", encoding="utf-8") as f:
        f.write(line("new", "wav/stereo24k.wav", "はい") + "\n")
    changed = check_manifest(bad_manifest, workers=1, cache_dir=cache)
    assert not changed.cached and changed.n_lines == 18 and changed.utterances[-1].id == "new"
    assert len(list(cache.glob("*.json"))) == 1  # one entry per manifest path


def test_the_same_manifest_bytes_elsewhere_are_checked_again(bad_manifest, tmp_path):
    check_manifest(bad_manifest, workers=1, cache_dir=tmp_path / "cache")
    copy = tmp_path / "elsewhere.jsonl"  # its relative audio paths point where no file is
    copy.write_bytes(bad_manifest.read_bytes())
    result = check_manifest(copy, workers=1, cache_dir=tmp_path / "cache")
    assert not result.cached and (1, "good", "missing_audio") in found(result)


def test_a_symlinked_manifest_is_checked_against_its_own_folder(bad_manifest, tmp_path):
    check_manifest(bad_manifest, workers=1, cache_dir=tmp_path / "cache")
    link = tmp_path / "elsewhere" / "train.jsonl"  # its relative audio paths point nowhere
    link.parent.mkdir()
    link.symlink_to(bad_manifest)
    result = check_manifest(link, workers=1, cache_dir=tmp_path / "cache")
    assert not result.cached and (1, "good", "missing_audio") in found(result)
    assert check_manifest(bad_manifest, workers=1, cache_dir=tmp_path / "cache").cached


def test_an_audio_file_replaced_under_an_unchanged_manifest_is_checked_again(
    bad_manifest, tmp_path
):
    first = check_manifest(bad_manifest, workers=1, cache_dir=tmp_path / "cache")
    audio = first.utterances[0].audio_path(bad_manifest.parent)
    original = audio.read_bytes()
    try:
        audio.write_bytes(b"")  # truncated in place: the manifest's bytes are the same
        again = check_manifest(bad_manifest, workers=1, cache_dir=tmp_path / "cache")
    finally:
        audio.write_bytes(original)
    assert not again.cached and (1, first.utterances[0].id, "unreadable_audio") in found(again)


def test_a_damaged_cache_file_means_checking_again(tmp_path):
    sine(tmp_path / "a.wav", 0.5)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(line("a", "a.wav", "はい") + "\n", encoding="utf-8")
    check_manifest(manifest, workers=1, cache_dir=tmp_path / "cache")
    [entry] = (tmp_path / "cache").glob("*.json")
    entry.write_text(entry.read_text()[:-20])
    result = check_manifest(manifest, workers=1, cache_dir=tmp_path / "cache")
    assert not result.cached and [u.duration for u in result.utterances] == [0.5]
    assert check_manifest(manifest, workers=1, cache_dir=tmp_path / "cache").cached
