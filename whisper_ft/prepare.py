"""Corpus preparation: corpus on disk → train/val/test manifests, disjoint by speaker and sentence.

    prepare_jvs(root, out)        JVS (or any corpus in its layout) → <out>/{train,val,test}.jsonl
    prepare_synthetic(out)        an offline corpus spoken by OpenJTalk → the same three manifests

Other layouts (CSV, Common Voice TSV, a folder of transcribed audio, Hugging Face datasets)
and merging manifests live in `whisper_ft.sources`; `prepare` has a subcommand for each.

The split is disjoint by speaker AND by sentence text. In JVS every speaker reads the same
100 sentences (parallel100), so a split by speaker alone would still score the model on
sentences it was trained on. `split_disjoint` gives every speaker and every distinct sentence
(keyed by `text.normalize`) one split, and keeps an utterance only where the two agree.
Each manifest line gets its `kana` (pyopenjtalk) and `duration` here, once, and `target`:
the field it was made to train on (`--target kana`, the default, or `text`, which keeps the
original orthography and needs no kana).
"""

import argparse
import hashlib
import os
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from whisper.audio import SAMPLE_RATE

from whisper_ft.audio import audio_duration_s
from whisper_ft.files import atomic_write
from whisper_ft.manifest import Utterance, write_manifest
from whisper_ft.text import normalize, to_kana

SPLITS = ("train", "val", "test")
TARGETS = ("kana", "text")  # manifest fields a model can learn to write (Utterance.target)
NO_KANA = "text OpenJTalk reads as no kana"  # why _fill_kana leaves an utterance out
VAL_FRACTION = 0.05  # share of speakers, and of sentences read across splits, held out for val
TEST_FRACTION = 0.10  # the same for test
MIN_SPEAKERS = 3  # one each for train, val and test

JVS_SUBSETS = ("parallel100", "nonpara30", "whisper10", "falset10")  # the four in jvs_ver1
JVS_TRANSCRIPT = "transcripts_utf8.txt"  # in root/<speaker>/<subset>/
JVS_WAV_DIR = "wav24kHz16bit"  # in root/<speaker>/<subset>/: UTTID.wav per transcript line

SYNTHETIC_SENTENCES = Path(__file__).parent / "assets" / "synthetic_ja.txt"
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


@dataclass
class SplitResult:
    """Utterances kept in each split, and how many were left out for which reason."""

    train: list[Utterance]
    val: list[Utterance]
    test: list[Utterance]
    dropped: Counter[str] = field(default_factory=Counter)  # reason → number of utterances

    def splits(self) -> dict[str, list[Utterance]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def split_disjoint(
    utterances: list[Utterance],
    *,
    val_speakers: list[str] | None = None,
    test_speakers: list[str] | None = None,
    n_val_speakers: int | None = None,
    n_test_speakers: int | None = None,
    seed: int = 0,
) -> SplitResult:
    """Split utterances into train/val/test with no speaker and no sentence in two splits.

    1. Speakers: the explicit lists win; the others are picked by a `seed`ed shuffle,
       `n_val_speakers` / `n_test_speakers` of them (None: about 5% / 10%, at least 1 each).
       Every remaining speaker is train.
    2. Sentences, keyed by `text.normalize(text)`: one read only by speakers of one split
       belongs to that split; those read across splits (JVS parallel100) are shared out by a
       seeded shuffle, about 5% to val and 10% to test (at least 1 each from 3 sentences on).
    3. An utterance is kept in split S iff its speaker and its sentence are both in S; the
       others are dropped and counted by reason in `SplitResult.dropped`.

    Raises ValueError for fewer than 3 speakers, unknown or overlapping explicit speakers,
    repeated ids, an utterance without a speaker, and a val or test split left empty.
    """
    _check_ids_and_speakers(utterances)
    speaker_split = _assign_speakers(
        sorted({u.speaker for u in utterances}),
        val_speakers=val_speakers,
        test_speakers=test_speakers,
        n_val=n_val_speakers,
        n_test=n_test_speakers,
        rng=random.Random(seed),
    )
    sentence_split = _assign_sentences(utterances, speaker_split, rng=random.Random(seed + 1))

    kept: dict[str, list[Utterance]] = {name: [] for name in SPLITS}
    dropped: Counter[str] = Counter()
    for u in utterances:
        key = normalize(u.text)
        if not key:
            dropped["text empty once normalised"] += 1
        elif sentence_split[key] != speaker_split[u.speaker]:
            dropped[f"sentence held out for {sentence_split[key]}"] += 1
        else:
            kept[speaker_split[u.speaker]].append(u)

    for name in ("val", "test"):
        if not kept[name]:
            speakers = sorted(s for s, split in speaker_split.items() if split == name)
            raise ValueError(
                f"the {name} split would be empty: its speakers ({', '.join(speakers)}) read "
                f"none of the sentences assigned to {name}. Add subsets in which speakers read "
                "sentences of their own (e.g. nonpara30), name other or fewer "
                f"--{name}-speakers, or try another --seed."
            )
    return SplitResult(train=kept["train"], val=kept["val"], test=kept["test"], dropped=dropped)


def _check_ids_and_speakers(utterances: list[Utterance]) -> None:
    seen: set[str] = set()
    for u in utterances:
        if not u.speaker:
            raise ValueError(f"utterance {u.id!r} has no speaker; a speaker split needs one.")
        if u.id in seen:
            raise ValueError(f"utterance id {u.id!r} is used twice; ids must be unique.")
        seen.add(u.id)
    speakers = sorted({u.speaker for u in utterances})
    if len(speakers) < MIN_SPEAKERS:
        raise ValueError(
            f"found {len(speakers)} speaker(s) ({', '.join(speakers) or 'none'}); a split "
            f"disjoint by speaker needs at least {MIN_SPEAKERS} (one each for train, val, test)."
        )


def _held_out_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(n_val, n_test) for n items: the fractions rounded, at least 1 each when n >= 3."""
    if n < 3:
        return 0, 0
    return max(1, round(val_fraction * n)), max(1, round(test_fraction * n))


def _assign_speakers(
    speakers: list[str],
    *,
    val_speakers: list[str] | None,
    test_speakers: list[str] | None,
    n_val: int | None,
    n_test: int | None,
    rng: random.Random,
) -> dict[str, str]:
    """speaker → split name. `speakers` must be sorted so that the seeded pick is reproducible."""
    explicit = {"val": list(val_speakers or []), "test": list(test_speakers or [])}
    named = explicit["val"] + explicit["test"]
    unknown = sorted(set(named) - set(speakers))
    if unknown:
        raise ValueError(
            f"unknown speaker(s) {', '.join(unknown)}; the corpus has {len(speakers)}: "
            f"{', '.join(speakers[:10])}{' …' if len(speakers) > 10 else ''}."
        )
    both = sorted(set(explicit["val"]) & set(explicit["test"]))
    if both:
        raise ValueError(f"speaker(s) {', '.join(both)} named for both val and test.")

    default_val, default_test = _held_out_counts(len(speakers), VAL_FRACTION, TEST_FRACTION)
    wanted = {
        "val": len(explicit["val"]) or (default_val if n_val is None else n_val),
        "test": len(explicit["test"]) or (default_test if n_test is None else n_test),
    }
    for name, count in wanted.items():
        if count < 1:
            raise ValueError(f"n_{name}_speakers must be at least 1, got {count}.")
    if wanted["val"] + wanted["test"] >= len(speakers):
        raise ValueError(
            f"{wanted['val']} val + {wanted['test']} test speakers leave none of the "
            f"{len(speakers)} for train; hold out fewer speakers."
        )

    split_of = {speaker: name for name in ("val", "test") for speaker in explicit[name]}
    pool = [s for s in speakers if s not in split_of]
    rng.shuffle(pool)
    for name in ("test", "val"):
        if not explicit[name]:
            for speaker in pool[: wanted[name]]:
                split_of[speaker] = name
            pool = pool[wanted[name] :]
    return {speaker: split_of.get(speaker, "train") for speaker in speakers}


def _assign_sentences(
    utterances: list[Utterance], speaker_split: dict[str, str], rng: random.Random
) -> dict[str, str]:
    """normalised sentence → split name (see `split_disjoint`, step 2)."""
    read_in: dict[str, set[str]] = {}
    for u in utterances:
        key = normalize(u.text)
        if key:
            read_in.setdefault(key, set()).add(speaker_split[u.speaker])
    sentence_split = {
        key: next(iter(splits)) for key, splits in read_in.items() if len(splits) == 1
    }
    shared = sorted(key for key, splits in read_in.items() if len(splits) > 1)
    rng.shuffle(shared)
    n_val, n_test = _held_out_counts(len(shared), VAL_FRACTION, TEST_FRACTION)
    for i, key in enumerate(shared):
        sentence_split[key] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return sentence_split


def read_jvs(
    root: str | Path, subsets: Iterable[str] = ("parallel100", "nonpara30")
) -> tuple[list[Utterance], Counter[str]]:
    """Utterances of a corpus in JVS's layout, and what was skipped (reason → count).

    Layout: `root/<speaker>/<subset>/transcripts_utf8.txt` with lines `UTTID:text` (UTF-8; a
    BOM, CRLF and blank lines are fine) and `root/<speaker>/<subset>/wav24kHz16bit/UTTID.wav`.
    Ids are `<speaker>_<subset>_<UTTID>`: whisper10 and falset10 reuse parallel100's UTTIDs.
    `audio` is the wav's absolute path (resampled when loaded); kana and duration are left
    unset. A transcript line without its wav is skipped and counted (nonpara30 lists 50
    sentences per speaker of which 30 were recorded); so is a wav without a transcript line.
    """
    root = Path(root)
    subsets = tuple(subsets)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: no such folder. Pass the unzipped jvs_ver1 folder, the one holding "
            f"jvs001/ … jvs100/ (see datasets/jvs/README.md)."
        )
    speaker_dirs = sorted(
        d for d in root.iterdir() if any((d / s / JVS_TRANSCRIPT).is_file() for s in subsets)
    )
    if not speaker_dirs:
        # A common slip is passing the folder that holds jvs_ver1/: point at the right one.
        nested = sorted(root.glob(f"*/*/*/{JVS_TRANSCRIPT}"))
        hint = f" Did you mean --root {nested[0].parents[2]}?" if nested else ""
        raise ValueError(
            f"{root}: no speaker folders found. Expected {root}/<speaker>/<subset>/"
            f"{JVS_TRANSCRIPT} and {root}/<speaker>/<subset>/{JVS_WAV_DIR}/<UTTID>.wav for "
            f"subsets {', '.join(subsets)}.{hint}"
        )
    found = {s for s in subsets if any((d / s / JVS_TRANSCRIPT).is_file() for d in speaker_dirs)}
    missing = [s for s in subsets if s not in found]
    if missing:
        raise ValueError(
            f"{root}: no speaker has subset(s) {', '.join(missing)}; "
            f"JVS has {', '.join(JVS_SUBSETS)}."
        )

    utterances: list[Utterance] = []
    skipped: Counter[str] = Counter()
    for speaker_dir in speaker_dirs:
        speaker = speaker_dir.name
        for subset in subsets:
            subset_dir = speaker_dir / subset
            if not (subset_dir / JVS_TRANSCRIPT).is_file():
                skipped[f"speaker folder without {subset}"] += 1
                continue
            wav_dir = (subset_dir / JVS_WAV_DIR).resolve()
            transcribed: set[str] = set()
            for utt_id, text in _read_transcript(subset_dir / JVS_TRANSCRIPT, skipped):
                transcribed.add(utt_id)
                wav = wav_dir / f"{utt_id}.wav"
                if not wav.is_file():
                    skipped["transcript line without a wav file"] += 1
                    continue
                utterances.append(
                    Utterance(
                        id=f"{speaker}_{subset}_{utt_id}",
                        audio=str(wav),
                        text=text,
                        speaker=speaker,
                    )
                )
            if wav_dir.is_dir():
                untranscribed = [p for p in wav_dir.glob("*.wav") if p.stem not in transcribed]
                skipped["wav file without a transcript line"] += len(untranscribed)
    return utterances, +skipped  # unary + drops zero counts


def _read_transcript(path: Path, skipped: Counter[str]) -> list[tuple[str, str]]:
    """(UTTID, text) per non-blank line of a JVS transcript; ValueError names file and line.

    A line repeated word for word is skipped and counted; the same UTTID with another text is
    an error, since either text could belong to the wav.
    """
    text_of: dict[str, tuple[str, int]] = {}
    # utf-8-sig drops a byte-order mark; splitlines() takes CRLF and CR as well as LF.
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        utt_id, colon, text = line.partition(":")
        utt_id, text = utt_id.strip(), text.strip()
        if not colon or not utt_id or not text or any(c.isspace() or c in "/\\" for c in utt_id):
            raise ValueError(
                f"{path}:{number}: expected `UTTID:text`, got {line!r}. Fix or remove the line."
            )
        if utt_id in text_of:
            first_text, first_number = text_of[utt_id]
            if text != first_text:
                raise ValueError(
                    f"{path}:{number}: {utt_id} already appears on line {first_number} with "
                    "another text; keep the line that matches the recording."
                )
            skipped["repeated transcript line"] += 1
            continue
        text_of[utt_id] = (text, number)
    return [(utt_id, text) for utt_id, (text, _) in text_of.items()]


def prepare_jvs(
    root: str | Path,
    out: str | Path,
    *,
    subsets: tuple[str, ...] = ("parallel100", "nonpara30"),
    val_speakers: list[str] | None = None,
    test_speakers: list[str] | None = None,
    seed: int = 0,
    target: str = "kana",
) -> dict[str, Path]:
    """Write `<out>/{train,val,test}.jsonl` for a corpus in JVS's layout (see `read_jvs`).

    Speakers and sentences are split disjointly (`split_disjoint`); a summary of what each
    split holds and what was skipped or dropped is printed. `target`: "kana" fills each
    line's katakana, "text" keeps the transcript alone. Returns split name → manifest.
    """
    check_target(target)  # before reading a corpus that may be large
    utterances, skipped = read_jvs(root, subsets)
    n_read = len(utterances)
    utterances = fill_target(utterances, target, skipped)
    result = split_disjoint(
        utterances, val_speakers=val_speakers, test_speakers=test_speakers, seed=seed
    )
    paths = _write_splits(result, Path(out), audio_root=None)
    print(f"prepare jvs: {n_read} utterances read from {root} ({', '.join(subsets)})")
    print(_summary(result, paths, skipped))
    return paths


def prepare_synthetic(
    out: str | Path,
    *,
    n_sentences: int | None = None,
    n_speakers: int = 6,
    seed: int = 0,
    target: str = "kana",
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
    out = Path(out)
    check_target(target)
    if not MIN_SPEAKERS <= n_speakers <= len(SYNTHETIC_VOICES):
        raise ValueError(
            f"n_speakers must be between {MIN_SPEAKERS} (one each for train, val, test) and "
            f"{len(SYNTHETIC_VOICES)} (the voices defined), got {n_speakers}."
        )
    sentences = read_sentences(SYNTHETIC_SENTENCES)
    rng = random.Random(seed)
    order = list(range(len(sentences)))
    rng.shuffle(order)
    if n_sentences is not None:
        if not 3 <= n_sentences <= len(sentences):
            raise ValueError(
                f"n_sentences must be between 3 (one each for train, val, test) and "
                f"{len(sentences)} (the lines of {SYNTHETIC_SENTENCES}), got {n_sentences}."
            )
        order = order[:n_sentences]
    n_val, n_test = _held_out_counts(
        len(order), SYNTHETIC_HELD_OUT_FRACTION, SYNTHETIC_HELD_OUT_FRACTION
    )
    sentence_split = dict.fromkeys(order, "train")  # sentence index → split name
    sentence_split.update(dict.fromkeys(order[:n_test], "test"))
    sentence_split.update(dict.fromkeys(order[n_test : n_test + n_val], "val"))

    speakers = [f"syn{k + 1:02d}" for k in range(n_speakers)]
    val_speaker, test_speaker = rng.sample(speakers, 2)
    speaker_split = dict.fromkeys(speakers, "train") | {val_speaker: "val", test_speaker: "test"}

    utterances: list[Utterance] = []
    jobs: list[tuple[Path, str, tuple[float, float]]] = []
    for k, speaker in enumerate(speakers):
        voice = SYNTHETIC_VOICES[k]
        for i in sorted(order):  # file order, whatever the shuffle
            if sentence_split[i] != speaker_split[speaker]:
                continue
            utt_id = f"{speaker}_{i + 1:03d}"  # sentence = its 1-based place in the asset file
            digest = hashlib.sha1(f"{sentences[i]}|{voice}|{SAMPLE_RATE}".encode()).hexdigest()
            audio = Path("wav") / speaker / f"{utt_id}-{digest[:8]}.wav"
            utterances.append(
                Utterance(id=utt_id, audio=audio.as_posix(), text=sentences[i], speaker=speaker)
            )
            jobs.append((out / audio, sentences[i], voice))

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

    skipped: Counter[str] = Counter()
    result = split_disjoint(
        fill_target(utterances, target, skipped),
        val_speakers=[val_speaker],
        test_speakers=[test_speaker],
        seed=seed,
    )
    paths = _write_splits(result, out, audio_root=out)
    print(_summary(result, paths, skipped))
    return paths


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


def check_target(target: str) -> None:
    """ValueError unless `target` is one of TARGETS."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}.")


def fill_target(utterances: list[Utterance], target: str, skipped: Counter[str]) -> list[Utterance]:
    """Record `target` on each utterance; for "kana" also fill the katakana (`_fill_kana`),
    leaving out (and counting) those OpenJTalk reads as nothing. Returns those kept."""
    check_target(target)
    for u in utterances:
        u.target = target
    return _fill_kana(utterances, skipped) if target == "kana" else utterances


def _fill_kana(utterances: list[Utterance], skipped: Counter[str]) -> list[Utterance]:
    """Set each utterance's `kana` (OpenJTalk; `to_kana` reads each distinct text once); keep
    those with any.

    An utterance whose text OpenJTalk reads as nothing has no target to learn: it is counted
    in `skipped` and left out.
    """
    kept = []
    for u in utterances:
        u.kana = to_kana(u.text)
        if normalize(u.kana):
            kept.append(u)
        else:
            skipped[NO_KANA] += 1
    return kept


def _write_splits(result: SplitResult, out: Path, audio_root: Path | None) -> dict[str, Path]:
    """Fill the duration of every kept utterance, then write the three manifests.

    `audio_root`: the folder relative audio paths start from (None: they are all absolute).
    """
    paths: dict[str, Path] = {}
    for name, utterances in result.splits().items():
        for u in utterances:
            u.duration = round(audio_duration_s(u.audio_path(audio_root or ".")), 3)
        paths[name] = write_manifest(out / f"{name}.jsonl", utterances)
    return paths


def _summary(result: SplitResult, paths: dict[str, Path], skipped: Counter[str]) -> str:
    """A few lines: per split utterances, speakers, sentences, hours and manifest path;
    then what was skipped while reading and dropped by the split."""
    lines = []
    for name, utterances in result.splits().items():
        speakers = {u.speaker for u in utterances}
        sentences = {normalize(u.text) for u in utterances}
        hours = sum(u.duration or 0.0 for u in utterances) / 3600
        lines.append(
            f"  {name:<5} {len(utterances):6d} utterances {len(speakers):4d} speakers "
            f"{len(sentences):5d} sentences {hours:7.2f} h  → {paths[name]}"
        )
    for title, counts in (("skipped", skipped), ("dropped", result.dropped)):
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))
        lines.append(f"  {title}: {sum(counts.values())}{' (' + reasons + ')' if reasons else ''}")
    return "\n".join(lines)


def add_prepare_command(subparsers: argparse._SubParsersAction) -> None:
    """Add `prepare jvs`, `prepare synthetic` and the sources of `whisper_ft.sources` (csv,
    tsv, folder, hf, merge) to an argparse subparsers object.

    Each subcommand sets `func`, a callable(args) → exit code (0 ok, 1 on a corpus error,
    whose message is printed to stderr).
    """
    prepare = subparsers.add_parser(
        "prepare",
        help="make manifests from a corpus (train/val/test disjoint by speaker and sentence), "
        "or merge manifests",
    )
    corpora = prepare.add_subparsers(
        dest="corpus", required=True, metavar="{jvs,synthetic,csv,tsv,folder,hf,merge}"
    )

    jvs = corpora.add_parser("jvs", help="JVS (or any corpus in its folder layout)")
    jvs.add_argument("--root", required=True, help="the unzipped jvs_ver1 folder")
    jvs.add_argument("--out", required=True, help="folder for train/val/test.jsonl")
    jvs.add_argument(
        "--subsets",
        nargs="+",
        default=["parallel100", "nonpara30"],
        help=f"subset folders to read (JVS has {', '.join(JVS_SUBSETS)})",
    )
    jvs.add_argument("--val-speakers", nargs="+", help="speakers for val (default: seeded ~5%%)")
    jvs.add_argument("--test-speakers", nargs="+", help="speakers for test (default: seeded ~10%%)")
    jvs.add_argument("--seed", type=int, default=0, help="seed of the speaker and sentence split")
    add_target_option(jvs)
    jvs.set_defaults(func=_run(_prepare_jvs_from_args))

    synthetic = corpora.add_parser("synthetic", help="an offline corpus spoken by OpenJTalk")
    synthetic.add_argument("--out", required=True, help="folder for wav/ and the manifests")
    synthetic.add_argument("--n-sentences", type=int, help="use N sentences (default: all)")
    synthetic.add_argument(
        "--n-speakers", type=int, default=6, help=f"voices, 3 to {len(SYNTHETIC_VOICES)}"
    )
    synthetic.add_argument("--seed", type=int, default=0, help="seed of the sentence split")
    add_target_option(synthetic)
    synthetic.set_defaults(func=_run(_prepare_synthetic_from_args))

    # Imported here: sources builds on this module's split and helpers.
    from whisper_ft.sources import add_source_commands

    add_source_commands(corpora)


def add_target_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default="kana",
        help="field to train on, recorded on every line: kana (katakana by OpenJTalk, the "
        "default) or text (the transcript's own orthography)",
    )


def _prepare_jvs_from_args(args: argparse.Namespace) -> None:
    prepare_jvs(
        args.root,
        args.out,
        subsets=tuple(args.subsets),
        val_speakers=args.val_speakers,
        test_speakers=args.test_speakers,
        seed=args.seed,
        target=args.target,
    )


def _prepare_synthetic_from_args(args: argparse.Namespace) -> None:
    prepare_synthetic(
        args.out,
        n_sentences=args.n_sentences,
        n_speakers=args.n_speakers,
        seed=args.seed,
        target=args.target,
    )


def _run(prepare: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    """`prepare` as a command: exit code 0, or 1 with the error's message on stderr.

    Only the errors that describe a corpus or an argument (ValueError, which includes
    ManifestError and AudioError, a missing file, and a missing optional package such as
    `datasets`, whose message says what to install) are turned into messages; anything else
    is a bug and keeps its traceback.
    """

    def command(args: argparse.Namespace) -> int:
        try:
            prepare(args)
        except (ValueError, FileNotFoundError, ModuleNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0

    return command
