"""Transcribe audio files with any model `load_base_model` accepts, decoding as evaluation does."""

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
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


class Transcriber:
    """A model loaded once that decodes batches of waveforms as evaluation does: greedy,
    no timestamps, the language token of the checkpoint (or `language`), fp16 on CUDA.
    Shared by `transcribe` and `serve`; not thread-safe (one caller at a time)."""

    def __init__(
        self, model_spec: str, language: str | None = None, device: str | None = None
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, model_language = load_for_transcription(model_spec, self.device)
        self.language = language or model_language
        self.options = decoding_options(self.language, "transcribe", self.device)

    @torch.inference_mode()
    def __call__(self, waveforms: list[np.ndarray]) -> list[str]:
        """One text per waveform (16-kHz mono float32 as `load_audio` returns it); each is
        padded or trimmed to Whisper's 30-s window, so only a longer one's first 30 s count."""
        if not waveforms:
            return []
        audio = torch.stack(
            [torch.from_numpy(whisper.pad_or_trim(w, N_SAMPLES)) for w in waveforms]
        )
        mel = log_mel_batch(audio.to(self.device), self.model.dims.n_mels)
        return decode_texts(self.model, mel, self.options)


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
    transcriber = Transcriber(model_spec, language=language, device=device)
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
            waveforms.append(audio)
        yield from zip(chunk, transcriber(waveforms), strict=True)
