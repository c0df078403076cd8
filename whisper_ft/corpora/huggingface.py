"""A local Hugging Face dataset → manifests: a `save_to_disk` folder or an audiofolder
directory (needs the optional `datasets` package, imported only here).

    prepare_hf(path, out)   one manifest per split (one split: all.jsonl); audio a dataset
                            holds as bytes is written under <out>/audio/ (paths relative to <out>)
"""

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from whisper_ft.corpora.common import (
    Entry,
    Skipped,
    check_target,
    relative_audio,
    resolve,
    utterances_from_entries,
    write_manifests,
)
from whisper_ft.corpora.split import SplitOptions
from whisper_ft.files import atomic_write
from whisper_ft.manifest import Target, Utterance, path_ids

# Hugging Face split names → manifest names; other splits keep their own name.
HF_SPLITS = {"train": "train", "validation": "val", "dev": "val", "test": "test"}
HF_METADATA = ("metadata.csv", "metadata.jsonl", "metadata.parquet")  # audiofolder's files
HF_AUDIO_DIR = "audio"  # under `out`: audio a dataset holds as bytes is written here


def prepare_hf(
    path: str | Path,
    out: str | Path,
    *,
    audio_column: str = "audio",
    text_column: str = "text",
    speaker_column: str | None = None,
    splits: list[str] | None = None,
    target: Target = "kana",
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
            f"{path} has splits of its own ({', '.join(names)}); `split` is for a corpus "
            "without them. Leave it out, or pick the one to split with `splits`."
        )
    sets: dict[str, list[Utterance]] = {}
    skipped = Skipped()
    for part, name in names.items():
        if saved:
            entries = _saved_entries(parts[part], columns, path, part, out, name, skipped)
        else:
            entries = _audiofolder_entries(parts[part], columns, path, part, skipped)
        sets[name] = utterances_from_entries(entries, skipped)
        relative_audio(sets[name], out)
        print(f"prepare hf: {len(sets[name])} utterances read from {path} ({part})")
    return write_manifests(
        "hf",
        sets,
        skipped,
        out,
        target=target,
        split=split,
        speaker_hint="name the dataset's speaker column with `speaker_column`",
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
                "with `splits`."
            )
    return names


def _check_columns(present: list[str], columns: _HfColumns, where: str, audio: bool) -> None:
    wanted = {"`text_column`": columns.text, "`speaker_column`": columns.speaker}
    if audio:
        wanted["`audio_column`"] = columns.audio
    for option, name in wanted.items():
        if name is not None and name not in present:
            raise ValueError(
                f"{where}: no column {name!r} (it has {', '.join(present)}); name the right "
                f"one with {option}."
            )


def _saved_entries(
    dataset, columns: _HfColumns, path: Path, part: str, out: Path, name: str, skipped: Skipped
) -> list[Entry]:
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
            file = resolve(audio["path"], path)
        else:
            skipped.add("no audio", row_where)
            continue
        speaker = record[columns.speaker] if columns.speaker else None
        speaker = str(speaker) if speaker not in (None, "") else None
        entries.append(Entry(row_where, file, text, speaker, ids[row]))
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
) -> list[Entry]:
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
                Entry(
                    where,
                    resolve(str(record["file_name"]), meta.parent),
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
