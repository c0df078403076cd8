"""More corpora for `prepare`, and merging manifests; all write `whisper_ft.manifest` lines.

    prepare_csv(csv, out)          deepspeech.pytorch's `audio.wav,transcript.txt` lines, or a
                                   CSV with a header `audio,text[,speaker]` → <out>/all.jsonl
    prepare_tsv(path, out)         a Common Voice folder (train/dev/test.tsv, clips/) →
                                   <out>/{train,val,test}.jsonl; one TSV → <out>/<its name>.jsonl
    prepare_folder(root, out)      audio files with a same-named .txt or .lab beside them →
                                   <out>/all.jsonl
    prepare_hf(path, out)          a Hugging Face `save_to_disk` dataset or an audiofolder
                                   directory → one manifest per split (one split: all.jsonl)
    prepare_merge(manifests, out)  several manifests → one file, filtered by duration

A corpus without splits of its own is written whole to `all.jsonl`; with `split=SplitOptions()`
(`--split`) it is shared into train/val/test, disjoint by speaker and sentence
(`prepare.split_disjoint`). Every line gets its `duration` (read from the audio header),
`target` and, for the kana target, its `kana`, once. An entry that cannot be used (audio or
transcript missing, text empty, audio unreadable, a line that does not parse) is left out,
counted and shown with where it is (file:line); one bad entry never stops the others.
Audio stays where it is (absolute paths), except audio a Hugging Face dataset holds as bytes,
which is written under <out>/audio/ (paths relative to <out>).
"""

import argparse
import csv
import io
import itertools
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from whisper_ft.audio import AudioError, audio_duration_s
from whisper_ft.files import atomic_write
from whisper_ft.manifest import (
    ManifestError,
    Utterance,
    manifest_lines,
    parse_line,
    write_manifest,
)
from whisper_ft.prepare import (
    NO_KANA,
    _run,
    add_target_option,
    check_target,
    fill_target,
    split_disjoint,
)

N_EXAMPLES = 3  # skipped entries shown per reason
# Audio files `prepare folder` looks for: formats libsndfile reads, so `load_audio` can too.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au")
TRANSCRIPT_SUFFIXES = (".txt", ".lab")  # beside each audio file, looked for in this order
CV_SPLITS = {"train": "train", "dev": "val", "test": "test"}  # Common Voice TSV → manifest name
CV_CLIPS = "clips"  # the folder beside the TSVs that holds the audio named in `path`
# Hugging Face split names → manifest names; other splits keep their own name.
HF_SPLITS = {"train": "train", "validation": "val", "dev": "val", "test": "test"}
HF_METADATA = ("metadata.csv", "metadata.jsonl", "metadata.parquet")  # audiofolder's files
HF_AUDIO_DIR = "audio"  # under `out`: audio a dataset holds as bytes is written here


@dataclass
class SplitOptions:
    """How a corpus without splits of its own is shared into train/val/test (`--split`)."""

    val_speakers: list[str] | None = None  # speakers for val (None: a seeded ~5%)
    test_speakers: list[str] | None = None  # speakers for test (None: a seeded ~10%)
    seed: int = 0  # seed of the speaker and sentence split


@dataclass
class Skipped:
    """Entries left out while reading a corpus: how many per reason, and where the first were."""

    counts: Counter[str] = field(default_factory=Counter)  # reason → entries
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason → first "file:line"s

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
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
        lines = [_count_line("skipped", self.counts)]
        for reason in sorted(self.counts):
            lines.append(f"    {reason}, e.g. {'; '.join(self.examples[reason])}")
        return lines


def _count_line(title: str, counts: Counter[str]) -> str:
    """`  title: N (reason: n, …)`."""
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))
    return f"  {title}: {counts.total()}{f' ({reasons})' if reasons else ''}"


@dataclass
class _Entry:
    """One transcribed recording as a source lists it, before it is checked."""

    where: str  # "file:line" (or the file) it was read from; named if it is skipped
    audio: Path  # absolute path of the audio file
    text: str  # transcript as written
    speaker: str | None = None  # None: the source names none
    id: str | None = None  # None: made from the audio path (`path_ids`)


def path_ids(paths: list[Path]) -> list[str]:
    """Utterance ids made from audio paths: each file's name without its suffix, with as many
    parent folder names in front as it takes to tell apart files of the same name
    (`a/001.wav`, `b/001.wav` → `a_001`, `b_001`; a unique `c/002.wav` stays `002`)."""
    parts = [(*p.relative_to(p.anchor).parent.parts, p.stem) for p in paths]
    depth = [1] * len(paths)
    while True:
        ids = ["_".join(part[-d:]) for part, d in zip(parts, depth, strict=True)]
        holders: dict[str, list[int]] = {}
        for i, utt_id in enumerate(ids):
            holders.setdefault(utt_id, []).append(i)
        deeper = [
            i
            for group in holders.values()
            if len(group) > 1
            for i in group
            if depth[i] < len(parts[i])
        ]
        if not deeper:
            return ids
        for i in deeper:
            depth[i] += 1


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
    entries: list[_Entry] = []
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
    return _utterances(entries, skipped), skipped


def _deepspeech_entry(row: list[str], base: Path, where: str, skipped: Skipped) -> _Entry | None:
    if len(row) != 2:
        skipped.add("line without 2 fields (audio,transcript)", where)
        return None
    audio, transcript = (_resolve(cell, base) for cell in row)
    if not transcript.is_file():
        skipped.add("transcript file missing", where)
        return None
    text = _read_text(transcript, where, skipped)
    return None if text is None else _Entry(where, audio, text)


def _header_entry(
    row: list[str], column: dict[str, int], base: Path, where: str, skipped: Skipped
) -> _Entry | None:
    if len(row) <= max(column.values()):
        skipped.add(f"line with fewer fields than the header's {len(column)}", where)
        return None
    speaker = row[column["speaker"]].strip() if "speaker" in column else ""
    return _Entry(where, _resolve(row[column["audio"]], base), row[column["text"]], speaker or None)


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
    entries: list[_Entry] = []
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
            entries.append(_Entry(where, clips / record["path"], record["sentence"], speaker))
    return _utterances(entries, skipped), skipped


def _read_headerless_tsv(
    path: Path, first: list[str], rows: Iterator[list[str]]
) -> tuple[list[Utterance], Skipped]:
    """The rest of `read_tsv` for ReazonSpeech's `audio<TAB>transcript` lines."""
    skipped = Skipped()
    entries: list[_Entry] = []
    for number, row in enumerate(itertools.chain([first], rows), start=1):
        where = f"{path}:{number}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != 2:
            skipped.add("line without 2 fields (audio, transcript)", where)
            continue
        entries.append(_Entry(where, path.parent / row[0], row[1], None))
    return _utterances(entries, skipped), skipped


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
    entries: list[_Entry] = []
    for audio in audio_files:
        where = str(audio)
        candidates = (audio.with_suffix(s) for s in TRANSCRIPT_SUFFIXES)
        transcript = next((t for t in candidates if t.is_file()), None)
        if transcript is None:
            skipped.add("audio file without a .txt or .lab transcript", where)
            continue
        text = _read_text(transcript, str(transcript), skipped)
        if text is not None:
            relative = audio.relative_to(root).parts
            speaker = relative[0] if len(relative) > 1 else None
            entries.append(_Entry(where, audio, text, speaker))
    return _utterances(entries, skipped), skipped


def _resolve(path: str, base: Path) -> Path:
    """`path` as written in a list, made absolute: relative paths start from `base`."""
    return Path(os.path.abspath(base / Path(path.strip()).expanduser()))


def _read_text(path: Path, where: str, skipped: Skipped) -> str | None:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        skipped.add("transcript file not UTF-8", where)
        return None


def _utterances(entries: list[_Entry], skipped: Skipped) -> list[Utterance]:
    """The entries that pass the checks, as Utterances with their duration (read from the
    audio header). The others are counted in `skipped`: an audio file listed twice, empty
    text, an id already taken, audio missing or unreadable."""
    first_where: dict[Path, str] = {}
    unique: list[_Entry] = []
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


def _write_manifests(
    source: str,
    sets: dict[str, list[Utterance]],
    skipped: Skipped,
    out: str | Path,
    *,
    target: str,
    split: SplitOptions | None,
    speaker_hint: str = "",
) -> dict[str, Path]:
    """Fill the target of every utterance, split the corpus if asked, write one manifest per
    set (`<out>/<name>.jsonl`) and print what each holds and what was left out.

    `sets`: manifest name → utterances; `split` needs exactly one set (the whole corpus).
    `speaker_hint` tells how this source gets speakers, for the error when one has none.
    """
    out = Path(os.path.abspath(out))
    for name, utterances in sets.items():
        sets[name] = _fill_target(utterances, target, skipped)
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
                f"--split needs a speaker for every utterance and {len(no_speaker)} have none "
                f"(e.g. {no_speaker[0].id}); {speaker_hint or 'give each one a speaker'}, or "
                "leave out --split to write all.jsonl."
            )
        result = split_disjoint(
            corpus,
            val_speakers=split.val_speakers,
            test_speakers=split.test_speakers,
            seed=split.seed,
        )
        sets, dropped = result.splits(), result.dropped
    paths = {name: write_manifest(out / f"{name}.jsonl", us) for name, us in sets.items()}
    print("\n".join(_report_lines(sets, paths) + skipped.lines()))
    if dropped is not None:
        print(_count_line("dropped by the split", dropped))
    return paths


def _fill_target(utterances: list[Utterance], target: str, skipped: Skipped) -> list[Utterance]:
    """`prepare.fill_target`, with the utterances it leaves out named in `skipped`."""
    counts: Counter[str] = Counter()
    kept = fill_target(utterances, target, counts)
    kept_ids = {u.id for u in kept}
    for u in utterances:
        if u.id not in kept_ids:
            skipped.add(NO_KANA, f"{u.id} ({u.text!r})")
    return kept


def _report_lines(sets: dict[str, list[Utterance]], paths: dict[str, Path]) -> list[str]:
    lines = []
    for name, utterances in sets.items():
        speakers = {u.speaker for u in utterances if u.speaker is not None}
        hours = sum(u.duration or 0.0 for u in utterances) / 3600
        lines.append(
            f"  {name:<5} {len(utterances):6d} utterances {len(speakers):4d} speakers "
            f"{hours:7.2f} h  → {paths[name]}"
        )
    return lines


def prepare_csv(
    csv_path: str | Path,
    out: str | Path,
    *,
    target: str = "kana",
    split: SplitOptions | None = None,
) -> dict[str, Path]:
    """Write the utterances of a CSV (see `read_csv`) to `<out>/all.jsonl`, or with `split`
    to `<out>/{train,val,test}.jsonl` (needs a `speaker` column). Returns name → manifest."""
    check_target(target)
    utterances, skipped = read_csv(csv_path)
    print(f"prepare csv: {len(utterances)} utterances read from {Path(csv_path).absolute()}")
    return _write_manifests(
        "csv",
        {"all": utterances},
        skipped,
        out,
        target=target,
        split=split,
        speaker_hint="add a `speaker` column to the CSV (header form)",
    )


def prepare_tsv(path: str | Path, out: str | Path, *, target: str = "kana") -> dict[str, Path]:
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
    return _write_manifests("tsv", sets, skipped, out, target=target, split=None)


def prepare_folder(
    root: str | Path,
    out: str | Path,
    *,
    target: str = "kana",
    split: SplitOptions | None = None,
) -> dict[str, Path]:
    """Write the utterances of a folder of transcribed audio (see `read_folder`) to
    `<out>/all.jsonl`, or with `split` to `<out>/{train,val,test}.jsonl`. Returns name →
    manifest."""
    check_target(target)
    utterances, skipped = read_folder(root)
    print(f"prepare folder: {len(utterances)} utterances read from {Path(root).absolute()}")
    return _write_manifests(
        "folder",
        {"all": utterances},
        skipped,
        out,
        target=target,
        split=split,
        speaker_hint="put each speaker's files in a folder of its own under the root",
    )


def prepare_hf(
    path: str | Path,
    out: str | Path,
    *,
    audio_column: str = "audio",
    text_column: str = "text",
    speaker_column: str | None = None,
    splits: list[str] | None = None,
    target: str = "kana",
    split: SplitOptions | None = None,
) -> dict[str, Path]:
    """Write manifests for a local Hugging Face dataset (needs `pip install datasets`).

    `path` is either a folder written by `save_to_disk` (a Dataset or a DatasetDict), or an
    audiofolder directory (audio files and a metadata.csv/.jsonl/.parquet with a `file_name`
    column; split folders such as train/, validation/ or dev/, test/ as `datasets` names
    them). Audio is never decoded through `datasets` (which needs torchcodec and FFmpeg):
    audio held as bytes is written as it is to `<out>/audio/<split>/<id><suffix>`, audio
    given as a path that exists is referred to where it is.

    Splits: train → train.jsonl, validation or dev → val.jsonl, test → test.jsonl, others
    keep their name; `splits` reads only those named. A dataset with one split (or a plain
    Dataset) is one corpus: `all.jsonl`, or train/val/test with `split` (speakers from
    `speaker_column`). Ids come from the audio file names (else `<split>_<row>`).
    """
    check_target(target)
    try:
        import datasets  # optional: only this source needs it

        # Without the package, run from a clone, `import datasets` finds this repository's
        # datasets/ folder (corpus download scripts) as an empty namespace package.
        if getattr(datasets, "__file__", None) is None:
            raise ImportError("only a namespace package named datasets was found")
    except ImportError as e:
        raise ModuleNotFoundError(
            "prepare hf reads Hugging Face datasets with the optional `datasets` package, "
            "which is not installed: pip install -r requirements-optional.txt (or pip install "
            "datasets)",
            name="datasets",
        ) from e
    path = Path(os.path.abspath(path))
    out = Path(os.path.abspath(out))
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: no such folder. Pass a folder written by Dataset.save_to_disk or an "
            "audiofolder directory."
        )
    columns = _HfColumns(audio_column, text_column, speaker_column)
    saved = (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()
    if saved:
        loaded = datasets.load_from_disk(str(path))
        parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"all": loaded}
    else:
        builder = datasets.load_dataset_builder("audiofolder", data_dir=str(path))
        parts = {str(name): files for name, files in builder.config.data_files.items()}
    names = _hf_manifest_names(list(parts), splits, path)
    if split is not None and len(names) > 1:
        raise ValueError(
            f"{path} has splits of its own ({', '.join(names)}); --split is for a corpus "
            "without them. Leave it out, or pick the one to split with --splits."
        )
    sets: dict[str, list[Utterance]] = {}
    skipped = Skipped()
    for part, name in names.items():
        if saved:
            entries = _saved_entries(parts[part], columns, path, part, out, name, skipped)
        else:
            entries = _audiofolder_entries(parts[part], columns, path, part, skipped)
        sets[name] = _utterances(entries, skipped)
        for u in sets[name]:
            if Path(u.audio).is_relative_to(out / HF_AUDIO_DIR):
                u.audio = Path(u.audio).relative_to(out).as_posix()
        print(f"prepare hf: {len(sets[name])} utterances read from {path} ({part})")
    return _write_manifests(
        "hf",
        sets,
        skipped,
        out,
        target=target,
        split=split,
        speaker_hint="name the dataset's speaker column with --speaker-column",
    )


@dataclass
class _HfColumns:
    """Which columns of a Hugging Face dataset (keys of audiofolder metadata) hold what."""

    audio: str  # audio column (a save_to_disk dataset)
    text: str  # transcript column (or metadata key)
    speaker: str | None  # speaker column (or metadata key); None: no speakers


def _hf_manifest_names(parts: list[str], wanted: list[str] | None, path: Path) -> dict[str, str]:
    """Dataset split → manifest name, for the splits `wanted` (None: all)."""
    unknown = sorted(set(wanted or []) - set(parts))
    if unknown:
        raise ValueError(f"{path} has no split {', '.join(unknown)}; it has {', '.join(parts)}.")
    if len(parts) == 1:
        return {parts[0]: "all"}
    names = {part: HF_SPLITS.get(part, part) for part in parts if not wanted or part in wanted}
    by_name: dict[str, list[str]] = {}
    for part, name in names.items():
        by_name.setdefault(name, []).append(part)
    for name, same in by_name.items():
        if len(same) > 1:
            raise ValueError(
                f"splits {' and '.join(same)} of {path} would both be {name}.jsonl; read one "
                "with --splits."
            )
    return names


def _check_columns(present: list[str], columns: _HfColumns, where: str, audio: bool) -> None:
    wanted = {"--text-column": columns.text, "--speaker-column": columns.speaker}
    if audio:
        wanted["--audio-column"] = columns.audio
    for option, name in wanted.items():
        if name is not None and name not in present:
            raise ValueError(
                f"{where}: no column {name!r} (it has {', '.join(present)}); name the right "
                f"one with {option}."
            )


def _saved_entries(
    dataset, columns: _HfColumns, path: Path, part: str, out: Path, name: str, skipped: Skipped
) -> list[_Entry]:
    """Entries of split `part` of a `save_to_disk` dataset at `path`. Its audio column is cast
    to `Audio(decode=False)` (from Audio or from a column of paths): rows give {"path",
    "bytes"}, nothing is decoded. Bytes are written under `<out>/audio/<name>/`; a path
    without bytes must exist (relative: from `path`)."""
    import datasets  # already imported by prepare_hf, which checked it is installed

    _check_columns(dataset.column_names, columns, f"{path} ({part})", audio=True)
    wanted = [c for c in (columns.audio, columns.text, columns.speaker) if c is not None]
    dataset = dataset.select_columns(wanted)
    dataset = dataset.cast_column(columns.audio, datasets.Audio(decode=False))
    # Ids first, from the paths alone (flattened, so no audio bytes are read for them).
    flat = dataset.select_columns([columns.audio]).flatten()
    ids = _row_ids(list(flat[f"{columns.audio}.path"]), name)
    entries = []
    for row, record in enumerate(dataset):
        row_where = f"{path}[{part}][{row}]"
        text = record[columns.text]
        if not isinstance(text, str) or not text.strip():
            skipped.add("empty text", row_where)
            continue
        audio = record[columns.audio] or {}
        if audio.get("bytes") is not None:
            file = _write_audio_bytes(audio["bytes"], audio.get("path"), out, name, ids[row])
            if file is None:
                skipped.add("audio bytes unreadable", row_where)
                continue
        elif audio.get("path"):
            file = _resolve(audio["path"], path)
        else:
            skipped.add("no audio", row_where)
            continue
        speaker = record[columns.speaker] if columns.speaker else None
        speaker = str(speaker) if speaker not in (None, "") else None
        entries.append(_Entry(row_where, file, text, speaker, ids[row]))
    return entries


def _row_ids(file_paths: list[str | None], name: str) -> list[str]:
    """Ids of a split's rows: from the audio file names (`path_ids`), `<name>_<row>` where
    there is none; a row whose id an earlier one took gets its row number appended."""
    named = [row for row, p in enumerate(file_paths) if p]
    ids = [f"{name}_{row:06d}" for row in range(len(file_paths))]
    for row, utt_id in zip(named, path_ids([Path(file_paths[r]) for r in named]), strict=True):
        ids[row] = utt_id
    seen: set[str] = set()
    for row, utt_id in enumerate(ids):
        if utt_id in seen:
            ids[row] = f"{utt_id}_{row:06d}"
        seen.add(ids[row])
    return ids


def _write_audio_bytes(
    data: bytes, original: str | None, out: Path, name: str, utt_id: str
) -> Path | None:
    """Write a dataset's audio bytes unchanged to `<out>/audio/<name>/<id><suffix>`; the
    suffix is the original file's, else the format libsndfile finds. None if it finds none."""
    suffix = Path(original).suffix.lower() if original else ""
    if not suffix:
        try:
            suffix = "." + sf.info(io.BytesIO(data)).format.lower()
        except (sf.LibsndfileError, RuntimeError):
            return None
    file = out / HF_AUDIO_DIR / name / f"{utt_id}{suffix}"
    with atomic_write(file) as tmp:
        tmp.write_bytes(data)
    return file


def _audiofolder_entries(
    files: list[str], columns: _HfColumns, root: Path, part: str, skipped: Skipped
) -> list[_Entry]:
    """Entries of one split of an audiofolder: the rows of its metadata files, each naming
    its audio in `file_name`, relative to the metadata file's folder."""
    metadata = [Path(f) for f in files if Path(f).name in HF_METADATA]
    if not metadata:
        raise ValueError(
            f"{root} ({part}): no {', '.join(HF_METADATA)}. An audiofolder needs one with a "
            f"`file_name` and a `{columns.text}` column beside its audio."
        )
    entries = []
    for meta in metadata:
        rows = list(_metadata_rows(meta))
        keys = next((list(record) for _, record in rows if record is not None), [])
        if "file_name" not in keys:
            raise ValueError(
                f"{meta}: no file_name column (it has {', '.join(keys) or 'nothing'}); "
                "audiofolder metadata names each audio file in `file_name`."
            )
        _check_columns(keys, columns, str(meta), audio=False)
        for where, record in rows:
            if record is None:
                skipped.add("line that is not a JSON object", where)
                continue
            text = record.get(columns.text)
            speaker = record.get(columns.speaker) if columns.speaker else None
            if not record.get("file_name"):
                skipped.add("no file_name", where)
                continue
            entries.append(
                _Entry(
                    where,
                    _resolve(str(record["file_name"]), meta.parent),
                    text if isinstance(text, str) else "",
                    str(speaker) if speaker not in (None, "") else None,
                )
            )
    return entries


def _metadata_rows(path: Path) -> Iterator[tuple[str, dict | None]]:
    """("file:line", record) for each row of an audiofolder metadata file; record None for a
    JSON Lines line that is not an object."""
    if path.suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            for record in reader:
                yield f"{path}:{reader.line_num}", record
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield f"{path}:{number}", _json_object(line)
    else:
        import pyarrow.parquet as pq  # installed with datasets

        for row, record in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path}[{row}]", record


def _json_object(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def prepare_merge(
    manifests: list[str | Path],
    out: str | Path,
    *,
    min_duration_s: float | None = None,
    max_duration_s: float | None = None,
    target: str | None = None,
) -> dict[str, Path]:
    """Merge manifests into one manifest file `out` (`.jsonl`), line after line, in order.

    - Relative audio paths are rewritten to start from `out`'s folder; absolute ones stay.
    - A line without a duration gets it from its audio header. Kept: lines with
      `min_duration_s <= duration <= max_duration_s` (None: no bound), as deepspeech.pytorch's
      merge_manifests does.
    - Ids stay unique: an id an earlier line holds is prefixed with its manifest's name,
      `<stem>_<id>` (parent folders join the name where stems repeat: a/train.jsonl and
      b/train.jsonl are a_train and b_train). Each rename is reported; ValueError if the new
      id is taken too.
    - `target`: None keeps every line's fields (manifests made for different targets are an
      error); "kana" fills the kana of lines that have none and records kana on every line;
      "text" records text.
    Lines that cannot be used (malformed, audio missing or unreadable, an id repeated within
    its manifest) are skipped and reported. Returns {out's stem: out}.
    """
    if target is not None:
        check_target(target)
    out = Path(os.path.abspath(out))
    if out.suffix != ".jsonl" or out.is_dir():
        raise ValueError(
            f"{out}: merge writes one manifest file; give --out a .jsonl path, e.g. "
            "data/merged.jsonl."
        )
    inputs = [Path(os.path.abspath(m)) for m in manifests]
    if not inputs:
        raise ValueError("merge needs at least one manifest.")
    twice = sorted(str(p) for p, n in Counter(inputs).items() if n > 1)
    if twice:
        raise ValueError(f"{', '.join(twice)} named more than once; name each manifest once.")
    if out in inputs:
        raise ValueError(f"{out} is one of the manifests to merge; write the merge elsewhere.")
    for manifest in inputs:
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: no such manifest.")

    skipped = Skipped()
    renamed: list[str] = []  # "old → new (file:line)" per id an earlier line held
    dropped: Counter[str] = Counter()
    merged: list[Utterance] = []
    taken: set[str] = set()
    first_of_target: dict[str, str] = {}  # target → the first line made for it
    for manifest, label in zip(inputs, path_ids(inputs), strict=True):
        own: set[str] = set()
        for number, line in manifest_lines(manifest):
            where = f"{manifest}:{number}"
            try:
                u = parse_line(line, where)
            except ManifestError as e:  # the message names the line and what is wrong
                skipped.add(f"bad line ({e.reason})", str(e))
                continue
            if u.id in own:
                skipped.add("id repeated within its manifest", where)
                continue
            own.add(u.id)
            audio = Path(os.path.abspath(u.audio_path(manifest.parent)))
            if not audio.is_file():
                skipped.add("audio file missing", where)
                continue
            if u.duration is None:
                try:
                    u.duration = round(audio_duration_s(audio), 3)
                except AudioError:
                    skipped.add("audio file unreadable", where)
                    continue
            if min_duration_s is not None and u.duration < min_duration_s:
                dropped[f"shorter than {min_duration_s:g} s"] += 1
                continue
            if max_duration_s is not None and u.duration > max_duration_s:
                dropped[f"longer than {max_duration_s:g} s"] += 1
                continue
            if u.id in taken:
                new_id = f"{label}_{u.id}"
                if new_id in taken:
                    raise ValueError(
                        f"{where}: id {u.id!r} is taken by an earlier line, and so is "
                        f"{new_id!r}; rename one of them."
                    )
                renamed.append(f"{u.id} → {new_id} ({where})")
                u.id = new_id
            taken.add(u.id)
            if not Path(u.audio).is_absolute():
                u.audio = Path(os.path.relpath(audio, out.parent)).as_posix()
            if u.target is not None:
                first_of_target.setdefault(u.target, where)
            merged.append(u)

    if target is None and len(first_of_target) > 1:
        made = "; ".join(f"{t} (e.g. {where})" for t, where in sorted(first_of_target.items()))
        raise ValueError(
            f"the manifests were made for different targets: {made}. Pass --target kana "
            "(fills the missing kana) or --target text to merge them for one."
        )
    if target is not None:
        without_kana = [u for u in merged if target == "kana" and u.kana is None]
        filled = {u.id for u in _fill_target(without_kana, target, skipped)}
        lost = {u.id for u in without_kana} - filled
        merged = [u for u in merged if u.id not in lost]
        for u in merged:
            u.target = target
    if not merged:
        lines = [*skipped.lines(), _count_line("dropped by duration", dropped)]
        raise ValueError("no line left to merge, nothing written.\n" + "\n".join(lines))

    write_manifest(out, merged)
    speakers = {u.speaker for u in merged if u.speaker is not None}
    hours = sum(u.duration or 0.0 for u in merged) / 3600
    print(
        f"prepare merge: {len(merged)} utterances {len(speakers)} speakers {hours:.2f} h from "
        f"{len(inputs)} manifests → {out}"
    )
    if renamed:
        examples = "; ".join(renamed[:N_EXAMPLES])
        print(f"  renamed: {len(renamed)} ids an earlier line holds, e.g. {examples}")
    print("\n".join([*skipped.lines(), _count_line("dropped by duration", dropped)]))
    return {out.stem: out}


def add_source_commands(corpora: argparse._SubParsersAction) -> None:
    """Add `prepare csv|tsv|folder|hf|merge` to the subparsers of `prepare`."""
    p = corpora.add_parser(
        "csv",
        help="a CSV with a header audio,text[,speaker], or deepspeech.pytorch's "
        "audio.wav,transcript.txt lines",
    )
    p.add_argument("csv", help="the CSV file; relative paths in it start from its folder")
    p.add_argument("--out", required=True, help="folder for all.jsonl (or train/val/test.jsonl)")
    _add_split_options(p)
    add_target_option(p)
    p.set_defaults(func=_run(_prepare_csv_from_args))

    p = corpora.add_parser(
        "tsv", help="Common Voice (train/dev/test.tsv and clips/) or ReazonSpeech-style TSVs"
    )
    p.add_argument(
        "path",
        help="a Common Voice language folder (→ train/val/test.jsonl) or one TSV file "
        "(→ <its name>.jsonl): Common Voice's (audio from clips/ beside it) or ReazonSpeech's "
        "header-less audio<TAB>transcript lines (audio relative to the TSV's folder)",
    )
    p.add_argument("--out", required=True, help="folder for the manifests")
    add_target_option(p)
    p.set_defaults(func=_run(_prepare_tsv_from_args))

    p = corpora.add_parser(
        "folder", help="audio files (recursively) with a same-named .txt or .lab beside each"
    )
    p.add_argument("root", help="the folder; root/<speaker>/… gives each file its speaker")
    p.add_argument("--out", required=True, help="folder for all.jsonl (or train/val/test.jsonl)")
    _add_split_options(p)
    add_target_option(p)
    p.set_defaults(func=_run(_prepare_folder_from_args))

    p = corpora.add_parser(
        "hf", help="a Hugging Face dataset: a save_to_disk folder or an audiofolder (datasets)"
    )
    p.add_argument("path", help="folder written by save_to_disk, or an audiofolder directory")
    p.add_argument("--out", required=True, help="folder for the manifests and audio/")
    p.add_argument("--audio-column", default="audio", help="audio column (default: audio)")
    p.add_argument("--text-column", default="text", help="transcript column (default: text)")
    p.add_argument("--speaker-column", help="speaker column, e.g. client_id (default: none)")
    p.add_argument("--splits", nargs="+", help="dataset splits to read (default: all)")
    _add_split_options(p)
    add_target_option(p)
    p.set_defaults(func=_run(_prepare_hf_from_args))

    p = corpora.add_parser("merge", help="several manifests → one, filtered by duration")
    p.add_argument("manifests", nargs="+", help="manifests (.jsonl) to merge, in this order")
    p.add_argument("--out", required=True, help="the merged manifest, a .jsonl file")
    p.add_argument("--min-duration", type=float, help="keep lines of at least this many seconds")
    p.add_argument("--max-duration", type=float, help="keep lines of at most this many seconds")
    p.add_argument(
        "--target",
        choices=("kana", "text"),
        help="record one target on every line (kana: fill missing kana); default: keep lines "
        "as they are",
    )
    p.set_defaults(func=_run(_prepare_merge_from_args))


def _add_split_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split",
        action="store_true",
        help="write train/val/test.jsonl, disjoint by speaker and sentence, instead of all.jsonl",
    )
    parser.add_argument("--val-speakers", nargs="+", help="with --split: speakers for val")
    parser.add_argument("--test-speakers", nargs="+", help="with --split: speakers for test")
    parser.add_argument("--seed", type=int, default=0, help="with --split: seed of the split")


def _split_options(args: argparse.Namespace) -> SplitOptions | None:
    if not args.split:
        if args.val_speakers or args.test_speakers:
            raise ValueError("--val-speakers and --test-speakers need --split.")
        return None
    return SplitOptions(args.val_speakers, args.test_speakers, args.seed)


def _prepare_csv_from_args(args: argparse.Namespace) -> None:
    prepare_csv(args.csv, args.out, target=args.target, split=_split_options(args))


def _prepare_tsv_from_args(args: argparse.Namespace) -> None:
    prepare_tsv(args.path, args.out, target=args.target)


def _prepare_folder_from_args(args: argparse.Namespace) -> None:
    prepare_folder(args.root, args.out, target=args.target, split=_split_options(args))


def _prepare_hf_from_args(args: argparse.Namespace) -> None:
    prepare_hf(
        args.path,
        args.out,
        audio_column=args.audio_column,
        text_column=args.text_column,
        speaker_column=args.speaker_column,
        splits=args.splits,
        target=args.target,
        split=_split_options(args),
    )


def _prepare_merge_from_args(args: argparse.Namespace) -> None:
    prepare_merge(
        args.manifests,
        args.out,
        min_duration_s=args.min_duration,
        max_duration_s=args.max_duration,
        target=args.target,
    )
