"""A test's files: predictions.tsv sorted by id, metrics.json with what the data check left out."""

import csv
import json

import pytest

from whisper_ft.data.datamodule import WhisperDataModule
from whisper_ft.evaluation.metrics import score
from whisper_ft.manifest import read_manifest
from whisper_ft.training.results import write_test_report


def test_predictions_are_sorted_by_id_and_hold_the_strings_as_scored(tmp_path):
    records = [("b", "spk2", score("アイウ", "アイ")), ("a", "spk1", score("カキ", "カキ"))]
    predictions, metrics = write_test_report(tmp_path / "run", records, {"cer": 0.2, "k": "カ"})
    with predictions.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["id"] for r in rows] == ["a", "b"] and rows[1]["speaker"] == "spk2"
    assert (rows[1]["reference"], rows[1]["hypothesis"]) == ("アイウ", "アイ")
    assert (rows[1]["cer"], rows[0]["cer"]) == ("0.333333", "0.000000")  # 1 edit in 3
    assert json.loads(metrics.read_text(encoding="utf-8")) == {"cer": 0.2, "k": "カ"}


def test_metrics_count_the_test_lines_the_data_check_excluded(
    micro, corpus, make_trainer, tmp_path
):
    test = tmp_path / "test.jsonl"
    lines = []
    for utterance in read_manifest(corpus["test"]):
        utterance.audio = str(utterance.audio_path(corpus["test"].parent))
        lines.append(utterance.to_json())
    test.write_text("\n".join([*lines, "{not json"]) + "\n", encoding="utf-8")
    data = WhisperDataModule(test_manifest=str(test), batch_size=4, num_workers=0)

    make_trainer().test(micro, data, verbose=False)

    run = tmp_path / "lightning_logs" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["excluded_by_data_check"] == 1 and metrics["n_utterances"] == len(lines)
    assert (run / "predictions.tsv").is_file() and (run / "report.md").is_file()
    assert micro.test_scores.skipped_unreadable_audio == 0


def test_a_failing_report_is_a_warning_and_the_results_stay(
    micro, corpus, tmp_path, make_trainer, monkeypatch
):
    def broken(run_dir):
        raise OSError("matplotlib cannot write")

    monkeypatch.setattr("whisper_ft.training.results.write_report", broken)
    with pytest.warns(UserWarning, match=r"report.md was not written \(OSError: matplotlib"):
        make_trainer().test(
            micro,
            WhisperDataModule(
                **{f"{k}_manifest": str(v) for k, v in corpus.items()}, batch_size=4, num_workers=0
            ),
            verbose=False,
        )
    log_dir = tmp_path / "lightning_logs" / "version_0"
    assert (log_dir / "predictions.tsv").is_file() and (log_dir / "metrics.json").is_file()
    assert not (log_dir / "report.md").exists()
