"""Corpora listed in files or folders: CSV, TSV (Common Voice, ReazonSpeech), a folder of
transcribed audio.

    prepare_csv(csv, out)       deepspeech.pytorch's `audio.wav,transcript.txt` lines, or a
                                CSV with a header `audio,text[,speaker]` → <out>/all.jsonl
    prepare_tsv(path, out)      a Common Voice folder (train/dev/test.tsv, clips/) →
                                <out>/{train,val,test}.jsonl; one TSV → <out>/<its name>.jsonl
    prepare_folder(root, out)   audio files with a same-named .txt or .lab beside them →
                                <out>/all.jsonl

A corpus without splits of its own is written whole to `all.jsonl`; with `split=SplitOptions()`
it is shared into train/val/test, disjoint by speaker and sentence. An entry that cannot be
used is left out, counted and shown with where it is (file:line); one bad entry never stops the
others. Audio stays where it is (absolute paths).
"""

import csv
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from whisper_ft.audio import AUDIO_SUFFIXES
from whisper_ft.corpora.common import (
    Entry,
    Skipped,
    check_target,
    read_text,
    resolve,
    utterances_from_entries,
    write_manifests,
)
from whisper_ft.corpora.split import SplitOptions
from whisper_ft.manifest import Target, Utterance

TRANSCRIPT_SUFFIXES = (".txt", ".lab")  # beside each audio file, looked for in this order
CV_SPLITS = {"train": "train", "dev": "val", "test": "test"}  # Common Voice TSV → manifest name
CV_CLIPS = "clips"  # the folder beside the TSVs that holds the audio named in `path`


def read_csv(path: str | Path) -> tuple[list[Utterance], Skipped]:
    """Utterances listed in a CSV file, and what was skipped.

    Two forms, told apart by the first line:
    - a header naming `audio` and `text` (and optionally `speaker`; other columns are
      ignored): one utterance per row, the transcript inline;
    - no header, two fields per line, `audio.wav,transcript.txt` (deepspeech.pytorch's
      manifest): the transcript is the content of the text file (UTF-8).
    Relative paths start from the CSV's folder. Ids come from the audio file names
    (`path_ids`); duration is read from each audio header.
    """
    path = Path(os.path.abspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CSV file.")
    skipped = Skipped()
    entries: list[Entry] = []
    # utf-8-sig drops a byte-order mark; newline="" lets csv read quoted line breaks.
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f)
        first = next(rows, [])
        names = [name.strip().lower() for name in first]
        if "audio" in names and "text" in names:
            column = {name: i for i, name in enumerate(names)}
            lines = ((rows.line_num, row) for row in rows)
        elif len(first) == 2:
            column = None
            lines = itertools.chain([(1, first)], ((rows.line_num, row) for row in rows))
        else:
            raise ValueError(
                f"{path}:1: expected a header naming `audio` and `text` (and optionally "
                f"`speaker`), or deepspeech.pytorch's `audio.wav,transcript.txt` lines; got "
                f"{first!r}."
            )
        for number, row in lines:
            where = f"{path}:{number}"
            if not any(cell.strip() for cell in row):
                continue
            if column is None:
                entry = _deepspeech_entry(row, path.parent, where, skipped)
            else:
                entry = _header_entry(row, column, path.parent, where, skipped)
            if entry is not None:
                entries.append(entry)
    return utterances_from_entries(entries, skipped), skipped


def _deepspeech_entry(row: list[str], base: Path, where: str, skipped: Skipped) -> Entry | None:
    if len(row) != 2:
        skipped.add("line without 2 fields (audio,transcript)", where)
        return None
    audio, transcript = (resolve(cell, base) for cell in row)
    if not transcript.is_file():
        skipped.add("transcript file missing", where)
        return None
    text = read_text(transcript, where, skipped)
    return None if text is None else Entry(where, audio, text)


def _header_entry(
    row: list[str], column: dict[str, int], base: Path, where: str, skipped: Skipped
) -> Entry | None:
    if len(row) <= max(column.values()):
        skipped.add(f"line with fewer fields than the header's {len(column)}", where)
        return None
    speaker = row[column["speaker"]].strip() if "speaker" in column else ""
    return Entry(where, resolve(row[column["audio"]], base), row[column["text"]], speaker or None)


def read_tsv(path: str | Path, clips: str | Path | None = None) -> tuple[list[Utterance], Skipped]:
    """Utterances of one TSV, and what was skipped.

    Common Voice: a header row; columns used: `path` (file name under `clips`, default
    `<TSV folder>/clips`), `sentence` and `client_id` (the speaker). ReazonSpeech: no header,
    two columns `audio<TAB>transcript`, the audio path relative to the TSV's folder (or
    absolute), no speaker; recognised by its first field naming an audio file. Read without
    quoting: sentences hold quotes.
    """
    path = Path(os.path.abspath(path))
    clips = path.parent / CV_CLIPS if clips is None else Path(os.path.abspath(clips))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such TSV file.")
    skipped = Skipped()
    entries: list[Entry] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, [])
        if len(header) == 2 and Path(header[0]).suffix.lower() in AUDIO_SUFFIXES:
            return _read_headerless_tsv(path, header, rows)
        missing = [name for name in ("path", "sentence") if name not in header]
        if missing:
            raise ValueError(
                f"{path}:1: no {' or '.join(missing)} column; a Common Voice TSV has path, "
                f"sentence and client_id (found: {', '.join(header) or 'nothing'}), a "
                "ReazonSpeech TSV no header and two columns, audio<TAB>transcript."
            )
        for row in rows:
            where = f"{path}:{rows.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                skipped.add(f"line without the header's {len(header)} fields", where)
                continue
            record = dict(zip(header, row, strict=True))
            speaker = record.get("client_id", "").strip() or None
            entries.append(Entry(where, clips / record["path"], record["sentence"], speaker))
    return utterances_from_entries(entries, skipped), skipped


def _read_headerless_tsv(
    path: Path, first: list[str], rows: Iterator[list[str]]
) -> tuple[list[Utterance], Skipped]:
    """The rest of `read_tsv` for ReazonSpeech's `audio<TAB>transcript` lines."""
    skipped = Skipped()
    entries: list[Entry] = []
    for number, row in enumerate(itertools.chain([first], rows), start=1):
        where = f"{path}:{number}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != 2:
            skipped.add("line without 2 fields (audio, transcript)", where)
            continue
        entries.append(Entry(where, path.parent / row[0], row[1], None))
    return utterances_from_entries(entries, skipped), skipped


def read_folder(root: str | Path) -> tuple[list[Utterance], Skipped]:
    """Utterances of a folder (searched recursively) of audio files, each with a same-named
    `.txt` or `.lab` transcript beside it (UTF-8), and what was skipped.

    The speaker is the first folder under `root` (`root/<speaker>/…/x.wav`, so a speaker's
    chapters or sessions stay one speaker); files directly in `root` have none.
    """
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder.")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    audio_files = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
    stems = {p.with_suffix("") for p in audio_files}
    skipped = Skipped()
    for transcript in files:
        if transcript.suffix in TRANSCRIPT_SUFFIXES and transcript.with_suffix("") not in stems:
            skipped.add("transcript without an audio file", str(transcript))
    entries: list[Entry] = []
    for audio in audio_files:
        where = str(audio)
        candidates = (audio.with_suffix(s) for s in TRANSCRIPT_SUFFIXES)
        transcript = next((t for t in candidates if t.is_file()), None)
        if transcript is None:
            skipped.add("audio file without a .txt or .lab transcript", where)
            continue
        text = read_text(transcript, str(transcript), skipped)
        if text is not None:
            relative = audio.relative_to(root).parts
            speaker = relative[0] if len(relative) > 1 else None
            entries.append(Entry(where, audio, text, speaker))
    return utterances_from_entries(entries, skipped), skipped


def prepare_csv(
    csv_path: str | Path,
    out: str | Path,
    *,
    target: Target = "kana",
    split: SplitOptions | None = None,
) -> dict[str, Path]:
    """Write the utterances of a CSV (see `read_csv`) to `<out>/all.jsonl`, or with `split`
    to `<out>/{train,val,test}.jsonl` (needs a `speaker` column). Returns name → manifest."""
    hint = "add a `speaker` column to the CSV (header form)"
    return _prepare_list("csv", read_csv, csv_path, out, target, split, hint)


def prepare_tsv(path: str | Path, out: str | Path, *, target: Target = "kana") -> dict[str, Path]:
    """Write Common Voice manifests (see `read_tsv`).

    `path` is a Common Voice language folder: its train.tsv, dev.tsv and test.tsv (those
    present) become `<out>/{train,val,test}.jsonl`, audio from its `clips/`; Common Voice
    made these splits disjoint by speaker and sentence. Or `path` is one TSV file (e.g.
    Common Voice's validated.tsv, or a ReazonSpeech TSV), written to `<out>/<its name>.jsonl`.
    Returns name → manifest.
    """
    check_target(target)
    path = Path(os.path.abspath(path))
    if path.is_dir():
        tsvs = {CV_SPLITS[s]: path / f"{s}.tsv" for s in CV_SPLITS if (path / f"{s}.tsv").is_file()}
        if not tsvs:
            raise FileNotFoundError(
                f"{path}: no train.tsv, dev.tsv or test.tsv. Pass a Common Voice language "
                "folder (…/cv-corpus-…/ja, the one holding clips/) or one TSV file."
            )
    else:
        tsvs = {path.stem: path}
    sets: dict[str, list[Utterance]] = {}
    skipped = Skipped()
    for name, tsv in tsvs.items():
        sets[name], tsv_skipped = read_tsv(tsv)
        skipped.update(tsv_skipped)
        print(f"prepare tsv: {len(sets[name])} utterances read from {tsv}")
    return write_manifests("tsv", sets, skipped, out, target=target, split=None)


def prepare_folder(
    root: str | Path,
    out: str | Path,
    *,
    target: Target = "kana",
    split: SplitOptions | None = None,
) -> dict[str, Path]:
    """Write the utterances of a folder of transcribed audio (see `read_folder`) to
    `<out>/all.jsonl`, or with `split` to `<out>/{train,val,test}.jsonl`. Returns name →
    manifest."""
    hint = "put each speaker's files in a folder of its own under the root"
    return _prepare_list("folder", read_folder, root, out, target, split, hint)


def _prepare_list(
    kind: str,
    read: Callable[[str | Path], tuple[list[Utterance], Skipped]],
    path: str | Path,
    out: str | Path,
    target: Target,
    split: SplitOptions | None,
    speaker_hint: str,
) -> dict[str, Path]:
    """`read(path)` → `<out>/all.jsonl`, or split; `speaker_hint` says how to give speakers."""
    check_target(target)
    utterances, skipped = read(path)
    print(f"prepare {kind}: {len(utterances)} utterances read from {Path(path).absolute()}")
    return write_manifests(
        kind, {"all": utterances}, skipped, out, target=target, split=split,
        speaker_hint=speaker_hint,
    )  # fmt: skip
