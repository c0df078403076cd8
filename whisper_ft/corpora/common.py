"""The pipeline every corpus goes through: entries read from a source → checked utterances
(with their duration) → target filled → optionally split → manifests written and summarised.

    Entry                     one recording as a source lists it, with where it was listed
    utterances_from_entries   the entries that can be used, as Utterances; the rest in Skipped
    fill_target               record the target; for "kana" fill the katakana (OpenJTalk)
    write_manifests           split if asked, write `<out>/<name>.jsonl`, print the summary

Owns the one skip record (`Skipped`: counts per reason and the first places), the one target
filler and the one manifest writer; the split itself is `corpora.split`.
"""

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from whisper_ft.audio import AudioError, audio_duration_s
from whisper_ft.corpora.split import SplitOptions, split_disjoint
from whisper_ft.manifest import TARGETS, Target, Utterance, path_ids, write_manifest
from whisper_ft.text import normalize, to_kana

N_EXAMPLES = 3  # skipped entries shown per reason
NO_KANA = "text OpenJTalk reads as no kana"  # why `fill_target` leaves an utterance out


@dataclass
class Skipped:
    """Entries left out while reading a corpus: how many per reason, and where the first were."""

    counts: Counter[str] = field(default_factory=Counter)  # reason → entries
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason → first "file:line"s

    def add(self, reason: str, where: str, n: int = 1) -> None:
        """Count `n` entries left out for `reason`; `where` names the first of them."""
        self.counts[reason] += n
        shown = self.examples.setdefault(reason, [])
        if len(shown) < N_EXAMPLES:
            shown.append(where)

    def update(self, other: "Skipped") -> None:
        """Add what `other` counted (and its examples, while fewer than N_EXAMPLES)."""
        for reason, n in other.counts.items():
            self.counts[reason] += n
            shown = self.examples.setdefault(reason, [])
            shown.extend(other.examples[reason][: N_EXAMPLES - len(shown)])

    def lines(self) -> list[str]:
        """`skipped: N (reason: n, …)`, then one line of examples per reason."""
        lines = [count_line("skipped", self.counts)]
        for reason in sorted(self.counts):
            lines.append(f"    {reason}, e.g. {'; '.join(self.examples[reason])}")
        return lines


def count_line(title: str, counts: Counter[str]) -> str:
    """`  title: N (reason: n, …)`."""
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))
    return f"  {title}: {counts.total()}{f' ({reasons})' if reasons else ''}"


@dataclass
class Entry:
    """One transcribed recording as a source lists it, before it is checked."""

    where: str  # "file:line" (or the file) it was read from; named if it is skipped
    audio: Path  # absolute path of the audio file
    text: str  # transcript as written
    speaker: str | None = None  # None: the source names none
    id: str | None = None  # None: made from the audio path (`manifest.path_ids`)


def resolve(path: str, base: Path) -> Path:
    """`path` as written in a list, made absolute: relative paths start from `base`."""
    return Path(os.path.abspath(base / Path(path.strip()).expanduser()))


def read_text(path: Path, where: str, skipped: Skipped) -> str | None:
    """A transcript file's text (UTF-8, a byte-order mark dropped); None, counted, if it is
    not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        skipped.add("transcript file not UTF-8", where)
        return None


def utterances_from_entries(entries: list[Entry], skipped: Skipped) -> list[Utterance]:
    """The entries that pass the checks, as Utterances with their duration (read from the
    audio header). The others are counted in `skipped`: an audio file listed twice, empty
    text, an id already taken, audio missing or unreadable."""
    first_where: dict[Path, str] = {}
    unique: list[Entry] = []
    for entry in entries:
        if entry.audio in first_where:
            first = first_where[entry.audio]
            skipped.add("audio file listed twice", f"{entry.where} (as on {first})")
            continue
        first_where[entry.audio] = entry.where
        unique.append(entry)
    unnamed = [entry for entry in unique if entry.id is None]
    for entry, utt_id in zip(unnamed, path_ids([e.audio for e in unnamed]), strict=True):
        entry.id = utt_id

    utterances: list[Utterance] = []
    taken: set[str] = set()
    for entry in unique:
        text = " ".join(entry.text.split())  # a transcript's line breaks become spaces
        if not text:
            skipped.add("empty text", entry.where)
        elif entry.id in taken:
            skipped.add("id already taken", entry.where)
        elif not entry.audio.is_file():
            skipped.add("audio file missing", entry.where)
        else:
            try:
                duration = audio_duration_s(entry.audio)
            except AudioError:
                skipped.add("audio file unreadable", entry.where)
                continue
            taken.add(entry.id)
            utterances.append(
                Utterance(
                    id=entry.id,
                    audio=str(entry.audio),
                    text=text,
                    duration=round(duration, 3),
                    speaker=entry.speaker,
                )
            )
    return utterances


def relative_audio(utterances: list[Utterance], root: Path) -> None:
    """Rewrite the audio paths under `root` relative to it (the manifests' folder), so that
    the folder can move with its audio."""
    for u in utterances:
        if Path(u.audio).is_relative_to(root):
            u.audio = Path(u.audio).relative_to(root).as_posix()


def check_target(target: str) -> None:
    """ValueError unless `target` is one of TARGETS."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}.")


def fill_target(utterances: list[Utterance], target: Target, skipped: Skipped) -> list[Utterance]:
    """Record `target` on each utterance; for "kana" also fill the katakana (OpenJTalk;
    `to_kana` reads each distinct text once). Returns those kept: an utterance whose text
    OpenJTalk reads as nothing has no target to learn, and is counted in `skipped`."""
    check_target(target)
    kept = []
    for u in utterances:
        u.target = target
        if target == "kana":
            u.kana = to_kana(u.text)
            if not normalize(u.kana):
                skipped.add(NO_KANA, f"{u.id} ({u.text!r})")
                continue
        kept.append(u)
    return kept


def write_manifests(
    source: str,
    sets: dict[str, list[Utterance]],
    skipped: Skipped,
    out: str | Path,
    *,
    target: Target,
    split: SplitOptions | None,
    speaker_hint: str = "",
) -> dict[str, Path]:
    """Fill the target of every utterance, split the corpus if asked, write one manifest per
    set (`<out>/<name>.jsonl`) and print what each holds and what was left out.

    `sets`: manifest name → utterances; `split` needs exactly one set (the whole corpus).
    `speaker_hint` tells how this source gets speakers, for the error when one has none.
    Returns manifest name → path.
    """
    out = Path(os.path.abspath(out))
    sets = {name: fill_target(utterances, target, skipped) for name, utterances in sets.items()}
    if not any(sets.values()):
        raise ValueError(
            f"{source}: no usable utterance, nothing written.\n" + "\n".join(skipped.lines())
        )
    dropped: Counter[str] | None = None
    if split is not None:
        (corpus,) = sets.values()
        no_speaker = [u for u in corpus if u.speaker is None]
        if no_speaker:
            raise ValueError(
                f"`split` needs a speaker for every utterance and {len(no_speaker)} have none "
                f"(e.g. {no_speaker[0].id}); {speaker_hint or 'give each one a speaker'}, or "
                "leave out `split` to write all.jsonl."
            )
        result = split_disjoint(
            corpus,
            val_speakers=split.val_speakers,
            test_speakers=split.test_speakers,
            seed=split.seed,
        )
        sets, dropped = result.splits(), result.dropped
    paths = {name: write_manifest(out / f"{name}.jsonl", us) for name, us in sets.items()}
    lines = [*summary_lines(sets, paths), *skipped.lines()]
    if dropped is not None:
        lines.append(count_line("dropped by the split", dropped))
    print("\n".join(lines))
    return paths


def summary_lines(sets: dict[str, list[Utterance]], paths: dict[str, Path]) -> list[str]:
    """Per manifest: utterances, speakers, distinct sentences, hours, path."""
    lines = []
    for name, utterances in sets.items():
        speakers = {u.speaker for u in utterances if u.speaker is not None}
        sentences = {normalize(u.text) for u in utterances}
        hours = sum(u.duration or 0.0 for u in utterances) / 3600
        lines.append(
            f"  {name:<5} {len(utterances):6d} utterances {len(speakers):4d} speakers "
            f"{len(sentences):5d} sentences {hours:7.2f} h  → {paths[name]}"
        )
    return lines
