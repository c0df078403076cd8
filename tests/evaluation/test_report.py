"""report.py: run folders built by hand (TensorBoard events, predictions.tsv, metrics.json)."""

import argparse
import json
import re
import time
import warnings
from pathlib import Path

import matplotlib.image
import pytest
from report_helpers import ROWS, write_predictions
from torch.utils.tensorboard import SummaryWriter

from whisper_ft.cli.commands import add_report_command
from whisper_ft.evaluation.predictions import ReportError
from whisper_ft.evaluation.report import read_scalars, show_report, write_report


def write_metrics(run_dir: Path, checkpoint: str | None = None) -> None:
    metrics = {
        "char_errors": 5,
        "chars": 15,
        "cer": 5 / 15,
        "kana_cer": 5 / 15,
        "kana_errors": 5,
        "kana_chars": 15,
        "ortho_cer": None,
        "wer": 0.75,
        "word_errors": 3,
        "words": 4,
        "n_utterances": 4,
        "base_model": "random:micro",
        "language": "ja",
        "checkpoint": checkpoint,
        "speechless": {"silence": "", "white_noise": "ア" * 80, "pink_noise": "ん"},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")


def write_events(run_dir: Path) -> None:
    """A fit's scalars: train_loss at steps 0..9 (10 - step), val_loss and val_cer at 4 and 9."""
    writer = SummaryWriter(str(run_dir))
    for step in range(10):
        writer.add_scalar("train_loss", 10.0 - step, step)
    for step, loss, cer in [(4, 7.5, 0.8), (9, 5.5, 0.6)]:
        writer.add_scalar("val_loss", loss, step)
        writer.add_scalar("val_cer", cer, step)
    writer.close()


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, channels = matplotlib.image.imread(path).shape
    assert height > 100 and width > 100 and channels == 4


def test_read_scalars_sorted_and_resumed_steps_replaced(tmp_path):
    write_events(tmp_path)
    scalars = read_scalars(tmp_path)
    assert scalars["train_loss"] == [(step, 10.0 - step) for step in range(10)]
    assert scalars["val_cer"] == [(4, pytest.approx(0.8)), (9, pytest.approx(0.6))]
    # A resumed fit (checkpointing.continue_logs): a new writer with purge_step logs step 5 on.
    time.sleep(1.1)  # event file names hold the second they were opened: keep them in order
    writer = SummaryWriter(str(tmp_path), purge_step=5)
    for step in (5, 6):
        writer.add_scalar("train_loss", 100.0 + step, step)
    writer.close()
    resumed = read_scalars(tmp_path)["train_loss"]
    assert resumed == [(s, 10.0 - s) for s in range(5)] + [(5, 105.0), (6, 106.0)]


def test_read_scalars_from_csv_logger(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train_loss,val_cer\n0,1,3.5,\n0,0,4.0,\n0,1,,0.9\n", encoding="utf-8"
    )
    scalars = read_scalars(tmp_path)
    assert scalars["train_loss"] == [(0, 4.0), (1, 3.5)]
    assert scalars["val_cer"] == [(1, 0.9)]
    assert read_scalars(tmp_path / "nothing") == {}


def test_write_report_full_run(tmp_path):
    write_events(tmp_path)
    write_predictions(tmp_path)
    write_metrics(tmp_path)
    report = write_report(tmp_path, worst=2)
    assert report == tmp_path / "report.md"
    for name in ("learning_curves.png", "cer_histogram.png", "cer_by_speaker.png"):
        assert_png(tmp_path / name)
    text = report.read_text(encoding="utf-8")
    assert f"# Run report: `{tmp_path.resolve()}`" in text
    assert "val_cer: last 0.600 (step 9), best 0.600 (step 9)." in text
    assert "| CER (primary) | 0.333 | 5 / 15 |" in text
    assert "orthographic CER" not in text  # null in metrics.json
    assert "| base model | random:micro |" in text
    assert "| checkpoint | — |" in text
    # what it said on the clips without speech: nothing, a loop (cut), a syllable
    assert "| silence | (nothing) |" in text and "| pink noise | ん |" in text
    assert f"| white noise | {'ア' * 59}… |" in text
    # Per speaker, worst first: summed edits / summed reference characters.
    assert "| 1 | spk_b | 2 | 3 / 7 | 0.429 |" in text
    assert "| 2 | spk_a | 2 | 2 / 8 | 0.250 |" in text
    assert text.index("spk_b | 2 | 3 / 7") < text.index("spk_a | 2 | 2 / 8")
    # Worst by edits: u1 and u4 both have 2 (tie → id order); u3 (1 edit) is cut by worst=2.
    assert "2 of the 3 utterances with errors, most character edits first" in text
    assert text.index("`u1`, speaker spk_a: 2 edits, CER 0.400") < text.index("`u4`")
    assert "`u3`" not in text
    assert "REF  アイウエ　オ\n   HYP  アイカエオオ\n        　　Ｓ　Ｉ　\n" in text
    assert "REF  タチ\n   HYP  　　\n        ＤＤ\n" in text
    for name in ("learning_curves.png", "cer_histogram.png", "cer_by_speaker.png"):
        assert f"]({name})" in text
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_curves_come_from_the_checkpoints_run_folder(tmp_path):
    fit_dir, test_dir = tmp_path / "version_0", tmp_path / "version_1"
    write_events(fit_dir)
    (fit_dir / "checkpoints").mkdir()
    ckpt = fit_dir / "checkpoints" / "epoch=0-step=10.ckpt"
    ckpt.write_bytes(b"")
    # The test run's own events hold test scalars only.
    writer = SummaryWriter(str(test_dir))
    writer.add_scalar("test_cer", 0.33, 10)
    writer.close()
    write_predictions(test_dir)
    write_metrics(test_dir, checkpoint=str(ckpt))
    text = write_report(test_dir).read_text(encoding="utf-8")
    assert f"Curves from the fit's run folder `{fit_dir}`." in text
    assert "val_cer: last 0.600 (step 9)" in text
    assert_png(test_dir / "learning_curves.png")
    assert not (fit_dir / "report.md").exists()


def test_fit_without_test_gets_curves_only(tmp_path):
    write_events(tmp_path)
    (tmp_path / "config.yaml").write_text("model: {}\n", encoding="utf-8")
    text = write_report(tmp_path).read_text(encoding="utf-8")
    assert "![learning curves](learning_curves.png)" in text
    assert (
        f"No predictions.tsv here yet: `python -m whisper_ft test --config "
        f"{tmp_path / 'config.yaml'} --ckpt_path <checkpoint>`" in text
    )
    assert "## Metrics" not in text and "## Worst" not in text
    assert_png(tmp_path / "learning_curves.png")
    assert not (tmp_path / "cer_histogram.png").exists()


def test_predictions_without_speakers_or_logs(tmp_path):
    rows = [(i, ref, hyp, "") for i, ref, hyp, _ in ROWS]
    write_predictions(tmp_path, rows)
    write_metrics(tmp_path)
    text = write_report(tmp_path).read_text(encoding="utf-8")
    assert f"No learning curves: no train_loss, val_loss, val_cer logged in {tmp_path}" in text
    assert "No plot: predictions.tsv names no speakers" in text
    assert not (tmp_path / "cer_by_speaker.png").exists()
    assert not (tmp_path / "learning_curves.png").exists()
    assert_png(tmp_path / "cer_histogram.png")
    assert "3 of the 3 utterances with errors" in text  # u2 has none


def test_non_ascii_speakers_are_numbered_in_the_plot(tmp_path):
    rows = [(i, ref, hyp, "話者" + speaker[-1]) for i, ref, hyp, speaker in ROWS]
    write_predictions(tmp_path, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns for each glyph its font lacks
        text = write_report(tmp_path).read_text(encoding="utf-8")
    assert "| 1 | 話者b | 2 | 3 / 7 | 0.429 |" in text


def test_errors_name_the_folder_and_what_to_run(tmp_path):
    with pytest.raises(
        ReportError, match=rf"{re.escape(str(tmp_path / 'missing'))}: no such folder"
    ):
        write_report(tmp_path / "missing")
    with pytest.raises(
        ReportError, match=rf"{re.escape(str(tmp_path))}: neither training logs.*whisper_ft test"
    ):
        write_report(tmp_path)
    write_predictions(tmp_path)
    (tmp_path / "metrics.json").write_text("{", encoding="utf-8")
    with pytest.raises(ReportError, match=r"metrics.json:1: not JSON"):
        write_report(tmp_path)


def test_report_command(tmp_path, capsys):
    write_events(tmp_path)
    write_predictions(tmp_path)
    write_metrics(tmp_path)
    parser = argparse.ArgumentParser()
    add_report_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(tmp_path), "--worst", "1"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"wrote {tmp_path / name}"
        for name in ("report.md", "learning_curves.png", "cer_histogram.png", "cer_by_speaker.png")
    ]
    assert "1 of the 3 utterances with errors" in (tmp_path / "report.md").read_text(
        encoding="utf-8"
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["report", str(tmp_path), "--worst", "-1"])
    write_report(tmp_path)  # the library prints nothing unless asked to
    assert capsys.readouterr().out == ""
    assert "(default: 10)" in parser._subparsers._group_actions[0].choices["report"].format_help()


def test_show_report_displays_the_markdown_with_each_plot_in_its_place(tmp_path, monkeypatch):
    display = pytest.importorskip("IPython.display", reason="IPython (notebooks) not installed")
    write_events(tmp_path)
    write_predictions(tmp_path)
    write_metrics(tmp_path)
    report = write_report(tmp_path)
    shown = []
    monkeypatch.setattr(display, "display", shown.append)
    show_report(report)
    kinds = [type(item).__name__ for item in shown]
    # text, curves, text, histogram, text, speakers, text
    assert kinds == ["Markdown", "Image"] * 3 + ["Markdown"]
    assert shown[1].data == (tmp_path / "learning_curves.png").read_bytes()
    assert shown[3].data == (tmp_path / "cer_histogram.png").read_bytes()
    assert "## Worst utterances" in shown[-1].data and "![" not in "".join(
        item.data for item in shown if type(item).__name__ == "Markdown"
    )
