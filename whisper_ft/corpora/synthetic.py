"""An offline Japanese corpus spoken by OpenJTalk: the stand-in for JVS where no corpus can be
downloaded (tests, the demo, benchmarks).

    prepare_synthetic(out)   assets/synthetic_ja.txt × OpenJTalk voices → <out>/wav/ and
                             <out>/{train,val,test}.jsonl, disjoint by speaker and sentence
    synthesize(text, path)   one sentence → a 16-kHz wav
    prepare_long_recordings(out)
                             <out>/test.jsonl's utterances joined with pauses → recordings of
                             40 s and more, <out>/long.jsonl with each sentence's known times
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

from whisper_ft.audio import load_audio
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
from whisper_ft.manifest import Target, Utterance, read_manifest, write_manifest
from whisper_ft.text import normalize, to_kana

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


LONG_MIN_DURATION_S = 40.0  # well past Whisper's 30-s window: at least one window boundary


def prepare_long_recordings(
    out: str | Path,
    manifest: str | Path | None = None,
    *,
    n_recordings: int = 4,
    sentences_per_recording: int = 12,
    pause_s: tuple[float, float] = (0.3, 1.2),
    min_duration_s: float = LONG_MIN_DURATION_S,
    seed: int = 0,
) -> Path:
    """Long-form test recordings: utterances of `manifest` (default `<out>/test.jsonl`, the
    held-out voice and sentences `prepare_synthetic` wrote) joined with seeded pauses, and
    `<out>/long.jsonl` with one line per recording.

    Each recording takes `sentences_per_recording` different utterances in a seeded order,
    and more while it is shorter than `min_duration_s`; every utterance is preceded by a
    pause drawn uniformly from `pause_s` (seconds, low high), and one more ends the recording.
    A line holds `text` and `kana` (the sentences' joined), `duration`, `speaker` and
    `segments`: [{"start", "end", "text", "kana"}] in seconds, the known sentence times (to
    the microsecond, so exact to the sample). Audio goes to `<out>/long/<id>-<hash>.wav`
    (16 kHz, 16-bit PCM, written atomically); the hash covers the sources and the pauses, so a
    re-run reuses what exists and never a stale file. Returns the manifest's path.
    """
    out = Path(os.path.abspath(out))
    manifest = Path(manifest) if manifest is not None else out / "test.jsonl"
    low, high = _pause_range(pause_s)
    if n_recordings < 1 or sentences_per_recording < 1:
        raise ValueError(
            f"`n_recordings` and `sentences_per_recording` must be at least 1, got "
            f"{n_recordings} and {sentences_per_recording}."
        )
    sources = read_manifest(manifest)
    if len(sources) < sentences_per_recording:
        raise ValueError(
            f"{manifest}: {len(sources)} utterances, fewer than `sentences_per_recording` "
            f"({sentences_per_recording}); lower it, or prepare more sentences "
            "(`prepare synthetic` without --n-sentences)."
        )
    rng = random.Random(seed)
    recordings: list[Utterance] = []
    for k in range(n_recordings):
        order = rng.sample(sources, len(sources))
        chosen: list[Utterance] = []
        waves: list[np.ndarray] = []
        pauses: list[int] = []  # samples of silence before each utterance, then the last one
        length = 0
        for u in order:
            if len(chosen) >= sentences_per_recording and length >= min_duration_s * SAMPLE_RATE:
                break
            wave = load_audio(u.audio_path(manifest.parent))
            pauses.append(round(rng.uniform(low, high) * SAMPLE_RATE))
            chosen.append(u)
            waves.append(wave)
            length += pauses[-1] + len(wave)
        pauses.append(round(rng.uniform(low, high) * SAMPLE_RATE))
        length += pauses[-1]
        if length < min_duration_s * SAMPLE_RATE:
            raise ValueError(
                f"{manifest}: all {len(sources)} utterances make {length / SAMPLE_RATE:.1f} s, "
                f"shorter than `min_duration_s` ({min_duration_s}); lower it, or give a "
                "manifest with more utterances."
            )
        segments, parts, at = [], [], 0
        for u, wave, pause in zip(chosen, waves, pauses, strict=False):
            at += pause
            kana = u.kana if u.kana is not None else to_kana(u.text)
            segments.append({
                "start": round(at / SAMPLE_RATE, 6),
                "end": round((at + len(wave)) / SAMPLE_RATE, 6),
                "text": u.text,
                "kana": kana,
            })  # fmt: skip
            parts += [np.zeros(pause, np.float32), wave]
            at += len(wave)
        parts.append(np.zeros(pauses[-1], np.float32))
        rec_id = f"long_{k + 1:02d}"
        key = "|".join(
            [str(SAMPLE_RATE), *(f"{u.id}:{u.audio}" for u in chosen), *map(str, pauses)]
        )
        audio = out / "long" / f"{rec_id}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.wav"
        if not audio.is_file():
            with atomic_write(audio) as tmp:
                wave = np.clip(np.concatenate(parts), -1.0, 1.0)
                sf.write(tmp, wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        recordings.append(
            Utterance(
                id=rec_id,
                audio=audio.relative_to(out).as_posix(),
                text="".join(u.text for u in chosen),
                kana="".join(s["kana"] for s in segments),
                duration=round(length / SAMPLE_RATE, 3),
                speaker="+".join(dict.fromkeys(u.speaker or "" for u in chosen)) or None,
                extra={"segments": segments},
            )
        )
    total = sum(r.duration for r in recordings)
    print(f"prepare long: {len(recordings)} recordings, {total:.0f} s, from {manifest}")
    return write_manifest(out / "long.jsonl", recordings)


def _pause_range(pause_s: tuple[float, float]) -> tuple[float, float]:
    if len(pause_s) != 2 or not 0 <= pause_s[0] <= pause_s[1]:
        raise ValueError(
            f"`pause_s` must be two seconds, low then high (0 ≤ low ≤ high), got {pause_s}."
        )
    return float(pause_s[0]), float(pause_s[1])
