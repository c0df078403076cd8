"""Transcribe audio files with any model `load_base_model` accepts, decoding as evaluation does."""

import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import whisper
from whisper.audio import N_SAMPLES, SAMPLE_RATE

from whisper_ft.audio import load_audio, log_mel_batch
from whisper_ft.decoding import decode_texts, decoding_options
from whisper_ft.model import load_base_model, read_lightning_checkpoint


def default_language(model_spec: str) -> str:
    """The language a `.ckpt` was fine-tuned for; `ja` for anything else."""
    if Path(model_spec).suffix == ".ckpt":
        return read_lightning_checkpoint(model_spec)[2].get("language", "ja")
    return "ja"


def transcribe_files(
    model_spec: str,
    paths: list[str],
    language: str | None = None,
    batch_size: int = 8,
    device: str | None = None,
) -> Iterator[tuple[str, str]]:
    """Yield `(path, text)` per file, in order, decoding `batch_size` files at a time.

    Each file is read as 16-kHz mono and padded or trimmed to Whisper's 30-s window; only the
    first 30 s of a longer file are transcribed (a warning says so).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_base_model(model_spec, device=device).eval()
    options = decoding_options(language or default_language(model_spec), "transcribe", device)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        waveforms = []
        for path in chunk:
            audio = load_audio(path)
            if len(audio) > N_SAMPLES:
                print(
                    f"warning: {path} lasts {len(audio) / SAMPLE_RATE:.1f} s; only its first "
                    "30 s are transcribed (use whisper.transcribe on the exported .pt for "
                    "long-form audio)",
                    file=sys.stderr,
                )
            waveforms.append(torch.from_numpy(whisper.pad_or_trim(audio, N_SAMPLES)))
        mel = log_mel_batch(torch.stack(waveforms).to(device), model.dims.n_mels)
        yield from zip(chunk, decode_texts(model, mel, options), strict=True)
