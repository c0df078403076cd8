"""The output folder of a run: formats, rows written and read back for resume, the summary."""

from pathlib import Path

import pytest

from whisper_ft.inference.transcribe import (
    DEFAULT_FORMATS,
    TSV_NAME,
    OutputFolderError,
    TranscriptionSummary,
    TranscriptWriter,
    check_outputs,
    earlier_transcripts,
    output_name,
)
from whisper_ft.inference.transcriber import Transcript


def test_outputs_default_to_tsv_and_json_and_a_wrong_combination_names_the_parameters():
    assert check_outputs() == DEFAULT_FORMATS == ("tsv", "json")
    assert check_outputs("out", None, timestamps=True) == ("tsv", "json", "srt")
    assert check_outputs("out", ["txt", "srt"], timestamps=True) == ("txt", "srt")
    with pytest.raises(ValueError, match="^`formats` names files to write: give `out_dir` too"):
        check_outputs(None, ["txt"])
    with pytest.raises(ValueError, match="^srt needs segment times: add `timestamps`"):
        check_outputs("out", ["srt"])
    with pytest.raises(ValueError, match="unknown output format xml"):
        check_outputs("out", ["tsv", "xml"])


def test_rows_read_back_as_written_and_a_cut_row_is_left_out(tmp_path):
    written = [
        Transcript("a", "a.wav", "アイ", duration_s=1.25, kana="アイ", reference="あい"),
        Transcript("b/c", "b/c.wav", "", error="cannot read b/c.wav"),
    ]
    with TranscriptWriter(tmp_path, formats=("tsv", "txt")) as writer:
        for transcript in written:
            writer.write(transcript)
    with (tmp_path / TSV_NAME).open("a", encoding="utf-8") as f:
        f.write("d\td.wav\t0.5")  # a row a kill cut short
    assert earlier_transcripts(tmp_path) == written
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "アイ\n"
    assert not list(tmp_path.glob("b*.txt"))  # skipped files get a row, no txt


def test_a_folder_with_rows_is_refused_unless_resumed_and_a_foreign_tsv_always(tmp_path):
    with TranscriptWriter(tmp_path) as writer:
        writer.write(Transcript("a", "a.wav", "ア", duration_s=0.5))
    with pytest.raises(OutputFolderError, match="already holds 1 transcripts; resume .*`resume`"):
        TranscriptWriter(tmp_path)
    with TranscriptWriter(tmp_path, resume=True) as writer:
        assert [t.id for t in writer.earlier] == ["a"]
    foreign = Path(tmp_path / "other")
    foreign.mkdir()
    (foreign / TSV_NAME).write_text("name\ttext\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a transcripts.tsv this command wrote"):
        TranscriptWriter(foreign, resume=True)


def test_summary_line_gives_rtf_speed_and_cer_as_fractions():
    summary = TranscriptionSummary(
        model="m.pt", language="ja", device="cpu", batch_size=8, timestamps=False, files=3,
        skipped=1, audio_s=20.0, elapsed_s=5.0, model_load_s=2.0, scored=2, cer=0.25,
        kana_cer=0.125,
    )  # fmt: skip
    assert summary.line() == (
        "transcribed 3 files, 20.0 s of audio in 5.0 s: RTF 0.25 (4.0× faster than real time) "
        "on cpu; 1 skipped (unreadable audio, see the warnings); CER 0.250, kana CER 0.125 "
        "against the references of 2 files"
    )
    assert summary.to_dict()["rtf"] == 0.25


def test_ids_that_differ_only_by_a_separator_get_different_files():
    names = {output_name(i) for i in ("spk1/utt1", "spk1_utt1", "spk1\\utt1")}
    assert len(names) == 3 and "spk1_utt1" in names
    assert output_name("spk1/utt1") == output_name("spk1/utt1")  # the same every run
    assert all("/" not in n and "\\" not in n for n in names)


def test_error_rates_sum_edits_over_the_scored_references():
    from whisper_ft.inference.transcribe import error_rates

    transcripts = [
        Transcript("a", "a.wav", "アイウ", reference="アイウエ"),  # 1 deletion in 4
        Transcript("b", "b.wav", "カキ", reference="カキ"),
        Transcript("c", "c.wav", "", reference="サシ", error="unreadable"),  # not scored
        Transcript("d", "d.wav", "タチ"),  # no reference
    ]
    rates = error_rates(transcripts, "ja")
    assert rates == {"scored": 2, "cer": 1 / 6, "kana_cer": 1 / 6}
    assert error_rates(transcripts, "en")["kana_cer"] is None  # kana only for Japanese
    assert error_rates(transcripts[2:], "ja") == {}
