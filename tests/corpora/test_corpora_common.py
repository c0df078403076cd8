"""`corpora.common`: the one skip record, target filler and manifest writer of every source."""

from pathlib import Path

import pytest
from corpora_helpers import SENTENCES, read_lines, write_audio

from whisper_ft.corpora.common import (
    N_EXAMPLES,
    NO_KANA,
    Entry,
    Skipped,
    fill_target,
    utterances_from_entries,
    write_manifests,
)
from whisper_ft.manifest import Utterance
from whisper_ft.text import to_kana


def test_skipped_counts_every_entry_and_shows_the_first_few():
    skipped = Skipped()
    for line in range(1, 6):
        skipped.add("empty text", f"a.csv:{line}")
    other = Skipped()
    other.add("empty text", "b.csv:1")
    other.add("audio file missing", "b.csv:2")
    skipped.update(other)

    assert skipped.counts == {"empty text": 6, "audio file missing": 1}
    assert skipped.examples["empty text"] == [f"a.csv:{n}" for n in range(1, N_EXAMPLES + 1)]
    assert skipped.lines() == [
        "  skipped: 7 (audio file missing: 1, empty text: 6)",
        "    audio file missing, e.g. b.csv:2",
        "    empty text, e.g. a.csv:1; a.csv:2; a.csv:3",
    ]


def test_fill_target_names_the_utterances_it_leaves_out():
    kept_text = Utterance(id="a", audio="a.wav", text=SENTENCES[0])
    no_kana = Utterance(id="b", audio="b.wav", text="、。")  # OpenJTalk reads nothing here
    skipped = Skipped()

    kept = fill_target([kept_text, no_kana], "kana", skipped)

    assert kept == [kept_text] and kept_text.kana == to_kana(SENTENCES[0])
    assert kept_text.target == "kana"
    assert skipped.counts == {NO_KANA: 1} and skipped.examples[NO_KANA] == ["b ('、。')"]
    with pytest.raises(ValueError, match="target must be one of kana, text, got 'katakana'"):
        fill_target([kept_text], "katakana", Skipped())


def test_entries_become_utterances_with_duration_and_ids_from_paths(tmp_path: Path):
    seconds = write_audio(tmp_path / "a" / "001.wav", 0.5)
    write_audio(tmp_path / "b" / "001.wav", 0.5)
    entries = [
        Entry("l:1", tmp_path / "a" / "001.wav", f" {SENTENCES[0]}\n"),
        Entry("l:2", tmp_path / "b" / "001.wav", SENTENCES[1], "s1"),
        Entry("l:3", tmp_path / "a" / "001.wav", SENTENCES[2]),
        Entry("l:4", tmp_path / "gone.wav", SENTENCES[2]),
    ]
    skipped = Skipped()

    utterances = utterances_from_entries(entries, skipped)

    assert [(u.id, u.text, u.speaker) for u in utterances] == [
        ("a_001", SENTENCES[0], None),
        ("b_001", SENTENCES[1], "s1"),
    ]
    assert utterances[0].duration == pytest.approx(seconds, abs=1e-3)
    assert skipped.examples == {
        "audio file listed twice": ["l:3 (as on l:1)"],
        "audio file missing": ["l:4"],
    }


def test_write_manifests_writes_each_set_and_summarises_it(tmp_path: Path, capsys):
    write_audio(tmp_path / "x.wav", 0.5)
    sets = {"all": [Utterance(id="x", audio=str(tmp_path / "x.wav"), text=SENTENCES[0])]}

    paths = write_manifests("test", sets, Skipped(), tmp_path / "out", target="text", split=None)

    assert paths == {"all": tmp_path / "out" / "all.jsonl"}
    assert read_lines(paths["all"]) == [
        {"id": "x", "audio": str(tmp_path / "x.wav"), "text": SENTENCES[0], "target": "text"}
    ]
    out = capsys.readouterr().out
    assert "  all        1 utterances    0 speakers     1 sentences" in out
    assert "  skipped: 0" in out and "dropped" not in out
    with pytest.raises(ValueError, match="test: no usable utterance, nothing written"):
        write_manifests("test", {"all": []}, Skipped(), tmp_path / "o2", target="kana", split=None)
