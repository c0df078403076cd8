"""`transcribe`: inputs from files, folders and manifests; batched decoding; outputs; RTF."""

import argparse
import csv
import dataclasses
import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
import whisper
from test_transcriber import write_manifest, write_wav
from whisper.utils import format_timestamp

import whisper_ft.inference.transcribe as transcribe_module
import whisper_ft.inference.transcriber as transcriber_module
from whisper_ft.cli.entry import main
from whisper_ft.cli.transcription import add_transcribe_command
from whisper_ft.inference.transcribe import TSV_COLUMNS, transcribe_inputs
from whisper_ft.inference.transcriber import Transcriber, Transcript, collect_inputs
from whisper_ft.text import to_kana

SAMPLE_LEN = 4  # tokens decoded per window: a random model never ends on its own


def read_tsv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture
def transcriber() -> Transcriber:
    """random:micro on the CPU (seeded), decoding SAMPLE_LEN tokens, no temperature fallback."""
    torch.manual_seed(0)
    transcriber = Transcriber("random:micro", device="cpu")
    transcriber.options = dataclasses.replace(transcriber.options, sample_len=SAMPLE_LEN)
    transcriber.long_form_temperature = 0.0
    return transcriber


@pytest.fixture
def fast_decoding(monkeypatch) -> None:
    """Transcribers the command builds decode as the `transcriber` fixture does."""
    options = transcriber_module.decoding_options
    monkeypatch.setattr(
        transcriber_module,
        "decoding_options",
        lambda *args, **kwargs: dataclasses.replace(
            options(*args, **kwargs), sample_len=SAMPLE_LEN
        ),
    )
    monkeypatch.setattr(Transcriber, "long_form_temperature", 0.0)
    torch.manual_seed(0)


def run_command(args: list[str]) -> int:
    """`python -m whisper_ft transcribe …` through `add_transcribe_command`'s parser."""
    parser = argparse.ArgumentParser()
    add_transcribe_command(parser.add_subparsers())
    parsed = parser.parse_args(["transcribe", *args])
    return parsed.func(parsed)


def test_outputs_have_a_row_per_file_and_a_consistent_summary(transcriber, tmp_path, capsys):
    a = write_wav(tmp_path / "a.wav", 0.5, 300)
    b = write_wav(tmp_path / "b.wav", 1.0, 500)
    write_wav(tmp_path / "m" / "c.wav", 0.25, 700)
    manifest = write_manifest(
        tmp_path / "m" / "test.jsonl", [{"id": "u1", "audio": "c.wav", "text": "こんにちは"}]
    )
    out = tmp_path / "out"
    transcripts, summary = transcribe_inputs(
        transcriber,
        collect_inputs([str(a), str(b), str(manifest)]),
        out_dir=out,
        formats=("txt", "tsv", "json"),
        batch_size=2,
        progress=True,
        clock=iter([10.0, 13.5]).__next__,  # read when the run starts and when it ends
    )
    rows = read_tsv(out / "transcripts.tsv")
    assert tuple(rows[0]) == TSV_COLUMNS
    assert [r["id"] for r in rows] == ["a", "b", "u1"]
    assert [r["duration_s"] for r in rows] == ["0.500", "1.000", "0.250"]
    assert [r["text"] for r in rows] == [t.text for t in transcripts]
    assert all(r["kana"] == to_kana(r["text"]) and r["error"] == "" for r in rows)
    assert [r["reference"] for r in rows] == ["", "", "こんにちは"]
    # batched decoding gives each file the text it gets alone
    assert transcripts[1].text == transcriber([sf.read(b, dtype="float32")[0]])[0]
    assert (out / "a.txt").read_text(encoding="utf-8") == transcripts[0].text + "\n"
    assert sorted(p.name for p in out.glob("*.txt")) == ["a.txt", "b.txt", "u1.txt"]

    saved = json.loads((out / "transcripts.json").read_text(encoding="utf-8"))
    assert saved["transcripts"] == [dataclasses.asdict(t) for t in transcripts]
    assert set(saved["transcripts"][0]) == {f.name for f in dataclasses.fields(Transcript)}
    s = saved["summary"]
    assert (s["files"], s["skipped"], s["audio_s"], s["elapsed_s"]) == (3, 0, 1.75, 3.5)
    assert s["rtf"] == s["elapsed_s"] / s["audio_s"] == 2.0
    assert s["model"] == "random:micro" and s["language"] == "ja" and s["device"] == "cpu"
    assert s["scored"] == 1 and s["cer"] > 0 and s["kana_cer"] > 0
    assert "RTF 2.00 (2.0× slower than real time) on cpu" in summary.line()
    assert "transcribing: 100%" in capsys.readouterr().err  # the progress bar, on stderr


def test_an_unreadable_file_is_skipped_and_the_others_are_written(fast_decoding, tmp_path, capsys):
    first = write_wav(tmp_path / "first.wav", 0.5)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    last = write_wav(tmp_path / "last.wav", 0.5, 600)
    out = tmp_path / "out"
    args = ["--model", "random:micro", "--out-dir", str(out), "--formats", "txt,tsv,json"]
    assert run_command([*args, str(first), str(bad), str(last)]) == 1
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [str(first), str(last)]
    assert f"warning: {bad}: cannot read audio" in captured.err and "Skipped" in captured.err
    assert "transcribed 2 files" in captured.err and "1 skipped" in captured.err
    rows = read_tsv(out / "transcripts.tsv")
    assert [(r["id"], r["text"] == "", r["error"] != "") for r in rows] == [
        ("first", False, False),
        ("bad", True, True),
        ("last", False, False),
    ]
    summary = json.loads((out / "transcripts.json").read_text())["summary"]
    assert (summary["files"], summary["skipped"]) == (2, 1)
    assert sorted(p.name for p in out.glob("*.txt")) == ["first.txt", "last.txt"]


def test_stdout_has_path_tab_text_and_the_summary_goes_to_stderr(fast_decoding, tmp_path, capsys):
    wavs = [str(write_wav(tmp_path / f"{name}.wav", 0.3)) for name in ("b", "a")]
    assert run_command(["--model", "random:micro", *wavs]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line.split("\t")[0] for line in lines] == wavs and all("\t" in x for x in lines)
    assert "transcribed 2 files, 0.6 s of audio in" in captured.err and "RTF" in captured.err
    assert not list(tmp_path.glob("*.tsv"))  # no --out-dir: nothing written
    assert run_command(["--model", "random:micro", "--quiet", wavs[0]]) == 0
    assert capsys.readouterr().err == ""


def test_an_interrupted_run_keeps_the_files_it_finished(transcriber, tmp_path):
    wavs = [str(write_wav(tmp_path / f"{i}.wav", 0.2, 300 + 100 * i)) for i in range(3)]
    seen = []

    def interrupt_at_the_second(transcript: Transcript) -> None:
        seen.append(transcript.id)
        if len(seen) == 2:
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        transcribe_inputs(
            transcriber,
            collect_inputs(wavs),
            out_dir=out,
            formats=("txt", "tsv", "json"),
            batch_size=3,
            on_transcript=interrupt_at_the_second,
        )
    assert [r["id"] for r in read_tsv(out / "transcripts.tsv")] == ["0", "1"]
    assert sorted(p.name for p in out.glob("*.txt")) == ["0.txt", "1.txt"]
    assert not (out / "transcripts.json").exists()


def test_the_command_says_where_an_interrupted_run_left_its_rows(
    fast_decoding, tmp_path, capsys, monkeypatch
):
    wavs = [str(write_wav(tmp_path / f"{i}.wav", 0.2)) for i in range(2)]

    def first_then_interrupt(transcriber, inputs, batch_size, timestamps):
        yield Transcript(inputs[0].id, inputs[0].path, "ア", duration_s=0.2)
        raise KeyboardInterrupt

    monkeypatch.setattr(transcribe_module, "iter_transcripts", first_then_interrupt)
    out = tmp_path / "out"
    assert run_command(["--model", "random:micro", "--out-dir", str(out), *wavs]) == 130
    captured = capsys.readouterr()
    assert captured.out == f"{wavs[0]}\tア\n"
    assert f"interrupted after 1 of 2 files; their rows are in {out / 'transcripts.tsv'}" in (
        captured.err
    )
    assert [r["text"] for r in read_tsv(out / "transcripts.tsv")] == ["ア"]


def test_a_file_longer_than_30_s_is_transcribed_whole(transcriber, tmp_path, monkeypatch):
    short = write_wav(tmp_path / "short.wav", 1.0)
    long = write_wav(tmp_path / "long.wav", 31.0, 250)
    long_form = []
    original = Transcriber.transcribe_long

    def spy(self, waveform, timestamps=False):
        result = original(self, waveform, timestamps)
        long_form.append((len(waveform), timestamps, result["text"]))
        return result

    monkeypatch.setattr(Transcriber, "transcribe_long", spy)
    transcripts, summary = transcribe_inputs(
        transcriber, collect_inputs([str(short), str(long)]), progress=False
    )
    [(n_samples, timestamps, text)] = long_form  # the short file was decoded in a batch
    assert n_samples == 31 * 16000 and not timestamps
    assert transcripts[1].text == text.strip() and transcripts[1].duration_s == 31.0
    assert summary.audio_s == 32.0


def test_timestamps_give_an_srt_with_the_models_segment_times(transcriber, tmp_path):
    wav = write_wav(tmp_path / "talk.wav", 2.0)
    out = tmp_path / "out"
    [transcript], _ = transcribe_inputs(
        transcriber, collect_inputs([str(wav)]), out_dir=out, timestamps=True, progress=False
    )
    assert transcript.segments  # the random model does emit timestamp tokens
    expected = "".join(
        f"{i}\n{format_timestamp(s['start'], True, ',')} --> "
        f"{format_timestamp(s['end'], True, ',')}\n{s['text']}\n\n"
        for i, s in enumerate(transcript.segments, start=1)
    )
    assert (out / "talk.srt").read_text(encoding="utf-8") == expected
    saved = json.loads((out / "transcripts.json").read_text(encoding="utf-8"))
    assert saved["transcripts"][0]["segments"] == transcript.segments
    assert saved["summary"]["timestamps"] is True


def test_a_model_without_timestamps_is_warned_about_and_keeps_its_text(
    transcriber, tmp_path, monkeypatch, capsys
):
    timed = write_wav(tmp_path / "timed.wav", 1.0)
    untimed = write_wav(tmp_path / "untimed.wav", 0.5)
    tokenizer = whisper.tokenizer.get_tokenizer(True)
    begin, text = tokenizer.timestamp_begin, tokenizer.encode(" アイ")  # <|0.00|>, " アイ"

    def fake_transcribe(model, audio, **options):
        assert options["without_timestamps"] is False and options["language"] == "ja"
        if len(audio) == 16000:  # <|0.00|> アイ <|0.50|>: a segment the model timed
            tokens, end = [begin, *text, begin + 25], 0.5
        else:  # only the timestamp Whisper forces first, then text to the window's end
            tokens, end = [begin, *text], 30.0
        segment = {"seek": 0, "start": 0.0, "end": end, "text": " アイ", "tokens": tokens}
        return {"text": " アイ", "segments": [segment], "language": "ja"}

    monkeypatch.setattr(whisper, "transcribe", fake_transcribe)
    out = tmp_path / "out"
    transcripts, _ = transcribe_inputs(
        transcriber,
        collect_inputs([str(timed), str(untimed)]),
        out_dir=out,
        timestamps=True,
        progress=False,
    )
    err = capsys.readouterr().err
    assert f"warning: {untimed}: the model predicted no timestamps" in err
    assert str(timed) not in err
    assert (out / "timed.srt").read_text(encoding="utf-8") == (
        "1\n00:00:00,000 --> 00:00:00,500\nアイ\n\n"
    )
    assert not (out / "untimed.srt").exists()
    assert [r["text"] for r in read_tsv(out / "transcripts.tsv")] == ["アイ", "アイ"]
    assert transcripts[1].segments is None


def test_output_formats_are_checked_before_the_model_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(transcriber_module, "load_for_transcription", None)  # would fail
    wav = str(write_wav(tmp_path / "a.wav", 0.1))
    command = ["transcribe", "--model", "x", wav, "--formats"]
    with pytest.raises(SystemExit, match="error: srt needs segment times: add --timestamps"):
        main([*command, "tsv,srt", "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="^error: --formats names files to write: give --out-dir"):
        main([*command, "txt"])
    with pytest.raises(SystemExit) as exit_:
        main([*command, "xml", "--out-dir", str(tmp_path)])
    assert exit_.value.code == 2 and "unknown output format xml" in capsys.readouterr().err


def test_srt_without_timestamps_is_refused_by_the_api(transcriber, tmp_path):
    with pytest.raises(ValueError, match="srt needs segment times"):
        transcribe_inputs(transcriber, [], out_dir=tmp_path, formats=("srt",))


def test_out_dir_keeps_earlier_rows_refuses_without_resume_and_resumes(transcriber, tmp_path):
    a, b, c = (write_wav(tmp_path / f"{name}.wav", 0.5, 300) for name in "abc")
    out = tmp_path / "out"
    transcribe_inputs(transcriber, collect_inputs([str(a), str(b)]), out_dir=out, progress=False)
    with (out / "transcripts.tsv").open("a", encoding="utf-8") as f:
        f.write("c\tcut short by a kill")  # half a row, no newline
    everything = collect_inputs([str(a), str(b), str(c)])
    with pytest.raises(FileExistsError, match="already holds 2 transcripts; resume .*`resume`"):
        transcribe_inputs(transcriber, everything, out_dir=out, progress=False)
    assert [r["id"] for r in read_tsv(out / "transcripts.tsv")[:2]] == ["a", "b"]  # untouched

    new = []
    transcripts, summary = transcribe_inputs(
        transcriber, everything, out_dir=out, progress=False, on_transcript=new.append, resume=True
    )
    assert [t.id for t in new] == ["c"]  # a and b were done
    rows = read_tsv(out / "transcripts.tsv")
    assert [r["id"] for r in rows] == ["a", "b", "c"] and rows[2]["duration_s"] == "0.500"
    assert [t.id for t in transcripts] == ["a", "b", "c"] and summary.files == 3
    written = json.loads((out / "transcripts.json").read_text(encoding="utf-8"))
    assert [t["id"] for t in written["transcripts"]] == ["a", "b", "c"]


def test_out_dir_cli_says_how_to_resume(tmp_path):
    wav = write_wav(tmp_path / "a.wav", 0.5)
    args = ["transcribe", "--model", "random:micro", "--device", "cpu", str(wav)]
    with pytest.raises(SystemExit):
        main([*args, "--out-dir", str(tmp_path / "out"), "--quiet"])
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--out-dir", str(tmp_path / "out"), "--quiet"])
    assert "already holds 1 transcripts; resume" in str(exit_.value.code)
    assert "--resume" in str(exit_.value.code)
