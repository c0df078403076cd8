"""Transcribe audio files with any model `load_base_model` accepts, decoding as evaluation does."""

import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import whisper
from whisper.audio import N_SAMPLES, SAMPLE_RATE
from whisper.model import Whisper

from whisper_ft.audio import load_audio, log_mel_batch
from whisper_ft.decoding import decode_texts, decoding_options
from whisper_ft.model import load_base_model, model_from_checkpoint


def load_for_transcription(model_spec: str, device: torch.device) -> tuple[Whisper, str]:
    """The model in eval mode, and its default language: the one a `.ckpt` was fine-tuned
    for, `ja` for anything else. A checkpoint is read once."""
    if Path(model_spec).suffix == ".ckpt":
        model, hyper_parameters = model_from_checkpoint(model_spec)
        return model.to(device).eval(), hyper_parameters.get("language", "ja")
    return load_base_model(model_spec, device=device).eval(), "ja"


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
    model, model_language = load_for_transcription(model_spec, device)
    options = decoding_options(language or model_language, "transcribe", device)
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
