"""The offline transcription run: audio files, folders and manifests transcribed by the engine
(`inference.transcriber`) into an output folder, with a progress bar and a summary.

    transcriber = Transcriber("jvs_base.ckpt")                      # loaded once
    inputs = collect_inputs(["a.wav", "recordings/", "test.jsonl"])  # in order, ids unique
    transcripts, summary = transcribe_inputs(transcriber, inputs, out_dir="out")
    print(summary.line())   # transcribed 12 files, 34.5 s of audio in 6.9 s: RTF 0.20 …

In the order of this file:
- the output folder: the formats (`FORMATS`, `check_outputs`), `TranscriptWriter`, the file
  names of ids (`output_name`), resuming (`earlier_transcripts`: the rows an earlier run
  wrote) and `TranscriptionSummary` (totals, RTF, CER against the references). Outputs are
  written as each file finishes, so an interrupted run keeps what it did: `transcripts.tsv`
  (a row per file, flushed), `<id>.txt` and `<id>.srt` per file; then `transcripts.json`
  (every record and the run's summary) at the end, atomically;
- the run: `transcribe_inputs`, `transcribe_files` and `print_transcripts` (what the
  `transcribe` command calls once the model is loaded).
"""

import csv
import hashlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from tqdm import tqdm
from whisper.utils import WriteSRT

from whisper_ft.evaluation.metrics import CorpusErrorRates, rates_for_json, score
from whisper_ft.files import atomic_write
from whisper_ft.inference.transcriber import (
    BATCH_SIZE,
    AudioInput,
    Transcriber,
    Transcript,
    collect_inputs,
    iter_transcripts,
)

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


def transcribe_inputs(
    transcriber: Transcriber,
    inputs: Sequence[AudioInput],
    out_dir: str | Path | None = None,
    formats: Sequence[str] | None = None,
    batch_size: int = BATCH_SIZE,
    timestamps: bool = False,
    progress: bool | None = None,
    on_transcript: Callable[[Transcript], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    resume: bool = False,
) -> tuple[list[Transcript], TranscriptionSummary]:
    """Transcribe `inputs` (see `iter_transcripts`), write the outputs in `out_dir` (if given)
    as they come, and sum up the run.

    formats: of FORMATS, only with `out_dir`; None: tsv and json, and srt with `timestamps`.
    progress: a tqdm bar on stderr; None: only when stderr is a terminal.
    on_transcript: called with each transcript, in order, once its outputs are written.
    clock: read twice, when the first batch starts and after the last output (`elapsed_s`).
    resume: `out_dir` holds an earlier run's transcripts.tsv: inputs with a row there are
        skipped, the others appended; the returned transcripts, transcripts.json and the
        summary hold both (`elapsed_s` is this run's). False with such a file:
        `OutputFolderError`.
    """
    formats = check_outputs(out_dir, formats, timestamps)
    transcriber.kana("ア")  # Japanese: OpenJTalk's dictionary loads now, not in the timed run
    writer = TranscriptWriter(out_dir, formats, resume) if out_dir is not None else None
    transcripts: list[Transcript] = [] if writer is None else list(writer.earlier)
    done = {t.id for t in transcripts}
    inputs = [item for item in inputs if item.id not in done]
    audio_s = sum(t.duration_s or 0.0 for t in transcripts)
    with (
        writer if writer is not None else nullcontext(),
        tqdm(
            total=len(inputs),
            desc="transcribing",
            unit="file",
            file=sys.stderr,
            disable=None if progress is None else not progress,
        ) as bar,
    ):
        start = clock()
        for transcript in iter_transcripts(transcriber, inputs, batch_size, timestamps):
            transcripts.append(transcript)
            if writer is not None:
                writer.write(transcript)
            if on_transcript is not None:
                on_transcript(transcript)
            audio_s += transcript.duration_s or 0.0
            if not bar.disable and audio_s > 0:
                rtf = bar.format_dict["elapsed"] / audio_s
                bar.set_postfix_str(f"{audio_s:.0f} s of audio, RTF {rtf:.2f}", refresh=False)
            bar.update()
        elapsed_s = clock() - start
        summary = TranscriptionSummary(
            model=transcriber.model_spec,
            language=transcriber.language,
            device=str(transcriber.device),
            batch_size=batch_size,
            timestamps=timestamps,
            files=sum(t.error is None for t in transcripts),
            skipped=sum(t.error is not None for t in transcripts),
            audio_s=audio_s,
            elapsed_s=elapsed_s,
            model_load_s=transcriber.load_s,
            **error_rates(transcripts, transcriber.language),
        )
        if writer is not None:
            writer.write_json(transcripts, summary)
    return transcripts, summary


def transcribe_files(
    model_spec: str,
    paths: list[str],
    language: str | None = None,
    batch_size: int = BATCH_SIZE,
    device: str | None = None,
) -> Iterator[tuple[str, str]]:
    """Yield `(path, text)` per audio file, in order, decoding `batch_size` files at a time.

    `paths` are what `collect_inputs` takes (files, folders, manifests). A file longer than
    30 s is transcribed whole (`Transcriber.transcribe_long`); one that cannot be read is
    warned about on stderr and left out.
    """
    transcriber = Transcriber(model_spec, language=language, device=device)
    for transcript in iter_transcripts(transcriber, collect_inputs(paths), batch_size):
        if transcript.error is None:
            yield transcript.path, transcript.text


def print_transcripts(
    run: Callable[..., tuple[list[Transcript], TranscriptionSummary]],
    n_inputs: int,
    tsv: Path | None = None,
    quiet: bool = False,
) -> int:
    """`run` (`transcribe_inputs` with all but `progress` and `on_transcript` given) with
    path<TAB>text per file on stdout as each finishes, in input order; the summary line (and
    a progress bar on a terminal) on stderr unless `quiet`. `tsv`: where the rows are kept,
    named when the run is interrupted. Returns 0, 1 when some file could not be read, 130 when
    interrupted (Ctrl-C)."""
    done = []

    def echo(transcript: Transcript) -> None:
        done.append(transcript)
        if transcript.error is None:
            text = " ".join(transcript.text.split("\n")).replace("\t", " ")
            print(f"{transcript.path}\t{text}", flush=True)

    try:
        _, summary = run(progress=False if quiet else None, on_transcript=echo)
    except KeyboardInterrupt:
        kept = "" if tsv is None else f"; their rows are in {tsv} (add --resume)"
        print(f"interrupted after {len(done)} of {n_inputs} files{kept}", file=sys.stderr)
        return 130
    if not quiet:
        print(summary.line(), file=sys.stderr, flush=True)
    return 1 if summary.skipped else 0
