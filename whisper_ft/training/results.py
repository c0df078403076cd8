"""What a test leaves in its run folder: predictions.tsv, metrics.json and report.md.

`TestResults`, a callback, writes them when a test ends, from the module's scores
(`WhisperFineTuner.test_scores`) and from what the start-up data check excluded (the data
module's `exclusions`, when the data came through `WhisperDataModule`). A callback is where
Lightning lets the model side and the data side meet, so neither reads the other.
"""

import csv
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl

from whisper_ft.decoding import speechless_said_rate
from whisper_ft.evaluation.metrics import UtteranceScore, rates_for_json
from whisper_ft.evaluation.predictions import LOOPING_COLUMNS, PREDICTIONS_HEADER
from whisper_ft.evaluation.report import write_report
from whisper_ft.evaluation.retention import Retention, retention_json

WER_MEANING = (
    "word error rate: word edits over reference words. Japanese text targets: both sides "
    "normalised with spaces removed, then split into words by OpenJTalk "
    "(pyopenjtalk.run_frontend), so spacing is never an error. Japanese kana targets: not "
    "reported (null), since OpenJTalk leaves a katakana utterance as one word; use kana_cer and "
    "mora_er. Other languages: whitespace words after Whisper's text normaliser"
)


@dataclass
class TestScores:
    """One test's scores, gathered from every process."""

    __test__ = False  # a name pytest would otherwise try to collect

    records: list[tuple[str, str, UtteranceScore]]  # (id, speaker, score) per utterance
    rates: dict  # CorpusErrorRates.compute()
    skipped_unreadable_audio: int
    # What the model said on each `decoding.speechless_clips` clip ("" is right).
    speechless: dict[str, str] = field(default_factory=dict)
    # The retention set's scores before (the base model) and after fine-tuning; None: not
    # measured (`WhisperFineTuner.retention_language`, `retention_set`).
    retention: Retention | None = None


class TestResults(pl.Callback):
    """Writes the test's files into the run folder (`Trainer.log_dir`) on the first process."""

    __test__ = False

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        scores: TestScores | None = getattr(pl_module, "test_scores", None)
        # Every process asks: under DDP, Trainer.log_dir is a broadcast from rank 0.
        out_dir = Path(trainer.log_dir or trainer.default_root_dir).resolve()
        if scores is None or not trainer.is_global_zero:
            return
        hparams = pl_module.hparams
        metrics = {
            **rates_for_json(scores.rates),
            "wer_meaning": WER_MEANING,
            "long_vowel": hparams.long_vowel,
            "skipped_unreadable_audio": scores.skipped_unreadable_audio,
            # Hallucination where nobody speaks: the share of speechless clips given any text.
            "speechless_said_rate": (
                speechless_said_rate(scores.speechless) if scores.speechless else None
            ),
            "speechless": scores.speechless,
            # WER on another language's plain text, base model → this one (report.md's table)
            "retention": retention_json(scores.retention) if scores.retention else None,
            **getattr(trainer.datamodule, "exclusions", {}).get("test", {}),
            "base_model": hparams.base_model,
            "language": hparams.language,
            # The fit's run folder holds the learning curves `report` plots.
            "checkpoint": str(Path(trainer.ckpt_path).resolve()) if trainer.ckpt_path else None,
        }
        paths = write_test_report(out_dir, scores.records, metrics)
        print(f"predictions: {paths[0]}\nmetrics:     {paths[1]}")
        try:
            print(f"report:      {write_report(out_dir)}")
        # The results are written; a plot that fails (a broken matplotlib, a full disk) must
        # not turn the finished test into an error.
        except Exception as e:  # noqa: BLE001
            warnings.warn(
                f"report.md was not written ({type(e).__name__}: {e}); the predictions and "
                f"metrics are. Retry with: python -m whisper_ft report {out_dir}",
                stacklevel=1,
            )


def write_test_report(
    out_dir: Path, records: list[tuple[str, str, UtteranceScore]], metrics: dict
) -> tuple[Path, Path]:
    """Write `predictions.tsv` (id, reference, hypothesis, cer: the strings exactly as scored;
    speaker; the looping signs `LOOPING_COLUMNS`; sorted by id whatever order batches and
    processes ran in) and `metrics.json`
    into `out_dir`; returns their paths. `records`: (id, speaker, score) per utterance."""
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions, metrics_path = out_dir / "predictions.tsv", out_dir / "metrics.json"
    with predictions.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        # read back by predictions.read_predictions
        writer.writerow(PREDICTIONS_HEADER + LOOPING_COLUMNS)
        for utterance_id, speaker, s in sorted(records, key=lambda record: record[0]):
            looping = [int(s.hit_budget), int(s.repeating), s.char_insertions]
            writer.writerow(
                [utterance_id, s.reference, s.hypothesis, f"{s.cer:.6f}", speaker, *looping]
            )
    metrics_path.write_text(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n")
    return predictions, metrics_path
