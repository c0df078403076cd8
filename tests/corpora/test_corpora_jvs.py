"""`corpora.jvs`: reading the JVS layout, `prepare jvs` and its command line."""

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpora_helpers import (
    assert_disjoint,
    read_splits,
    run_cli,
)

from whisper_ft.corpora.jvs import prepare_jvs, read_jvs
from whisper_ft.manifest import read_manifest
from whisper_ft.text import to_kana

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


@pytest.fixture
def jvs(tmp_path: Path) -> tuple[Path, dict[str, float]]:
    root = tmp_path / "jvs_ver1"
    return root, make_jvs(root)


def test_read_jvs_reads_layout_and_counts_what_it_skips(jvs):
    root, seconds = jvs
    utterances, skipped = read_jvs(root, ("parallel100", "nonpara30"))

    assert [u.id for u in utterances] == list(seconds)  # speaker, subset, file order
    assert skipped.counts == {
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
    assert f"dropped by the split: {n_dropped} (" in out and "sentence held out for" in out
    # Where it skipped, as every source says it (this reader used to give counts alone).
    missing = root / MISSING_WAV[0] / MISSING_WAV[1] / "transcripts_utf8.txt"
    assert f"transcript line without a wav file, e.g. {missing}:6" in out


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
    assert len(utterances) == len(seconds) and skipped.counts["repeated transcript line"] == 1

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
    with pytest.raises(ValueError, match=rf"no speaker folders.*`root` {re.escape(str(root))}\?"):
        prepare_jvs(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="no speaker has subset\\(s\\) falset10"):
        prepare_jvs(root, tmp_path / "out", subsets=("parallel100", "falset10"))


def test_cli_prepare_jvs_passes_options_and_reports_errors(jvs, tmp_path, capsys):
    root, _ = jvs
    argv = ["prepare", "jvs", "--root", str(root), "--out", str(tmp_path / "out")]
    assert run_cli([*argv, "--val-speakers", "jvs005", "--test-speakers", "jvs001"]) == 0
    assert {u.speaker for u in read_manifest(tmp_path / "out" / "val.jsonl")} == {"jvs005"}
    assert {u.speaker for u in read_manifest(tmp_path / "out" / "test.jsonl")} == {"jvs001"}

    assert str(run_cli([*argv, "--val-speakers", "jvs009"])).startswith(
        "error: unknown speaker(s) jvs009"
    )


def test_prepare_jvs_records_the_target(jvs, tmp_path):
    root, _ = jvs
    kana = [u for us in read_splits(prepare_jvs(root, tmp_path / "kana")).values() for u in us]
    assert kana and all(u.target == "kana" and u.kana == to_kana(u.text) for u in kana)

    out = tmp_path / "text"
    argv = ["prepare", "jvs", "--root", str(root), "--out", str(out), "--target", "text"]
    assert run_cli(argv) == 0
    splits = read_splits({name: out / f"{name}.jsonl" for name in ("train", "val", "test")})
    text = [u for us in splits.values() for u in us]
    # The same utterances, made for the transcript itself: no kana.
    assert sorted(u.id for u in text) == sorted(u.id for u in kana)
    assert all(u.target == "text" and u.kana is None for u in text)


def test_cli_errors_name_flags_where_the_library_names_parameters(jvs, tmp_path):
    root, _ = jvs
    # prepare_jvs says `root`; on the command line the same advice names --root.
    line = run_cli(["prepare", "jvs", "--root", str(root.parent), "--out", str(tmp_path / "o")])
    assert str(line).startswith("error: ") and f"Did you mean --root {root}?" in str(line)
