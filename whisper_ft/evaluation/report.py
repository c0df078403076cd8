"""The run report: `report.md` and its plots, from a run folder's logs and test results.

A run folder is a logger's `…/version_N`. Its TensorBoard events (or CSVLogger's metrics.csv)
give the learning curves; `predictions.tsv` and `metrics.json`, written by `test`, give the
metrics table, the per-utterance CER histogram, CER by speaker and the worst utterances,
aligned character by character. `python -m whisper_ft test --ckpt_path` of a checkpoint in a
fit's run folder writes into that folder, beside its curves; a test run elsewhere (another
`--trainer.default_root_dir`, `Trainer.test` with its own logger) has no training curves, and
they are read from the checkpoint's run folder (metrics.json names the checkpoint). Plots hold
ASCII only: fonts may lack Japanese glyphs.
"""

import csv
import json
import logging
from pathlib import Path

from whisper_ft.evaluation.predictions import (
    Prediction,
    ReportError,
    aligned,
    by_speaker,
    read_predictions,
    worst_utterances,
)
from whisper_ft.evaluation.retention import RETENTION_HEADER, retention_row
from whisper_ft.files import atomic_write

REPORT = "report.md"
CURVES_PNG = "learning_curves.png"
HISTOGRAM_PNG = "cer_histogram.png"
SPEAKERS_PNG = "cer_by_speaker.png"
CURVE_TAGS = ("train_loss", "val_loss", "val_cer")  # as WhisperFineTuner logs them


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar logged in `run_dir` itself (not its subfolders): tag → (step, value) sorted
    by step, one value per step (the last logged). From TensorBoard event files (all of them,
    in order; those of a resumed fit replace the steps it logged again), else from CSVLogger's
    metrics.csv; {} when there are none. Files a running fit is writing are read as they are."""
    run_dir = Path(run_dir)
    by_step: dict[str, dict[int, float]] = {}
    if any(run_dir.glob("events.out.tfevents.*")):
        from tensorboard.backend.event_processing.event_accumulator import (
            SCALARS,
            EventAccumulator,
        )

        # A resumed fit's writer starts with `purge_step` (checkpointing.continue_logs), and
        # TensorBoard warns about "a TensorFlow restart" while dropping the steps logged again:
        # expected here, not worth a warning.
        tb_logger = logging.getLogger("tensorboard")
        level = tb_logger.level
        tb_logger.setLevel(logging.ERROR)
        try:
            # 0: keep every point (the default keeps a random sample of 10000 per tag).
            events = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0}).Reload()
        finally:
            tb_logger.setLevel(level)
        for tag in events.Tags()["scalars"]:
            by_step[tag] = {e.step: e.value for e in events.Scalars(tag)}
    elif (run_dir / "metrics.csv").is_file():
        with (run_dir / "metrics.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                for tag, value in row.items():
                    if tag != "step" and value:
                        by_step.setdefault(tag, {})[int(row["step"])] = float(value)
    return {tag: sorted(points.items()) for tag, points in by_step.items()}


def _save(figure, path: Path) -> Path:
    with atomic_write(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path


def plot_curves(scalars: dict[str, list[tuple[int, float]]], path: Path) -> Path:
    """train_loss and val_loss over steps, val_cer beside them (whichever were logged)."""
    from matplotlib.figure import Figure  # not pyplot: no global state, no GUI backend

    panels = [
        tags for tags in (("train_loss", "val_loss"), ("val_cer",)) if set(tags) & set(scalars)
    ]
    figure = Figure(figsize=(5.5 * len(panels), 3.8), layout="constrained")
    for ax, tags in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        for tag in (t for t in tags if t in scalars):
            steps, values = zip(*scalars[tag], strict=True)
            style = {"linewidth": 0.8} if tag == "train_loss" else {"marker": "o", "markersize": 3}
            ax.plot(steps, values, label=tag, **style)
        ax.set(xlabel="step", ylabel="CER" if tags == ("val_cer",) else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(figure, path)


def plot_histogram(predictions: list[Prediction], corpus_cer: float | None, path: Path) -> Path:
    from matplotlib.figure import Figure

    cers = [p.cer for p in predictions]
    ax = Figure(figsize=(6, 3.8), layout="constrained").subplots()
    ax.hist(cers, bins=20, range=(0.0, max(1.0, *cers)), color="tab:blue")
    if corpus_cer is not None:
        ax.axvline(
            corpus_cer, color="tab:red", linestyle="--", label=f"corpus CER {corpus_cer:.3f}"
        )
        ax.legend()
    ax.set(xlabel="per-utterance CER", ylabel="utterances")
    ax.yaxis.get_major_locator().set_params(integer=True)
    return _save(ax.figure, path)


def plot_speakers(rows: list[tuple[str, int, int, int, float]], path: Path) -> Path:
    """One bar per speaker; an id with non-ASCII characters is shown by its row number in
    report.md's table instead (fonts may lack its glyphs)."""
    from matplotlib.figure import Figure

    labels = [s if s.isascii() and s else f"#{i}" for i, (s, *_) in enumerate(rows, start=1)]
    ax = Figure(figsize=(6, 1.2 + 0.25 * len(rows)), layout="constrained").subplots()
    ax.barh(labels[::-1], [row[4] for row in rows][::-1], color="tab:blue")
    ax.set(xlabel="CER (summed edits / summed reference characters)", ylabel="speaker")
    return _save(ax.figure, path)


def _cell(value: object) -> str:
    return "—" if value is None else str(value).replace("|", "\\|")


# metrics.json's rates, as (row name, rate, its edits, its reference length), then its settings.
RATE_ROWS = [
    ("CER (primary)", "cer", "char_errors", "chars"),
    ("kana CER", "kana_cer", "kana_errors", "kana_chars"),
    # The model's own text read by OpenJTalk: the baseline of a model not fine-tuned for kana.
    ("pipeline kana CER", "pipeline_kana_cer", "pipeline_errors", "kana_chars"),
    ("mora error rate", "mora_er", "mora_errors", "morae"),
    ("orthographic CER", "ortho_cer", "ortho_errors", "ortho_chars"),  # null for kana targets
    ("WER", "wer", "word_errors", "words"),
    # Looping signs: share of hypotheses at the decoding budget / with a loop, insertions.
    ("budget-hit rate", "budget_hit_rate", "budget_hits", "n_utterances"),
    ("repetition rate", "repetition_rate", "repeating_utterances", "n_utterances"),
    ("insertion rate", "insertion_rate", "char_insertions", "chars"),
]
SAID_WIDTH = 60  # characters of a speechless clip's text shown in the report
INFO_ROWS = {
    "n_utterances": "utterances",
    "skipped_unreadable_audio": "skipped (unreadable audio)",
    "excluded_by_data_check": "excluded by the data check",
    "base_model": "base model",
    "language": "language",
    "long_vowel": "long vowel ー",
    "checkpoint": "checkpoint",
}


def _metrics_lines(metrics: dict) -> list[str]:
    lines = ["| rate | value | edits / reference length |", "| --- | ---: | ---: |"]
    for name, rate, errors, length in RATE_ROWS:
        if metrics.get(rate) is not None:
            value, counts = metrics[rate], f"{metrics.get(errors)} / {metrics.get(length)}"
            lines.append(f"| {name} | {value:.3f} | {counts} |")
    lines += ["", "| | |", "| --- | --- |"]
    lines += [f"| {name} | {_cell(metrics[k])} |" for k, name in INFO_ROWS.items() if k in metrics]
    if metrics.get("speechless"):  # what it says where nobody speaks ("" is right)
        lines += ["", "| clip without speech | what the model said |", "| --- | --- |"]
        for clip, text in metrics["speechless"].items():
            said = text if len(text) <= SAID_WIDTH else text[: SAID_WIDTH - 1] + "…"
            lines.append(f"| {clip.replace('_', ' ')} | {_cell(said) if said else '(nothing)'} |")
    if metrics.get("retention"):  # what the fine-tune kept: another language, before and after
        lines += ["", "Retention: plain-text WER of the base model (before) and this one (after)."]
        lines += ["", *RETENTION_HEADER.splitlines(), retention_row(metrics["retention"]).rstrip()]
    return lines


def _find_curves(run_dir: Path, metrics: dict) -> tuple[Path | None, dict]:
    """The folder whose logs hold the training curves: the run folder, else (a `test` run of a
    checkpoint) the checkpoint's folder or the one above it; (None, {}) when none has them."""
    folders = [run_dir]
    if metrics.get("checkpoint"):
        ckpt = Path(metrics["checkpoint"])
        folders += [ckpt.parent, ckpt.parent.parent]
    for folder in folders:
        scalars = read_scalars(folder)
        if set(CURVE_TAGS) & set(scalars):
            return folder, scalars
    return None, {}


def _curve_lines(run_dir: Path, folder: Path | None, scalars: dict) -> list[str]:
    if folder is None:
        return [
            f"No learning curves: no {', '.join(CURVE_TAGS)} logged in {run_dir} (nor in the "
            "run folder of the checkpoint metrics.json names)."
        ]
    lines = [] if folder == run_dir else [f"Curves from the fit's run folder `{folder}`.", ""]
    lines.append(f"![learning curves]({CURVES_PNG})")
    if val_cer := scalars.get("val_cer"):
        (last_step, last), (best_step, best) = val_cer[-1], min(val_cer, key=lambda p: p[1])
        lines += [
            "",
            f"val_cer: last {last:.3f} (step {last_step}), best {best:.3f} (step {best_step}).",
        ]
    return lines


def _worst_lines(worst: list[Prediction], wrong: int) -> list[str]:
    lines = [
        f"{len(worst)} of the {wrong} utterances with errors, most character edits first (ties "
        "by id). Under each column: S substitution, D deletion, I insertion."
    ]
    for rank, p in enumerate(worst, start=1):
        speaker = f", speaker {p.speaker}" if p.speaker else ""
        ref, hyp, marks = aligned(p.reference, p.hypothesis)
        lines += ["", f"{rank}. `{p.id}`{speaker}: {p.errors} edits, CER {p.cer:.3f}", ""]
        lines += ["   ```text", f"   REF  {ref}", f"   HYP  {hyp}", f"        {marks}", "   ```"]
    return lines


def write_report(run_dir: str | Path, worst: int = 10, *, print_paths: bool = False) -> Path:
    """Write report.md and its PNGs into `run_dir` (each file atomically) and return
    report.md's path; `worst`: utterances listed with their alignments; `print_paths`: print
    `wrote <path>` for each file written. Without predictions.tsv (a fit running, or finished
    but not tested) the report has the learning curves only. ReportError when the folder does
    not exist or has neither logs nor predictions, or when its predictions.tsv or metrics.json
    is malformed."""
    written = _write_files(Path(run_dir), worst)
    if print_paths:
        for path in written:
            print(f"wrote {path}")
    return written[0]


def _write_files(run_dir: Path, worst: int) -> list[Path]:
    """write_report's work; returns every file written, report.md first."""
    if not run_dir.is_dir():
        raise ReportError(
            f"{run_dir}: no such folder; give a run folder of fit or test "
            "(e.g. checkpoints/lightning_logs/version_0)."
        )
    metrics = _read_metrics(run_dir / "metrics.json")
    folder, scalars = _find_curves(run_dir, metrics)
    has_logs = any(run_dir.glob("events.out.tfevents.*")) or (run_dir / "metrics.csv").is_file()
    predictions_path = run_dir / "predictions.tsv"
    if not predictions_path.is_file() and not has_logs and folder is None:
        raise ReportError(
            f"{run_dir}: neither training logs (events.out.tfevents.*, metrics.csv) nor "
            "predictions.tsv; give the run folder of a fit (…/lightning_logs/version_N), or run "
            "`python -m whisper_ft test --ckpt_path <checkpoint>` to write predictions.tsv."
        )
    written: list[Path] = []
    lines = [f"# Run report: `{run_dir.resolve()}`", "", "## Learning curves", ""]
    lines += _curve_lines(run_dir, folder, scalars)
    if folder is not None:
        written.append(plot_curves(scalars, run_dir / CURVES_PNG))
    if predictions_path.is_file():
        predictions = read_predictions(predictions_path)
        lines += _test_sections(run_dir, metrics, predictions, worst, written)
    else:
        config = run_dir / "config.yaml"  # LightningCLI's copy of the fit's settings
        options = f"--config {config} " if config.is_file() else ""
        lines += [
            "",
            "## Test results",
            "",
            f"No predictions.tsv here yet: `python -m whisper_ft test {options}--ckpt_path "
            "<checkpoint>` writes the metrics, CER by speaker and worst utterances, with this "
            "report, into its own run folder.",
        ]
    report = run_dir / REPORT
    with atomic_write(report) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [report, *written]


def show_report(report: str | Path) -> None:
    """Display report.md in a notebook (IPython), each plot in its place: a notebook cannot
    follow the report's relative image links, so the Markdown between the images is shown in
    pieces and each image is read from the report's folder."""
    from IPython.display import Image, Markdown, display

    report = Path(report)
    text: list[str] = []
    for line in report.read_text(encoding="utf-8").splitlines():
        if line.startswith("![") and line.endswith(".png)"):
            display(Markdown("\n".join(text)))
            display(Image(filename=str(report.parent / line[line.index("](") + 2 : -1])))
            text = []
        else:
            text.append(line)
    display(Markdown("\n".join(text)))


def _read_metrics(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ReportError(
            f"{path}:{e.lineno}: not JSON ({e.msg}); run `python -m whisper_ft test` again."
        ) from e


def _test_sections(
    run_dir: Path, metrics: dict, predictions: list[Prediction], worst: int, written: list[Path]
) -> list[str]:
    """Metrics, CER histogram, CER by speaker and worst utterances; plots go to `written`."""
    lines = ["", "## Metrics", ""]
    lines += _metrics_lines(metrics) if metrics else [f"No metrics.json in {run_dir}."]
    lines += ["", "## Per-utterance CER", ""]
    if predictions:
        written.append(plot_histogram(predictions, metrics.get("cer"), run_dir / HISTOGRAM_PNG))
        lines.append(f"![per-utterance CER]({HISTOGRAM_PNG})")
    else:
        lines.append("No plot: predictions.tsv has no utterances.")
    lines += ["", "## CER by speaker", ""]
    rows = by_speaker(predictions)
    if any(speaker for speaker, *_ in rows):
        written.append(plot_speakers(rows, run_dir / SPEAKERS_PNG))
        lines += [f"![CER by speaker]({SPEAKERS_PNG})", ""]
        lines += [
            "| # | speaker | utterances | edits / characters | CER |",
            "| ---: | --- | ---: | ---: | ---: |",
        ]
        for i, (speaker, n, errors, chars, cer) in enumerate(rows, start=1):
            name = _cell(speaker or "(none)")
            lines.append(f"| {i} | {name} | {n} | {errors} / {chars} | {cer:.3f} |")
    else:
        lines.append("No plot: predictions.tsv names no speakers (the test manifest has none).")
    wrong = sum(p.errors > 0 for p in predictions)
    lines += ["", "## Worst utterances", ""]
    if wrong:
        lines += _worst_lines(worst_utterances(predictions, worst), wrong)
    else:
        lines.append("No utterance has an error.")
    return lines
