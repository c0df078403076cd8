"""JVS (or any corpus in its folder layout) → train/val/test manifests, disjoint by speaker
and sentence.

    prepare_jvs(root, out)   root/<speaker>/<subset>/{transcripts_utf8.txt,wav24kHz16bit/} →
                             <out>/{train,val,test}.jsonl

Download notes: datasets/jvs/README.md.
"""

from collections.abc import Iterable
from pathlib import Path

from whisper_ft.corpora.common import (
    Entry,
    Skipped,
    check_target,
    utterances_from_entries,
    write_manifests,
)
from whisper_ft.corpora.split import SplitOptions
from whisper_ft.manifest import Target, Utterance

JVS_SUBSETS = ("parallel100", "nonpara30", "whisper10", "falset10")  # the four in jvs_ver1
DEFAULT_SUBSETS = ("parallel100", "nonpara30")  # read by default: every speaker's own voice
JVS_TRANSCRIPT = "transcripts_utf8.txt"  # in root/<speaker>/<subset>/
JVS_WAV_DIR = "wav24kHz16bit"  # in root/<speaker>/<subset>/: UTTID.wav per transcript line


def read_jvs(
    root: str | Path, subsets: Iterable[str] = DEFAULT_SUBSETS
) -> tuple[list[Utterance], Skipped]:
    """Utterances of a corpus in JVS's layout, and what was skipped (reason → count).

    Layout: `root/<speaker>/<subset>/transcripts_utf8.txt` with lines `UTTID:text` (UTF-8; a
    BOM, CRLF and blank lines are fine) and `root/<speaker>/<subset>/wav24kHz16bit/UTTID.wav`.
    Ids are `<speaker>_<subset>_<UTTID>`: whisper10 and falset10 reuse parallel100's UTTIDs.
    `audio` is the wav's absolute path (resampled when loaded); duration is read from its
    header. A transcript line without its wav is skipped and counted (nonpara30 lists 50
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
        hint = f" Did you mean `root` {nested[0].parents[2]}?" if nested else ""
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

    entries: list[Entry] = []
    skipped = Skipped()
    for speaker_dir in speaker_dirs:
        speaker = speaker_dir.name
        for subset in subsets:
            subset_dir = speaker_dir / subset
            if not (subset_dir / JVS_TRANSCRIPT).is_file():
                skipped.add(f"speaker folder without {subset}", str(subset_dir))
                continue
            wav_dir = (subset_dir / JVS_WAV_DIR).resolve()
            transcribed: set[str] = set()
            for where, utt_id, text in _read_transcript(subset_dir / JVS_TRANSCRIPT, skipped):
                transcribed.add(utt_id)
                wav = wav_dir / f"{utt_id}.wav"
                if not wav.is_file():
                    skipped.add("transcript line without a wav file", where)
                    continue
                entries.append(Entry(where, wav, text, speaker, f"{speaker}_{subset}_{utt_id}"))
            if wav_dir.is_dir():
                for wav in sorted(wav_dir.glob("*.wav")):
                    if wav.stem not in transcribed:
                        skipped.add("wav file without a transcript line", str(wav))
    return utterances_from_entries(entries, skipped), skipped


def _read_transcript(path: Path, skipped: Skipped) -> list[tuple[str, str, str]]:
    """("file:line", UTTID, text) per non-blank line of a JVS transcript; a ValueError names
    the file and line.

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
            skipped.add("repeated transcript line", f"{path}:{number}")
            continue
        text_of[utt_id] = (text, number)
    return [(f"{path}:{n}", utt_id, text) for utt_id, (text, n) in text_of.items()]


def prepare_jvs(
    root: str | Path,
    out: str | Path,
    *,
    subsets: tuple[str, ...] = DEFAULT_SUBSETS,
    val_speakers: list[str] | None = None,
    test_speakers: list[str] | None = None,
    seed: int = 0,
    target: Target = "kana",
) -> dict[str, Path]:
    """Write `<out>/{train,val,test}.jsonl` for a corpus in JVS's layout (see `read_jvs`).

    Speakers and sentences are split disjointly (`split.split_disjoint`); a summary of what
    each split holds and what was skipped or dropped is printed. `target`: "kana" fills each
    line's katakana, "text" keeps the transcript alone. Returns split name → manifest.
    """
    check_target(target)  # before reading a corpus that may be large
    utterances, skipped = read_jvs(root, subsets)
    print(f"prepare jvs: {len(utterances)} utterances read from {root} ({', '.join(subsets)})")
    return write_manifests(
        "jvs",
        {"all": utterances},
        skipped,
        out,
        target=target,
        split=SplitOptions(val_speakers, test_speakers, seed),
    )
