"""An offline Japanese corpus spoken by OpenJTalk: the stand-in for JVS where no corpus can be
downloaded (tests, the demo, benchmarks).

    prepare_synthetic(out)   assets/synthetic_ja.txt × OpenJTalk voices → <out>/wav/ and
                             <out>/{train,val,test}.jsonl, disjoint by speaker and sentence
    synthesize(text, path)   one sentence → a 16-kHz wav
"""

import hashlib
import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from whisper.audio import SAMPLE_RATE

from whisper_ft.corpora.common import (
    Entry,
    Skipped,
    check_target,
    relative_audio,
    utterances_from_entries,
    write_manifests,
)
from whisper_ft.corpora.split import MIN_SPEAKERS, SplitOptions, held_out_counts
from whisper_ft.files import atomic_write
from whisper_ft.manifest import Target
from whisper_ft.text import normalize

SYNTHETIC_SENTENCES = Path(__file__).parents[1] / "assets" / "synthetic_ja.txt"
SYNTHETIC_HELD_OUT_FRACTION = 0.10  # share of sentences for val, and again for test
# OpenJTalk's one voice made into several: (speed, half_tone) per synthetic speaker. Speed
# changes the speaking rate, half_tone shifts the pitch in semitones (low ≈ male-like voices).
SYNTHETIC_VOICES = (
    (1.00, 0.0),
    (0.90, -4.0),
    (1.15, 3.0),
    (1.05, -8.0),
    (0.85, 2.0),
    (1.20, -2.0),
    (0.95, 5.0),
    (1.10, -6.0),
)


def prepare_synthetic(
    out: str | Path,
    *,
    n_sentences: int | None = None,
    n_speakers: int = 6,
    seed: int = 0,
    target: Target = "kana",
) -> dict[str, Path]:
    """Make an offline corpus with OpenJTalk's speech synthesis; write its three manifests.

    Sentences come from `assets/synthetic_ja.txt` (`n_sentences`: the first N after a seeded
    shuffle; None: all). Speakers are `SYNTHETIC_VOICES[:n_speakers]`, named syn01, syn02, …:
    one is val, one test, the rest train (a seeded pick). Sentences are shared out about 10%
    val, 10% test, the rest train, and each speaker reads only its split's sentences, so the
    corpus is disjoint by speaker and sentence and nothing is synthesised only to be dropped.

    Audio goes to `<out>/wav/<speaker>/<id>-<hash>.wav` (16 kHz, 16-bit PCM); the hash covers
    the text and the voice, so a re-run reuses what exists and never a stale file. Manifest
    audio paths are relative to `out`. `target` as in `prepare_jvs`. Returns split name →
    manifest.
    """
    out = Path(os.path.abspath(out))
    check_target(target)
    if not MIN_SPEAKERS <= n_speakers <= len(SYNTHETIC_VOICES):
        raise ValueError(
            f"`n_speakers` must be between {MIN_SPEAKERS} (one each for train, val, test) and "
            f"{len(SYNTHETIC_VOICES)} (the voices defined), got {n_speakers}."
        )
    sentences = read_sentences(SYNTHETIC_SENTENCES)
    rng = random.Random(seed)
    order = list(range(len(sentences)))
    rng.shuffle(order)
    if n_sentences is not None:
        if not 3 <= n_sentences <= len(sentences):
            raise ValueError(
                f"`n_sentences` must be between 3 (one each for train, val, test) and "
                f"{len(sentences)} (the lines of {SYNTHETIC_SENTENCES}), got {n_sentences}."
            )
        order = order[:n_sentences]
    n_val, n_test = held_out_counts(
        len(order), SYNTHETIC_HELD_OUT_FRACTION, SYNTHETIC_HELD_OUT_FRACTION
    )
    sentence_split = dict.fromkeys(order, "train")  # sentence index → split name
    sentence_split.update(dict.fromkeys(order[:n_test], "test"))
    sentence_split.update(dict.fromkeys(order[n_test : n_test + n_val], "val"))

    speakers = [f"syn{k + 1:02d}" for k in range(n_speakers)]
    val_speaker, test_speaker = rng.sample(speakers, 2)
    speaker_split = dict.fromkeys(speakers, "train") | {val_speaker: "val", test_speaker: "test"}

    entries: list[Entry] = []
    jobs: list[tuple[Path, str, tuple[float, float]]] = []
    for k, speaker in enumerate(speakers):
        voice = SYNTHETIC_VOICES[k]
        for i in sorted(order):  # file order, whatever the shuffle
            if sentence_split[i] != speaker_split[speaker]:
                continue
            utt_id = f"{speaker}_{i + 1:03d}"  # sentence = its 1-based place in the asset file
            digest = hashlib.sha1(f"{sentences[i]}|{voice}|{SAMPLE_RATE}".encode()).hexdigest()
            audio = out / "wav" / speaker / f"{utt_id}-{digest[:8]}.wav"
            entries.append(Entry(str(audio), audio, sentences[i], speaker, utt_id))
            jobs.append((audio, sentences[i], voice))

    todo = [job for job in jobs if not job[0].is_file()]
    workers = min(len(todo), os.cpu_count() or 1)
    print(
        f"prepare synthetic: {len(jobs)} utterances, {len(jobs) - len(todo)} already on disk, "
        f"synthesising {len(todo)} in {workers} process(es)"
    )
    if todo:
        # Each utterance is independent and OpenJTalk runs on one core: use them all.
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for done, _ in enumerate(pool.map(_synthesize_job, todo, chunksize=8), start=1):
                if done % 100 == 0:
                    print(f"  {done}/{len(todo)} synthesised", flush=True)

    skipped = Skipped()
    utterances = utterances_from_entries(entries, skipped)
    relative_audio(utterances, out)
    return write_manifests(
        "synthetic",
        {"all": utterances},
        skipped,
        out,
        target=target,
        split=SplitOptions([val_speaker], [test_speaker], seed),
    )


def read_sentences(path: str | Path) -> list[str]:
    """Non-blank lines of a UTF-8 text file, stripped; ValueError if one repeats."""
    path = Path(path)
    sentences: list[str] = []
    first_line_of: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        sentence = line.strip()
        if not sentence:
            continue
        key = normalize(sentence)
        if key in first_line_of:
            raise ValueError(
                f"{path}:{number}: the same sentence as line {first_line_of[key]}; remove one."
            )
        first_line_of[key] = number
        sentences.append(sentence)
    return sentences


def synthesize(text: str, path: str | Path, *, speed: float = 1.0, half_tone: float = 0.0) -> Path:
    """Speak `text` with OpenJTalk and write it to `path`: mono, 16 kHz, 16-bit PCM wav.

    Written to a temporary file first, so an interrupted run never leaves a truncated wav
    that a re-run would take as done.
    """
    import pyopenjtalk  # imported here: loading its voice and dictionary costs time

    path = Path(path)
    wave, rate = pyopenjtalk.tts(text, speed=speed, half_tone=half_tone)
    wave = wave / 32768.0  # float64 in int16 range → [-1, 1]
    peak = float(np.abs(wave).max(initial=0.0))
    if peak > 0.99:  # lower voices overshoot full scale; scale down instead of clipping
        wave = wave * (0.99 / peak)
    wave = soxr.resample(wave, rate, SAMPLE_RATE, quality="HQ")
    with atomic_write(path) as tmp:
        sf.write(tmp, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return path


def _synthesize_job(job: tuple[Path, str, tuple[float, float]]) -> Path:
    path, text, (speed, half_tone) = job
    return synthesize(text, path, speed=speed, half_tone=half_tone)
