"""The output folder of a transcription run, and its summary.

    with TranscriptWriter("out", formats=("tsv", "json", "txt"), resume=True) as writer:
        for transcript in transcripts:
            writer.write(transcript)   # a transcripts.tsv row (flushed), <id>.txt, <id>.srt
        writer.write_json(transcripts, summary)

Owns the formats (`FORMATS`, `check_outputs`), `TranscriptWriter`, the file names of ids
(`output_name`), resuming (`earlier_transcripts`: the rows an earlier run wrote) and
`TranscriptionSummary` (totals, RTF, CER against the references: `summarize`). Outputs are
written as each file finishes, so an interrupted run keeps what it did: `transcripts.tsv`
(a row per file, flushed), `<id>.txt` and `<id>.srt` per file; then `transcripts.json`
(every record and the run's summary) at the end, atomically.
"""

import csv
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from whisper.utils import WriteSRT

from whisper_ft.files import atomic_write
from whisper_ft.metrics import CorpusErrorRates, rates_for_json, score
from whisper_ft.transcriber import Transcript

FORMATS = ("txt", "tsv", "json", "srt")  # what `formats` accepts
DEFAULT_FORMATS = ("tsv", "json")  # with `out_dir`; `timestamps` adds srt
TSV_NAME = "transcripts.tsv"
JSON_NAME = "transcripts.json"
TSV_COLUMNS = ("id", "path", "duration_s", "text", "kana", "reference", "error")


class OutputFolderError(FileExistsError, ValueError):
    """`out_dir` holds transcripts already (resume them, or give another folder), or a
    transcripts.tsv this module did not write. A ValueError too: the command line reports it
    as a user error."""


@dataclass
class TranscriptionSummary:
    """Totals of one run. `rtf` = `elapsed_s` / `audio_s` (below 1: faster than real time)."""

    model: str  # the model as given: name, .pt, .ckpt or random:<size>
    language: str  # language token decoded with
    device: str  # where the model ran
    batch_size: int  # files of up to 30 s decoded together
    timestamps: bool  # every file went through whisper.transcribe with timestamps
    files: int  # files transcribed
    skipped: int  # files whose audio could not be read
    audio_s: float  # seconds of audio transcribed
    # Wall seconds from reading the first file to writing the last file's outputs: reading,
    # resampling, log-mel, decoding, kana and the per-file outputs; not the model's loading
    # (model_load_s), finding the inputs, or scoring and writing the JSON afterwards.
    elapsed_s: float
    model_load_s: float  # seconds the model took to load (not in elapsed_s)
    scored: int = 0  # transcribed files with a reference (a manifest's text)
    cer: float | None = None  # corpus CER of `text.normalize`d characters over those files
    kana_cer: float | None = None  # the same on katakana readings (Japanese): compares kana models

    @property
    def rtf(self) -> float | None:
        """Real-time factor; None when no audio was transcribed."""
        return self.elapsed_s / self.audio_s if self.audio_s > 0 else None

    def to_dict(self) -> dict:
        return {**asdict(self), "rtf": self.rtf}

    def line(self) -> str:
        """One line for people: files, seconds, RTF, device; skipped files and CER if any."""
        line = f"transcribed {_count(self.files, 'file')}, {self.audio_s:.1f} s of audio in "
        line += f"{self.elapsed_s:.1f} s"
        if self.rtf is not None:
            speed = (
                f"{1 / self.rtf:.1f}× faster than"
                if self.rtf < 1
                else f"{self.rtf:.1f}× slower than"
            )
            line += f": RTF {self.rtf:.2f} ({speed} real time)"
        line += f" on {self.device}"
        if self.skipped:
            line += f"; {self.skipped} skipped (unreadable audio, see the warnings)"
        if self.cer is not None:
            # fractions, as test and metrics.json write them (1.000: as many edits as characters)
            line += f"; CER {self.cer:.3f}"
            line += "" if self.kana_cer is None else f", kana CER {self.kana_cer:.3f}"
            line += f" against the references of {_count(self.scored, 'file')}"
        return line


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


class TranscriptWriter:
    """Writes the outputs in `out_dir` as each transcript comes: a row of `transcripts.tsv`
    (flushed), `<id>.txt`, `<id>.srt`; then `transcripts.json` by `write_json`. Use it in a
    `with` block: the TSV is closed, with every row so far, however the run ends."""

    def __init__(
        self, out_dir: str | Path, formats: Sequence[str] = DEFAULT_FORMATS, resume: bool = False
    ) -> None:
        self.out_dir = Path(out_dir)
        self.formats = check_formats(formats)
        # A folder's earlier rows are never erased: resume appends after them, else refuse.
        self.earlier = earlier_transcripts(self.out_dir)
        if self.earlier and not resume:
            raise OutputFolderError(
                f"{self.out_dir / TSV_NAME} already holds {len(self.earlier)} transcripts; "
                "resume (skips their ids, appends the rest: `resume`) or give another `out_dir`"
            )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._tsv_file: TextIO | None = None
        if "tsv" in self.formats:
            tsv = self.out_dir / TSV_NAME
            # Rewritten whole first: a row a kill cut short must not run into the next one.
            with atomic_write(tsv) as tmp, tmp.open("w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f, delimiter="\t", lineterminator="\n")
                writer.writerow(TSV_COLUMNS)
                writer.writerows(_tsv_row(t) for t in self.earlier)
            self._tsv_file = tsv.open("a", encoding="utf-8", newline="")
            self._tsv = csv.writer(self._tsv_file, delimiter="\t", lineterminator="\n")

    def __enter__(self) -> "TranscriptWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        if self._tsv_file is not None:
            self._tsv_file.close()

    def write(self, transcript: Transcript) -> None:
        t = transcript
        if self._tsv_file is not None:
            self._tsv.writerow(_tsv_row(t))
            self._tsv_file.flush()
        if t.error is not None:
            return
        name = output_name(t.id)
        if "txt" in self.formats:
            (self.out_dir / f"{name}.txt").write_text(t.text + "\n", encoding="utf-8")
        if "srt" in self.formats and t.segments is not None:
            with (self.out_dir / f"{name}.srt").open("w", encoding="utf-8") as f:
                WriteSRT(str(self.out_dir)).write_result({"segments": t.segments}, file=f)

    def write_json(self, transcripts: list[Transcript], summary: TranscriptionSummary) -> None:
        if "json" not in self.formats:
            return
        record = {"summary": summary.to_dict(), "transcripts": [asdict(t) for t in transcripts]}
        with atomic_write(self.out_dir / JSON_NAME) as tmp:
            tmp.write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", "utf-8")


def output_name(transcript_id: str) -> str:
    """The file name (without suffix) of an id's txt/srt: the id itself, or, when it holds a
    path separator, the id with `_` for each and a digest of the id appended, so that
    `spk1/utt1` (`spk1_utt1-3f2a…`) and `spk1_utt1` never share a file."""
    name = re.sub(r"[\\/]", "_", transcript_id)
    if name == transcript_id:
        return name
    return f"{name}-{hashlib.sha256(transcript_id.encode()).hexdigest()[:8]}"


def _tsv_row(t: Transcript) -> list[str]:
    duration = "" if t.duration_s is None else f"{t.duration_s:.3f}"
    row = (t.id, t.path, duration, t.text, t.kana, t.reference, t.error)
    return ["" if value is None else value for value in row]


def earlier_transcripts(out_dir: str | Path) -> list[Transcript]:
    """The transcripts an earlier run wrote in `out_dir/transcripts.tsv` (none: no file), rows
    a kill cut short left out. Empty fields read back as None (text as "")."""
    tsv = Path(out_dir) / TSV_NAME
    if not tsv.is_file():
        return []
    with tsv.open(encoding="utf-8", newline="", errors="replace") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or tuple(rows[0]) != TSV_COLUMNS:
        raise OutputFolderError(
            f"{tsv} is not a transcripts.tsv this command wrote (its first row is not "
            f"{chr(9).join(TSV_COLUMNS)}); give another `out_dir`"
        )
    earlier = []
    for row in rows[1:]:
        if len(row) != len(TSV_COLUMNS):
            continue
        fields = dict(zip(TSV_COLUMNS, (value or None for value in row), strict=True))
        duration = fields.pop("duration_s")
        earlier.append(
            Transcript(
                **fields | {"text": fields["text"] or ""},
                duration_s=None if duration is None else float(duration),
            )
        )
    return earlier


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """`formats` as a tuple; ValueError naming an unknown one."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown output format {', '.join(unknown)}; choose from {FORMATS}")
    return tuple(formats)


def check_outputs(
    out_dir: str | Path | None = None,
    formats: Sequence[str] | None = None,
    timestamps: bool = False,
) -> tuple[str, ...]:
    """The formats a run writes: `formats` checked (`check_formats`), or by default tsv and
    json, plus srt with `timestamps`. ValueError for files named without `out_dir`, or srt
    without `timestamps` (only `whisper.transcribe` gives segment times)."""
    if formats is None:
        return (*DEFAULT_FORMATS, "srt") if timestamps else DEFAULT_FORMATS
    formats = check_formats(formats)
    if out_dir is None:
        raise ValueError("`formats` names files to write: give `out_dir` too.")
    if "srt" in formats and not timestamps:
        raise ValueError("srt needs segment times: add `timestamps`.")
    return formats


def error_rates(transcripts: list[Transcript], language: str) -> dict:
    """`scored`, `cer` and `kana_cer` of the transcripts that have a reference: summed edits
    over summed reference characters, by `metrics.CorpusErrorRates` as in training's test
    (the scores of `metrics.score` with text targets: `cer` is the orthographic rate)."""
    scores = [
        score(t.reference, t.text, target="text")
        for t in transcripts
        if t.reference is not None and t.error is None
    ]
    if not scores:
        return {}
    rates = CorpusErrorRates()
    rates.update(scores)
    counts = rates_for_json(rates.compute())
    return {
        "scored": len(scores),
        "cer": counts["ortho_cer"] if counts["ortho_chars"] else None,
        "kana_cer": counts["kana_cer"] if language == "ja" and counts["kana_chars"] else None,
    }
