"""Sentences spoken by espeak-ng: a held-out set in another language and another synthesiser,
e.g. the English retention set (`assets/retention_en.txt`) that shows what a Japanese
fine-tune forgot (`evaluation.retention`).

    prepare_espeak(out, sentences, voice)   sentences → <out>/wav/*.wav (16 kHz) and
                                            <out>/<name>.jsonl, target "text"
    speak(text, path, voice)                one sentence → a 16-kHz wav
    retention_set(root, language)           the retention set under <root>/retention, built
                                            once; None (and why, warned) without espeak-ng
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from whisper.audio import SAMPLE_RATE

from whisper_ft.corpora.synthetic import read_sentences
from whisper_ft.files import atomic_write
from whisper_ft.manifest import Utterance, write_manifest

RETENTION_SENTENCES = Path(__file__).parents[1] / "assets" / "retention_en.txt"
ESPEAK = "espeak-ng"
INSTALL_ESPEAK = (
    "install espeak-ng (Debian/Ubuntu: apt-get install espeak-ng; macOS: brew install espeak-ng)"
)


RETENTION_NOT_MEASURED = (
    f"retention not measured: {ESPEAK} is not installed (Debian: apt-get install espeak-ng)"
)
RETENTION_SETS = {"en": RETENTION_SENTENCES}  # language → its sentences (espeak-ng's voice)


def espeak_path() -> str:
    """The espeak-ng executable; RuntimeError saying how to install it when it is missing."""
    found = shutil.which(ESPEAK)
    if found is None:
        raise RuntimeError(f"{ESPEAK} is not on PATH; {INSTALL_ESPEAK}.")
    return found


def speak(text: str, path: str | Path, voice: str = "en") -> Path:
    """Speak `text` with espeak-ng's `voice` (`espeak-ng -v <voice>`) and write it to `path`:
    mono, 16 kHz (resampled from espeak-ng's 22.05 kHz by soxr), 16-bit PCM wav, atomically."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="whisper-ft-espeak-") as tmp_dir:
        raw = Path(tmp_dir) / "raw.wav"
        # "--" ends the options: a sentence starting with "-" is read, not parsed as a flag.
        done = subprocess.run(
            [espeak_path(), "-v", voice, "-w", str(raw), "--", text],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not raw.is_file():
            reason = done.stderr.strip() or f"exit status {done.returncode}"
            raise RuntimeError(
                f"{ESPEAK} -v {voice} failed on {text!r}: {reason}; "
                f"check the voice name (`{ESPEAK} --voices` lists them)."
            )
        wave, rate = sf.read(raw, dtype="float64", always_2d=True)
    wave = soxr.resample(wave.mean(axis=1), rate, SAMPLE_RATE, quality="HQ")
    with atomic_write(path) as tmp:
        sf.write(tmp, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return path


def prepare_espeak(
    out: str | Path,
    sentences: list[str] | str | Path | None = None,
    voice: str = "en",
    name: str = "retention_en",
) -> Path:
    """Speak `sentences` with espeak-ng's `voice` and write `<out>/<name>.jsonl`.

    `sentences`: a list of strings, a text file of one sentence a line, or None for the
    English retention set (`RETENTION_SENTENCES`, 24 everyday sentences). Audio goes to
    `<out>/wav/<name>/<id>-<hash>.wav` (16 kHz); the hash covers the text and the voice, so a
    re-run reuses what exists and never a stale file. Each line has target "text" (the
    sentence as written is the reference), the duration, speaker `espeak-<voice>` and no kana.
    Returns the manifest's path.
    """
    out = Path(os.path.abspath(out))
    if sentences is None or isinstance(sentences, str | Path):
        sentences = read_sentences(sentences or RETENTION_SENTENCES)
    if not sentences:
        raise ValueError("`sentences` is empty: give at least one sentence to speak.")
    espeak_path()  # the install hint before any file is written
    utterances = []
    for number, text in enumerate(sentences, start=1):
        utt_id = f"{name}_{number:03d}"
        digest = hashlib.sha1(f"{text}|{voice}|{SAMPLE_RATE}".encode()).hexdigest()[:8]
        audio = Path("wav") / name / f"{utt_id}-{digest}.wav"
        if not (out / audio).is_file():
            speak(text, out / audio, voice)
        utterances.append(
            Utterance(
                id=utt_id,
                audio=audio.as_posix(),
                text=text,
                duration=sf.info(out / audio).duration,
                speaker=f"espeak-{voice}",
                target="text",
            )
        )
    return write_manifest(out / f"{name}.jsonl", utterances)


def retention_set(root: str | Path, language: str = "en") -> Path | None:
    """The retention set of `language` (`RETENTION_SETS`) spoken by espeak-ng under
    `<root>/retention/` (`prepare_espeak`: made on the first call, its audio reused after), for
    `evaluation.retention`; `test` and the demo score it. None when espeak-ng is not installed,
    with a warning saying so (`RETENTION_NOT_MEASURED`): the caller goes on without it."""
    if language not in RETENTION_SETS:
        raise ValueError(
            f"no retention sentences for language {language!r} (there are for "
            f"{', '.join(RETENTION_SETS)}): set retention_language to one of them, or empty."
        )
    if shutil.which(ESPEAK) is None:
        warnings.warn(RETENTION_NOT_MEASURED, stacklevel=2)
        return None
    return prepare_espeak(
        Path(root) / "retention", RETENTION_SETS[language], language, f"retention_{language}"
    )
