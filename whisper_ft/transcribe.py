"""Transcribe audio files, folders and manifests with any model `load_base_model` accepts.

    transcriber = Transcriber("jvs_base.ckpt")                      # loaded once
    inputs = collect_inputs(["a.wav", "recordings/", "test.jsonl"])  # in order, ids unique
    transcripts, summary = transcribe_inputs(transcriber, inputs, out_dir="out")
    print(summary.line())   # transcribed 12 files, 34.5 s of audio in 6.9 s: RTF 0.20 …

Files of up to 30 s are decoded `batch_size` at a time as evaluation decodes them (greedy, no
timestamps, `decoding.decode_texts`) while a thread reads the next batch. A longer file, and
with `timestamps=True` every file, goes through `whisper.transcribe` on its own: Whisper's
long-form loop (30-s windows, each prompted with the text before it, temperature fallback),
which also gives the segments' times for SRT when the model still predicts timestamp tokens.

Outputs in `out_dir` are written as each file finishes, so an interrupted run keeps what it
did: `transcripts.tsv` (a row per file, flushed), `<id>.txt` and `<id>.srt` per file; then
`transcripts.json` (every record and the run's summary) at the end, atomically.
"""

import argparse
import csv
import hashlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
import whisper
from tqdm import tqdm
from whisper.audio import N_SAMPLES, SAMPLE_RATE
from whisper.model import Whisper
from whisper.tokenizer import get_tokenizer
from whisper.utils import WriteSRT

from whisper_ft.arguments import positive_int
from whisper_ft.audio import AUDIO_SUFFIXES, AudioError, load_audio, log_mel_batch
from whisper_ft.decoding import decode_texts, decoding_options
from whisper_ft.files import atomic_write
from whisper_ft.manifest import ManifestError, path_ids, read_manifest
from whisper_ft.metrics import score
from whisper_ft.model import load_base_model, model_from_checkpoint
from whisper_ft.text import to_kana

FORMATS = ("txt", "tsv", "json", "srt")  # what `--formats` accepts
DEFAULT_FORMATS = ("tsv", "json")  # with --out-dir; --timestamps adds srt
TSV_NAME = "transcripts.tsv"
JSON_NAME = "transcripts.json"
TSV_COLUMNS = ("id", "path", "duration_s", "text", "kana", "reference", "error")


def load_for_transcription(model_spec: str, device: torch.device) -> tuple[Whisper, str]:
    """The model in eval mode, and its default language: the one a `.ckpt` was fine-tuned
    for, `ja` for anything else. A checkpoint is read once."""
    if Path(model_spec).suffix == ".ckpt":
        model, hyper_parameters = model_from_checkpoint(model_spec)
        return model.to(device).eval(), hyper_parameters.get("language", "ja")
    return load_base_model(model_spec, device=device).eval(), "ja"


class Transcriber:
    """A model loaded once that decodes batches of waveforms as evaluation does: greedy,
    no timestamps, the language token of the checkpoint (or `language`), fp16 on CUDA.
    Shared by `transcribe` and `serve`; not thread-safe (one caller at a time)."""

    # Temperatures of `transcribe_long`; None: whisper.transcribe's own fallback schedule.
    long_form_temperature: float | tuple[float, ...] | None = None

    def __init__(
        self, model_spec: str, language: str | None = None, device: str | None = None
    ) -> None:
        start = time.perf_counter()
        self.model_spec = model_spec
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, model_language = load_for_transcription(model_spec, self.device)
        self.language = language or model_language
        self.options = decoding_options(self.language, "transcribe", self.device)
        self.load_s = time.perf_counter() - start  # seconds the model took to load

    @torch.inference_mode()
    def __call__(self, waveforms: list[np.ndarray]) -> list[str]:
        """One text per waveform (16-kHz mono float32 as `load_audio` returns it); each is
        padded or trimmed to Whisper's 30-s window, so only a longer one's first 30 s count
        (`transcribe_long` reads all of it)."""
        if not waveforms:
            return []
        audio = torch.stack(
            [torch.from_numpy(whisper.pad_or_trim(w, N_SAMPLES)) for w in waveforms]
        )
        mel = log_mel_batch(audio.to(self.device), self.model.dims.n_mels)
        return decode_texts(self.model, mel, self.options)

    def kana(self, text: str) -> str | None:
        """OpenJTalk's katakana reading of a transcript (`text.to_kana`) when decoding
        Japanese; None for other languages."""
        return to_kana(text) if self.language == "ja" else None

    @torch.inference_mode()
    def transcribe_long(self, waveform: np.ndarray, timestamps: bool = False) -> dict:
        """`whisper.transcribe` of one waveform of any length, with this transcriber's
        language, fp16 and sample length: 30-s windows in turn, each prompted with the text
        before it, Whisper's temperature fallback (`long_form_temperature`). With `timestamps`
        the model may predict timestamp tokens; `timed_segments` tells whether it did.

        waveform : np.ndarray, shape = (n_samples,), 16-kHz mono float32

        Returns Whisper's result: {"text", "segments": [{"start", "end", "text", "tokens", …}],
        "language"}.
        """
        temperature = self.long_form_temperature
        return whisper.transcribe(
            self.model,
            waveform,
            verbose=None,
            language=self.language,
            task=self.options.task,
            fp16=self.options.fp16,
            sample_len=self.options.sample_len,
            without_timestamps=not timestamps,
            **({} if temperature is None else {"temperature": temperature}),
        )

    def timed_segments(self, result: dict) -> list[dict] | None:
        """The segments of a `transcribe_long(…, timestamps=True)` result that have text, as
        {"start", "end", "text"}, or None when the model predicted no time: a model
        fine-tuned on `<|notimestamps|>` targets only gives the timestamp Whisper forces at
        the start of each window, and its segments then span whole 30-s windows."""
        timestamp_begin = get_tokenizer(
            self.model.is_multilingual,
            num_languages=self.model.num_languages,
            language=self.language,
            task=self.options.task,
        ).timestamp_begin
        segments = [
            {"start": s["start"], "end": s["end"], "text": s["text"].strip()}
            for s in result["segments"]
            if s["text"].strip()
        ]
        # A predicted segment is <|start|> text <|end|>: at least two timestamp tokens.
        timed = any(
            sum(token >= timestamp_begin for token in s["tokens"]) >= 2 for s in result["segments"]
        )
        return segments if timed or not segments else None


@dataclass(frozen=True)
class AudioInput:
    """One audio file to transcribe, as `collect_inputs` found it."""

    path: str  # the file: as given, under the folder given, or resolved from the manifest
    id: str  # the manifest line's id, else made from the path (`manifest.path_ids`); unique
    where: str  # where it was named: the argument as given, or "manifest:line"
    reference: str | None = None  # the manifest line's text (None: not from a manifest)


@dataclass
class Transcript:
    """What one input became."""

    id: str  # AudioInput.id
    path: str  # AudioInput.path
    text: str  # the transcript ("" when skipped)
    duration_s: float | None = None  # seconds of audio read (None: skipped)
    kana: str | None = None  # katakana reading of `text` (`text.to_kana`); Japanese only
    reference: str | None = None  # AudioInput.reference
    error: str | None = None  # why the file was skipped (None: transcribed)
    segments: list[dict] | None = None  # {start, end, text} with --timestamps, if the model timed


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


def collect_inputs(inputs: Sequence[str]) -> list[AudioInput]:
    """The audio files named by `inputs`, in order: an audio file as it is, a folder's audio
    files (`audio.AUDIO_SUFFIXES`, searched recursively, sorted, hidden ones left out) and a
    `.jsonl` manifest's lines (paths relative to its folder; the line's text kept as the
    reference). Ids are a manifest's own, else made from the paths; a repeated id gets -2, -3.

    Raises AudioError naming every path that does not exist or is a folder without audio, and
    ManifestError for a manifest that cannot be read or has no lines.
    """
    found: list[AudioInput | str] = []  # str: the path of an audio file whose id is made below
    problems = []
    for arg in inputs:
        path = Path(arg)
        if path.suffix == ".jsonl":
            found += _manifest_inputs(path)
        elif path.is_dir():
            files = _audio_files(path)
            if not files:
                problems.append(
                    f"{arg}: a folder without audio files ({', '.join(AUDIO_SUFFIXES)})"
                )
            found += [str(f) for f in files]
        elif path.is_file():
            found.append(arg)
        else:
            problems.append(f"{arg}: no such file or folder")
    if problems:
        raise AudioError(
            "; ".join(problems) + ". Give audio files, folders of them or .jsonl manifests."
        )
    # One id per distinct file: a file named twice gets -2 below, not a longer path id.
    files = list(dict.fromkeys(Path(f).absolute() for f in found if isinstance(f, str)))
    made_ids = dict(zip(files, path_ids(files), strict=True))
    inputs_found = [
        f if isinstance(f, AudioInput) else AudioInput(f, made_ids[Path(f).absolute()], f)
        for f in found
    ]
    return _unique_ids(inputs_found)


def _manifest_inputs(manifest: Path) -> list[AudioInput]:
    utterances = read_manifest(manifest)
    if not utterances:
        raise ManifestError(f"{manifest}: no lines to transcribe.")
    return [
        AudioInput(str(u.audio_path(manifest.parent)), u.id, f"{manifest}:{u.line}", u.text)
        for u in utterances
    ]


def _audio_files(folder: Path) -> list[Path]:
    # Hidden files include macOS's `._name.wav` resource forks, which are not audio.
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in AUDIO_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    )


def _unique_ids(inputs: list[AudioInput]) -> list[AudioInput]:
    seen: set[str] = set()
    unique = []
    for item in inputs:
        new_id, n = item.id, 1
        while new_id in seen:
            n += 1
            new_id = f"{item.id}-{n}"
        seen.add(new_id)
        unique.append(replace(item, id=new_id))
    return unique


def iter_transcripts(
    transcriber: Transcriber,
    inputs: Sequence[AudioInput],
    batch_size: int = 8,
    timestamps: bool = False,
) -> Iterator[Transcript]:
    """One Transcript per input, in order. Files of up to 30 s are decoded `batch_size` at a
    time; longer ones, and all with `timestamps`, by `Transcriber.transcribe_long`. A file
    that cannot be read is warned about (stderr) and comes back with its `error`."""
    batches = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
    for batch, audios in _read_ahead(batches):
        yield from _transcribe_batch(transcriber, batch, audios, timestamps)


def _read_batch(batch: Sequence[AudioInput]) -> list[np.ndarray | AudioError]:
    audios: list[np.ndarray | AudioError] = []
    for item in batch:
        try:
            audios.append(load_audio(item.path))
        except AudioError as e:
            audios.append(e)
    return audios


def _read_ahead(
    batches: list[Sequence[AudioInput]],
) -> Iterator[tuple[Sequence[AudioInput], list[np.ndarray | AudioError]]]:
    """Each batch with its audio; a thread reads the next batch while the caller decodes."""
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(_read_batch, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            audios = pending.result()
            if i + 1 < len(batches):
                pending = reader.submit(_read_batch, batches[i + 1])
            yield batch, audios


def _transcribe_batch(
    transcriber: Transcriber,
    batch: Sequence[AudioInput],
    audios: list[np.ndarray | AudioError],
    timestamps: bool,
) -> Iterator[Transcript]:
    batched = [
        i
        for i, audio in enumerate(audios)
        if isinstance(audio, np.ndarray) and len(audio) <= N_SAMPLES and not timestamps
    ]
    texts = dict(zip(batched, transcriber([audios[i] for i in batched]), strict=True))
    for i, (item, audio) in enumerate(zip(batch, audios, strict=True)):
        if isinstance(audio, AudioError):
            where = "" if item.where == item.path else f"{item.where} ({item.id}): "
            _warn(f"{where}{audio} Skipped; the other files go on.")
            yield Transcript(item.id, item.path, "", reference=item.reference, error=str(audio))
            continue
        segments = None
        if i in texts:
            text = texts[i]
        else:
            result = transcriber.transcribe_long(audio, timestamps)
            text = result["text"].strip()
            if timestamps:
                segments = transcriber.timed_segments(result)
                if segments is None:
                    _warn(
                        f"{item.where}: the model predicted no timestamps (fine-tuning on "
                        "<|notimestamps|> targets unlearns them), so it gets no SRT; its text "
                        "is in the other outputs."
                    )
        yield Transcript(
            item.id,
            item.path,
            text,
            duration_s=len(audio) / SAMPLE_RATE,
            kana=transcriber.kana(text),
            reference=item.reference,
            segments=segments,
        )


def _warn(message: str) -> None:
    # Through tqdm, so that the line does not break a progress bar on the terminal.
    tqdm.write(f"warning: {message}", file=sys.stderr)


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
            raise FileExistsError(
                f"{self.out_dir / TSV_NAME} already holds {len(self.earlier)} transcripts; "
                "resume (skips their ids, appends the rest: --resume) or give another --out-dir"
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
        raise FileExistsError(
            f"{tsv} is not a transcripts.tsv this command wrote (its first row is not "
            f"{chr(9).join(TSV_COLUMNS)}); give another --out-dir"
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


def transcribe_inputs(
    transcriber: Transcriber,
    inputs: Sequence[AudioInput],
    out_dir: str | Path | None = None,
    formats: Sequence[str] | None = None,
    batch_size: int = 8,
    timestamps: bool = False,
    progress: bool | None = None,
    on_transcript: Callable[[Transcript], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    resume: bool = False,
) -> tuple[list[Transcript], TranscriptionSummary]:
    """Transcribe `inputs` (see `iter_transcripts`), write the outputs in `out_dir` (if given)
    as they come, and sum up the run.

    formats: of FORMATS; None: tsv and json, and srt with `timestamps`.
    progress: a tqdm bar on stderr; None: only when stderr is a terminal.
    on_transcript: called with each transcript, in order, once its outputs are written.
    clock: read twice, when the first batch starts and after the last output (`elapsed_s`).
    resume: `out_dir` holds an earlier run's transcripts.tsv: inputs with a row there are
        skipped, the others appended; the returned transcripts, transcripts.json and the
        summary hold both (`elapsed_s` is this run's). False with such a file: FileExistsError.
    """
    if formats is None:
        formats = (*DEFAULT_FORMATS, "srt") if timestamps else DEFAULT_FORMATS
    if "srt" in formats and not timestamps:
        raise ValueError("srt needs segment times: transcribe with timestamps=True")
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
            **_error_rates(transcripts, transcriber.language),
        )
        if writer is not None:
            writer.write_json(transcripts, summary)
    return transcripts, summary


def _error_rates(transcripts: list[Transcript], language: str) -> dict:
    """`scored`, `cer` and `kana_cer` of the transcripts that have a reference: summed edits
    over summed reference characters (`metrics.score` with text targets)."""
    scores = [
        score(t.reference, t.text, target="text")
        for t in transcripts
        if t.reference is not None and t.error is None
    ]
    if not scores:
        return {}
    chars = sum(s.ortho_chars for s in scores)
    kana_chars = sum(s.kana_chars for s in scores)
    return {
        "scored": len(scores),
        "cer": sum(s.ortho_errors for s in scores) / chars if chars else None,
        "kana_cer": (
            sum(s.kana_errors for s in scores) / kana_chars
            if language == "ja" and kana_chars
            else None
        ),
    }


def transcribe_files(
    model_spec: str,
    paths: list[str],
    language: str | None = None,
    batch_size: int = 8,
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


def add_transcribe_command(subparsers: argparse._SubParsersAction) -> None:
    """Add `transcribe` to an argparse subparsers object; it sets `func`, a callable(args) →
    exit code: 0, 1 when some file could not be read, 130 when interrupted."""
    p = subparsers.add_parser(
        "transcribe",
        help="transcribe audio files, folders and manifests: path<TAB>text per file on stdout",
        description="Prints path<TAB>text per file on stdout, in input order; progress, "
        "warnings and the real-time factor go to stderr. Files of up to 30 s are decoded "
        "--batch-size at a time; longer ones (and all with --timestamps) go through "
        "whisper.transcribe, window by window. With --out-dir, transcripts.tsv (id, path, "
        "duration_s, text, kana, reference, error) and <id>.txt/.srt are written as files "
        "finish, transcripts.json (records and summary) at the end.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="input",
        help=f"audio files, folders (searched recursively for {', '.join(AUDIO_SUFFIXES)}) "
        "and .jsonl manifests (their text is the reference for a CER)",
    )
    p.add_argument("--model", required=True, help="Whisper name, .pt, .ckpt or random:<size>")
    p.add_argument(
        "--language", default=None, help="language token (default: the checkpoint's, else ja)"
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=8, help="files of up to 30 s decoded together"
    )
    p.add_argument("--device", default=None, help="cuda, cpu, … (default: cuda if available)")
    p.add_argument("--out-dir", default=None, help="folder for the output files")
    p.add_argument(
        "--resume",
        action="store_true",
        help="--out-dir holds an earlier run's transcripts.tsv: skip the ids it has, append "
        "the rest (without it such a folder is refused, never overwritten)",
    )
    p.add_argument(
        "--formats",
        type=_formats,
        default=None,
        help=f"comma-separated, of {','.join(FORMATS)} (srt needs --timestamps); default: "
        f"{','.join(DEFAULT_FORMATS)}, plus srt with --timestamps",
    )
    p.add_argument(
        "--timestamps",
        action="store_true",
        help="segment times from the model (whisper.transcribe) for SRT; a model fine-tuned "
        "without timestamps may have lost them: it is then warned about, and its text kept",
    )
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar or summary line (warnings stay)"
    )
    p.set_defaults(func=_transcribe_from_args)


def _formats(value: str) -> tuple[str, ...]:
    try:
        return check_formats([f.strip() for f in value.split(",") if f.strip()])
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _transcribe_from_args(args: argparse.Namespace) -> int:
    if args.formats is not None and args.out_dir is None:
        sys.exit("error: --formats names files to write: give --out-dir too.")
    if args.formats is not None and "srt" in args.formats and not args.timestamps:
        sys.exit("error: srt needs segment times: add --timestamps.")
    # The model first: its errors (a missing checkpoint, no network) are the likelier ones.
    transcriber = Transcriber(args.model, language=args.language, device=args.device)
    inputs = collect_inputs(args.inputs)
    done = []

    def echo(transcript: Transcript) -> None:
        done.append(transcript)
        if transcript.error is None:
            text = " ".join(transcript.text.split("\n")).replace("\t", " ")
            print(f"{transcript.path}\t{text}", flush=True)

    try:
        _, summary = transcribe_inputs(
            transcriber,
            inputs,
            out_dir=args.out_dir,
            formats=args.formats,
            batch_size=args.batch_size,
            timestamps=args.timestamps,
            progress=False if args.quiet else None,
            on_transcript=echo,
            resume=args.resume,
        )
    except FileExistsError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        tsv = args.out_dir is not None and "tsv" in (args.formats or DEFAULT_FORMATS)
        kept = f"; their rows are in {Path(args.out_dir) / TSV_NAME} (add --resume)" if tsv else ""
        print(f"interrupted after {len(done)} of {len(inputs)} files{kept}", file=sys.stderr)
        return 130
    if not args.quiet:
        print(summary.line(), file=sys.stderr, flush=True)
    return 1 if summary.skipped else 0
