"""Transcribe audio files, folders and manifests with any model `load_base_model` accepts: the
run and the `transcribe` command.

    transcriber = Transcriber("jvs_base.ckpt")                      # loaded once
    inputs = collect_inputs(["a.wav", "recordings/", "test.jsonl"])  # in order, ids unique
    transcripts, summary = transcribe_inputs(transcriber, inputs, out_dir="out")
    print(summary.line())   # transcribed 12 files, 34.5 s of audio in 6.9 s: RTF 0.20 …

Owns `transcribe_inputs` (the engine's transcripts, `transcriber.py`, written to an output
folder, `transcripts.py`, as they come, with a progress bar and a summary), `transcribe_files`
and the command (`print_transcripts` once the model is loaded), whose options are the
signatures of `collect_inputs`, `Transcriber`, `transcribe_inputs` and `print_transcripts`.
"""

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path

from tqdm import tqdm

from whisper_ft.arguments import add_options, call, positive_int
from whisper_ft.audio import AUDIO_SUFFIXES
from whisper_ft.transcriber import (
    BATCH_SIZE,
    AudioInput,
    Transcriber,
    Transcript,
    collect_inputs,
    iter_transcripts,
)
from whisper_ft.transcripts import (
    DEFAULT_FORMATS,
    FORMATS,
    TSV_NAME,
    TranscriptionSummary,
    TranscriptWriter,
    check_formats,
    check_outputs,
    error_rates,
)


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
        `transcripts.OutputFolderError`.
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


def add_transcribe_command(subparsers: argparse._SubParsersAction) -> None:
    """Add `transcribe` to an argparse subparsers object: its options are the parameters of
    `collect_inputs`, `Transcriber`, `transcribe_inputs` and `print_transcripts`. It sets
    `func`, a callable(args) → exit code: 0, 1 when some file could not be read, 130 when
    interrupted."""
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
    add_options(
        p,
        collect_inputs,
        help={
            "inputs": f"audio files, folders (searched recursively for "
            f"{', '.join(AUDIO_SUFFIXES)}) and .jsonl manifests (their text is the reference "
            "for a CER)"
        },
        positional=("inputs",),
        flags={"inputs": "input"},
    )
    add_options(
        p,
        Transcriber.__init__,
        help={
            "model": "Whisper name, .pt, .ckpt, CTranslate2 or Hugging Face folder, or "
            "random:<size>",
            "language": "language token (default: the one the model was fine-tuned with, else ja)",
            "task": "transcribe or translate (default: the model's fine-tuning task, else "
            "transcribe)",
            "device": "cuda, cpu, … (default: cuda if available)",
        },
    )
    add_options(
        p,
        transcribe_inputs,
        help={
            "batch_size": "files of up to 30 s decoded together",
            "out_dir": "folder for the output files",
            "resume": "--out-dir holds an earlier run's transcripts.tsv: skip the ids it has, "
            "append the rest (without it such a folder is refused, never overwritten)",
            "formats": f"comma-separated, of {','.join(FORMATS)} (srt needs --timestamps); "
            f"default: {','.join(DEFAULT_FORMATS)}, plus srt with --timestamps",
            "timestamps": "segment times from the model (whisper.transcribe) for SRT; a model "
            "fine-tuned without timestamps may have lost them: it is then warned about, and "
            "its text kept",
        },
        value_types={"batch_size": positive_int, "formats": _formats},
    )
    add_options(
        p, print_transcripts, help={"quiet": "no progress bar or summary line (warnings stay)"}
    )
    p.set_defaults(func=_transcribe_command)


def _formats(value: str) -> tuple[str, ...]:
    """`--formats txt,tsv` → ("txt", "tsv"), checked while parsing."""
    try:
        return check_formats([f.strip() for f in value.split(",") if f.strip()])
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


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


def _transcribe_command(args: argparse.Namespace) -> int:
    formats = call(check_outputs, args)  # a wrong combination, before any model loads
    # The model first: its errors (a missing checkpoint, no network) are the likelier ones.
    transcriber = call(Transcriber, args)
    inputs = call(collect_inputs, args)
    out_dir = getattr(args, "out_dir", None)
    return call(
        print_transcripts,
        args,
        run=partial(call, transcribe_inputs, args, transcriber=transcriber, inputs=inputs),
        n_inputs=len(inputs),
        tsv=Path(out_dir) / TSV_NAME if out_dir is not None and "tsv" in formats else None,
    )
