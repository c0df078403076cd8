"""Corpus preparation: JVS-layout reading, the speaker- and sentence-disjoint split, the
synthetic OpenJTalk corpus and the `prepare` command line."""

import argparse
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisper_ft.manifest import Utterance, read_manifest
from whisper_ft.prepare import (
    SYNTHETIC_SENTENCES,
    add_prepare_command,
    prepare_jvs,
    prepare_synthetic,
    read_jvs,
    read_sentences,
    split_disjoint,
)
from whisper_ft.text import normalize, to_kana

JVS_RATE = 24_000
KATAKANA = re.compile(r"^[\u30a0-\u30ff、。？！]+$")  # katakana block (ー and ・ included)
# Read by every speaker, like JVS parallel100.
SHARED = [
    "今日はいい天気ですね。",
    "駅までバスで行きます。",
    "夕飯はカレーにしよう。",
    "明日は7時に起きます。",
    "本屋で雑誌を買いました。",
    "窓を開けてください。",
]
# Two of its own per speaker, like nonpara30.
OWN = {
    "jvs001": ["猫が庭で寝ています。", "お茶を一杯ください。"],
    "jvs002": ["電車が遅れています。", "海で泳ぎました。"],
    "jvs003": ["鍵をなくしました。", "春の花が咲きました。"],
    "jvs004": ["宿題が終わりました。", "パンを焼きました。"],
    "jvs005": ["山に登りました。", "手紙を書いています。"],
}
MISSING_WAV = ("jvs003", "parallel100", "VOICEACTRESS100_006")  # a line whose wav is absent


def write_wav(path: Path, n_samples: int, rate: int = JVS_RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(n_samples) / rate
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), rate, subtype="PCM_16")


def make_jvs(root: Path, speakers: list[str] | None = None) -> dict[str, float]:
    """A tiny corpus in JVS's layout under `root`; returns id → seconds of each wav written.

    jvs001's parallel100 transcript has a BOM, CRLF line ends and a blank line; jvs002 has a
    wav that no transcript line names.
    """
    seconds: dict[str, float] = {}
    for k, speaker in enumerate(speakers or list(OWN)):
        subsets = {
            "parallel100": [(f"VOICEACTRESS100_{i + 1:03d}", s) for i, s in enumerate(SHARED)],
            "nonpara30": [(f"BASIC5000_{100 * k + i:04d}", s) for i, s in enumerate(OWN[speaker])],
        }
        for subset, lines in subsets.items():
            folder = root / speaker / subset
            folder.mkdir(parents=True)
            body = "".join(f"{utt_id}:{text}\n" for utt_id, text in lines)
            if speaker == "jvs001" and subset == "parallel100":
                body = "\ufeff" + body.replace("\n", "\r\n") + "\r\n"
            (folder / "transcripts_utf8.txt").write_text(body, encoding="utf-8", newline="")
            for j, (utt_id, _) in enumerate(lines):
                if (speaker, subset, utt_id) == MISSING_WAV:
                    continue
                n_samples = JVS_RATE // 5 + 1200 * k + 240 * j  # every file a different length
                write_wav(folder / "wav24kHz16bit" / f"{utt_id}.wav", n_samples)
                seconds[f"{speaker}_{subset}_{utt_id}"] = n_samples / JVS_RATE
    if "jvs002" in (speakers or OWN):
        write_wav(root / "jvs002" / "nonpara30" / "wav24kHz16bit" / "BASIC5000_9999.wav", 2400)
    return seconds


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


@pytest.fixture
def jvs(tmp_path: Path) -> tuple[Path, dict[str, float]]:
    root = tmp_path / "jvs_ver1"
    return root, make_jvs(root)


def test_read_jvs_reads_layout_and_counts_what_it_skips(jvs):
    root, seconds = jvs
    utterances, skipped = read_jvs(root, ("parallel100", "nonpara30"))

    assert [u.id for u in utterances] == list(seconds)  # speaker, subset, file order
    assert skipped == {
        "transcript line without a wav file": 1,
        "wav file without a transcript line": 1,
    }
    first = utterances[0]
    assert first.id == "jvs001_parallel100_VOICEACTRESS100_001"  # BOM gone from the id
    assert first.text == SHARED[0] and first.speaker == "jvs001"
    assert Path(first.audio).is_absolute() and Path(first.audio).is_file()
    assert len([u for u in utterances if u.speaker == "jvs001"]) == 8  # blank line, CRLF fine


def test_prepare_jvs_splits_by_speaker_and_sentence(jvs, tmp_path, capsys):
    root, seconds = jvs
    splits = read_splits(prepare_jvs(root, tmp_path / "out"))

    assert_disjoint(splits)
    # 5 speakers → 1 val, 1 test, 3 train; 6 shared sentences → 1 val, 1 test, 4 train.
    assert [len({u.speaker for u in splits[n]}) for n in ("train", "val", "test")] == [3, 1, 1]
    kept = [u for us in splits.values() for u in us]
    assert all(u.id not in {"jvs003_parallel100_VOICEACTRESS100_006"} for u in kept)
    for u in kept:
        assert u.kana == to_kana(u.text) and KATAKANA.match(u.kana), u.kana
        assert u.duration == pytest.approx(seconds[u.id], abs=1e-3)
        assert Path(u.audio).is_absolute()
    # Every speaker keeps its own two sentences; the shared ones only where their split agrees.
    for name, us in splits.items():
        for speaker in {u.speaker for u in us}:
            texts = {u.text for u in us if u.speaker == speaker}
            assert set(OWN[speaker]) <= texts
            assert len(texts & set(SHARED)) >= (1 if name != "train" else 3)

    out = capsys.readouterr().out
    assert "skipped: 2 (transcript line without a wav file: 1, wav file without" in out
    assert f"→ {tmp_path / 'out' / 'test.jsonl'}" in out
    n_dropped = 39 - len(kept)  # 40 transcript lines, one without its wav
    assert f"dropped: {n_dropped} (" in out and "sentence held out for" in out


def test_prepare_jvs_honours_explicit_speakers(jvs, tmp_path):
    root, _ = jvs
    paths = prepare_jvs(
        root, tmp_path / "out", val_speakers=["jvs002"], test_speakers=["jvs004", "jvs005"]
    )
    splits = read_splits(paths)
    assert {u.speaker for u in splits["val"]} == {"jvs002"}
    assert {u.speaker for u in splits["test"]} == {"jvs004", "jvs005"}
    assert {u.speaker for u in splits["train"]} == {"jvs001", "jvs003"}
    assert_disjoint(splits)


def test_prepare_jvs_is_deterministic_for_a_seed(jvs, tmp_path):
    root, _ = jvs
    first = prepare_jvs(root, tmp_path / "a", seed=3)
    second = prepare_jvs(root, tmp_path / "b", seed=3)
    for name in first:
        assert first[name].read_text(encoding="utf-8") == second[name].read_text(encoding="utf-8")


def test_prepare_jvs_reads_optional_subsets(tmp_path):
    root = tmp_path / "jvs_ver1"
    make_jvs(root)
    # whisper10 re-reads parallel100 sentences: they must follow those sentences' split.
    for speaker in OWN:
        folder = root / speaker / "whisper10"
        folder.mkdir()
        lines = [("VOICEACTRESS100_001", SHARED[0]), ("VOICEACTRESS100_002", SHARED[1])]
        text = "".join(f"{i}:{t}\n" for i, t in lines)
        (folder / "transcripts_utf8.txt").write_text(text, encoding="utf-8")
        for utt_id, _ in lines:
            write_wav(folder / "wav24kHz16bit" / f"{utt_id}.wav", 4800)
    splits = read_splits(
        prepare_jvs(root, tmp_path / "out", subsets=("parallel100", "nonpara30", "whisper10"))
    )
    assert_disjoint(splits)
    ids = [u.id for us in splits.values() for u in us]
    assert any("_whisper10_VOICEACTRESS100_00" in i for i in ids)


def test_malformed_transcript_line_names_file_and_line(jvs, tmp_path):
    root, _ = jvs
    transcript = root / "jvs004" / "nonpara30" / "transcripts_utf8.txt"
    transcript.write_text("BASIC5000_0300:山に登りました。\n\nno colon here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{re.escape(str(transcript))}:3: expected `UTTID:text`"):
        read_jvs(root)


def test_repeated_transcript_lines(jvs):
    root, seconds = jvs
    transcript = root / "jvs004" / "nonpara30" / "transcripts_utf8.txt"
    lines = transcript.read_text(encoding="utf-8").splitlines()
    transcript.write_text("\n".join([*lines, lines[0]]) + "\n", encoding="utf-8")
    utterances, skipped = read_jvs(root)
    assert len(utterances) == len(seconds) and skipped["repeated transcript line"] == 1

    transcript.write_text("\n".join([*lines, lines[0] + "ね"]) + "\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(transcript))}:3: BASIC5000_0300 .*line 1"
    ):
        read_jvs(root)


def test_fewer_than_three_speakers_is_an_error(tmp_path):
    root = tmp_path / "jvs_ver1"
    make_jvs(root, speakers=["jvs001", "jvs002"])
    with pytest.raises(ValueError, match=r"found 2 speaker\(s\) \(jvs001, jvs002\).*at least 3"):
        prepare_jvs(root, tmp_path / "out")


def test_unknown_or_overlapping_speakers_are_named(jvs, tmp_path):
    root, _ = jvs
    with pytest.raises(ValueError, match="unknown speaker\\(s\\) jvs042, jvs077"):
        prepare_jvs(root, tmp_path / "out", val_speakers=["jvs042"], test_speakers=["jvs077"])
    with pytest.raises(ValueError, match="jvs002 named for both val and test"):
        prepare_jvs(root, tmp_path / "out", val_speakers=["jvs002"], test_speakers=["jvs002"])
    with pytest.raises(ValueError, match="leave none of the 5 for train"):
        prepare_jvs(
            root,
            tmp_path / "out",
            val_speakers=["jvs001", "jvs002"],
            test_speakers=["jvs003", "jvs004", "jvs005"],
        )


def test_missing_root_or_layout_says_what_was_expected(jvs, tmp_path):
    root, _ = jvs
    with pytest.raises(FileNotFoundError, match="no such folder.*jvs001/"):
        prepare_jvs(tmp_path / "nowhere", tmp_path / "out")
    # The parent of jvs_ver1 is a common mistake: the error points at the right folder.
    with pytest.raises(ValueError, match=rf"no speaker folders.*--root {re.escape(str(root))}\?"):
        prepare_jvs(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="no speaker has subset\\(s\\) falset10"):
        prepare_jvs(root, tmp_path / "out", subsets=("parallel100", "falset10"))


def utterance(speaker: str, n: int, text: str) -> Utterance:
    return Utterance(id=f"{speaker}_{n}", audio=f"{speaker}_{n}.wav", text=text, speaker=speaker)


def test_split_disjoint_on_a_parallel_corpus():
    # 40 speakers all read 30 shared sentences, plus 2 of their own.
    speakers = [f"spk{k:02d}" for k in range(40)]
    utterances = [utterance(s, i, f"共通の文その{i}です。") for s in speakers for i in range(30)]
    utterances += [
        utterance(s, 100 + i, f"{s}の文その{i}です。") for s in speakers for i in range(2)
    ]
    result = split_disjoint(utterances, seed=7)

    splits = result.splits()
    assert_disjoint(splits)
    # 5% and 10% of 40 speakers; 5% and 10% of 30 shared sentences.
    assert [len({u.speaker for u in splits[n]}) for n in ("train", "val", "test")] == [34, 2, 4]
    shared = {n: {u.text for u in splits[n] if u.text.startswith("共通")} for n in splits}
    assert [len(shared[n]) for n in ("train", "val", "test")] == [25, 2, 3]
    kept = sum(len(us) for us in splits.values())
    assert kept + sum(result.dropped.values()) == len(utterances)
    assert result.dropped == {
        "sentence held out for train": (2 + 4) * 25,
        "sentence held out for val": (34 + 4) * 2,
        "sentence held out for test": (34 + 2) * 3,
    }
    assert split_disjoint(utterances, seed=7).splits() == splits


def test_split_keys_sentences_by_normalised_text():
    # The same sentence written three ways must land in one split, not leak across.
    variants = ["こんにちは、世界。", "こんにちは世界", "コンニチハ 世界！"]
    utterances = [utterance(f"s{k}", 0, variants[k % 3]) for k in range(9)]
    utterances += [utterance(f"s{k}", 1, f"{k}番目の文です。") for k in range(9)]
    result = split_disjoint(utterances, n_val_speakers=2, n_test_speakers=2)
    splits = result.splits()
    assert_disjoint(splits)
    greeting = [n for n, us in splits.items() if any("世界" in u.text for u in us)]
    assert len(greeting) == 1


def test_split_raises_when_val_would_be_empty():
    # Three speakers reading the same two sentences: nothing can be held out for val.
    utterances = [utterance(s, i, t) for s in "abc" for i, t in enumerate(SHARED[:2])]
    with pytest.raises(ValueError, match="the (val|test) split would be empty.*nonpara30"):
        split_disjoint(utterances)


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
    with pytest.raises(ValueError, match="n_speakers must be between 3"):
        prepare_synthetic(tmp_path, n_speakers=2)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whisper_ft")
    add_prepare_command(parser.add_subparsers(dest="command"))
    return parser


def test_cli_prepare_synthetic(tmp_path, capsys):
    out = tmp_path / "syn"
    args = make_parser().parse_args(
        ["prepare", "synthetic", "--out", str(out), "--n-sentences", "4", "--n-speakers", "3"]
    )
    assert args.func(args) == 0
    splits = read_splits({n: out / f"{n}.jsonl" for n in ("train", "val", "test")})
    assert [len(splits[n]) for n in ("train", "val", "test")] == [2, 1, 1]
    assert "dropped: 0" in capsys.readouterr().out


def test_cli_prepare_jvs_passes_options_and_reports_errors(jvs, tmp_path, capsys):
    root, _ = jvs
    parser = make_parser()
    argv = ["prepare", "jvs", "--root", str(root), "--out", str(tmp_path / "out")]
    args = parser.parse_args([*argv, "--val-speakers", "jvs005", "--test-speakers", "jvs001"])
    assert args.func(args) == 0
    assert {u.speaker for u in read_manifest(tmp_path / "out" / "val.jsonl")} == {"jvs005"}
    assert {u.speaker for u in read_manifest(tmp_path / "out" / "test.jsonl")} == {"jvs001"}

    args = parser.parse_args([*argv, "--val-speakers", "jvs009"])
    assert args.func(args) == 1
    assert "error: unknown speaker(s) jvs009" in capsys.readouterr().err


def test_prepare_jvs_records_the_target(jvs, tmp_path):
    root, _ = jvs
    kana = [u for us in read_splits(prepare_jvs(root, tmp_path / "kana")).values() for u in us]
    assert kana and all(u.target == "kana" and u.kana == to_kana(u.text) for u in kana)

    out = tmp_path / "text"
    argv = ["prepare", "jvs", "--root", str(root), "--out", str(out), "--target", "text"]
    args = make_parser().parse_args(argv)
    assert args.func(args) == 0
    splits = read_splits({name: out / f"{name}.jsonl" for name in ("train", "val", "test")})
    text = [u for us in splits.values() for u in us]
    # The same utterances, made for the transcript itself: no kana.
    assert sorted(u.id for u in text) == sorted(u.id for u in kana)
    assert all(u.target == "text" and u.kana is None for u in text)
