"""The inference verbs: `transcribe` (files, folders, manifests → text, SRT, an output folder)
and `serve` (the HTTP server). Each option is a parameter of the library functions the verb
calls (`arguments.add_options`); the server's extras are imported only when it starts."""

import argparse
from functools import partial
from pathlib import Path

from whisper_ft.audio import AUDIO_SUFFIXES
from whisper_ft.cli.arguments import (
    add_options,
    call,
    non_negative_float,
    positive_float,
    positive_int,
)
from whisper_ft.inference.transcribe import (
    DEFAULT_FORMATS,
    FORMATS,
    TSV_NAME,
    check_formats,
    check_outputs,
    print_transcripts,
    transcribe_inputs,
)
from whisper_ft.inference.transcriber import Transcriber, collect_inputs
from whisper_ft.serving.app import ServeOptions, serve
from whisper_ft.serving.connections import EXTRAS_MESSAGE, require_extras
from whisper_ft.serving.uploads import MAX_DURATION_S, MIN_SAMPLE_RATE

# The options of `Transcriber`, shared by transcribe and serve.
TRANSCRIBER_HELP = {
    "model": "Whisper name, .pt, .ckpt, CTranslate2 or Hugging Face folder, or random:<size>",
    "language": "language token (default: the one the model was fine-tuned with, else ja)",
    "task": "transcribe or translate (default: the model's fine-tuning task, else transcribe)",
    "device": "cuda, cuda:1, cpu, … (default: cuda when available)",
}


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
        help=TRANSCRIBER_HELP,
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


def _duration_s(value: str) -> float:
    seconds = positive_float(value)
    if seconds > MAX_DURATION_S:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_DURATION_S:g} s (Whisper's window), got {value}"
        )
    return seconds


def _sample_rate(value: str) -> int:
    rate = positive_int(value)
    if rate < MIN_SAMPLE_RATE:
        raise argparse.ArgumentTypeError(f"at least {MIN_SAMPLE_RATE} Hz, got {value}")
    return rate


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve` to an argparse subparsers object: its options are the parameters of
    `Transcriber`, `serve` and the fields of `ServeOptions`. It sets `func`, a callable(args)
    → exit code (0 after a clean shutdown)."""
    p = subparsers.add_parser(
        "serve",
        help="HTTP server: POST /transcribe (multipart field `file`) → JSON text and kana",
        description="Load a model once and answer POST /transcribe (multipart/form-data, audio "
        "in the field `file`) with {text, kana, duration_s, elapsed_s, batch_size}, GET /health "
        "with the model and queue. Requests that arrive together are decoded as one batch. "
        "For a public deployment, put a reverse proxy in front (docs/inference.md: Reliability). "
        f"Needs the optional extras ({EXTRAS_MESSAGE.split(': ')[1]}).",
    )
    add_options(
        p,
        Transcriber.__init__,
        help=TRANSCRIBER_HELP,
    )
    add_options(p, serve, help={"host": "address to listen on (0.0.0.0: all)", "port": "TCP port"})
    add_options(
        p,
        ServeOptions,
        help={
            "max_upload_mb": "larger request bodies get 413 (MiB)",
            "max_duration_s": f"longer audio gets 422 (s, at most {MAX_DURATION_S:g})",
            "max_batch": "requests decoded together",
            "batch_wait_ms": "how long a request waits for others to join it",
            "max_queue": "requests admitted to wait for a decode; more get 503",
            "decode_workers": "threads decoding uploads to 16-kHz mono",
            "max_channels": "uploads with more channels get 415",
            "max_sample_rate": "uploads at a higher rate get 415 (Hz)",
            "max_requests": "requests handled at once; more get 503 (/health never)",
            "max_connections": "open connections; past it the one idle longest is closed",
            "request_timeout_s": "headers, then body, must each arrive within (s)",
            "keep_alive_s": "idle keep-alive connections are closed after (s)",
        },
        value_types={
            "max_upload_mb": positive_float,
            "max_duration_s": _duration_s,
            "max_batch": positive_int,
            "batch_wait_ms": non_negative_float,
            "max_queue": positive_int,
            "decode_workers": positive_int,
            "max_channels": positive_int,
            "max_sample_rate": _sample_rate,
            "max_requests": positive_int,
            "max_connections": positive_int,
            "request_timeout_s": positive_float,
            "keep_alive_s": positive_int,
        },
    )
    p.set_defaults(func=_serve_command)


def _serve_command(args: argparse.Namespace) -> int:
    require_extras()  # before the model loads
    options = call(ServeOptions, args)  # its errors too
    call(serve, args, transcriber=call(Transcriber, args), options=options)
    return 0
