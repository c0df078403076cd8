"""Manifests: JSON Lines, one utterance per line, UTF-8.

    {"id": "jvs001_VOICEACTRESS100_001", "audio": "wav/…wav", "text": "原文",
     "kana": "ゲンブン…", "duration": 3.2, "speaker": "jvs001"}

`audio` is relative to the manifest's folder, or absolute. `kana` and `duration` are filled
by `prepare`; keys this module does not know are kept in `Utterance.extra` and written back.

Owns the data model of the whole package: `Utterance`, the `Target` fields, reading
(`read_manifest` strict, `read_lines` line by line), writing, and ids made from paths.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from whisper_ft.files import atomic_write

Target = Literal["kana", "text"]  # the manifest field a model learns to write (`Utterance.target`)
TARGETS: tuple[str, ...] = get_args(Target)
REQUIRED_KEYS = ("id", "audio", "text")
KNOWN_KEYS = (*REQUIRED_KEYS, "kana", "duration", "speaker", "target")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the line and what to do."""


@dataclass
class Utterance:
    id: str  # unique within a manifest
    audio: str  # path as written in the manifest (relative to its folder, or absolute)
    text: str  # transcript in its original orthography
    kana: str | None = None  # katakana target made by pyopenjtalk (None until prepared)
    duration: float | None = None  # seconds of audio (None until prepared)
    speaker: str | None = None  # speaker id, used to split corpora by speaker
    target: Target | None = None  # field `prepare` made this line for (None: unsaid)
    extra: dict = field(default_factory=dict)  # any other keys of the line, kept as they are
    line: int = 0  # 1-based line number in the manifest it was read from (0: not read)

    def audio_path(self, manifest_dir: str | Path) -> Path:
        """The audio file's path: `audio` itself if absolute, else under `manifest_dir`."""
        path = Path(self.audio)
        return path if path.is_absolute() else Path(manifest_dir) / path

    def to_json(self) -> str:
        record = {key: getattr(self, key) for key in KNOWN_KEYS if getattr(self, key) is not None}
        return json.dumps({**record, **self.extra}, ensure_ascii=False)


def parse_line(line: str, where: str) -> Utterance:
    """One manifest line as an Utterance; `where` ("file:line") prefixes every error message."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{where}: not valid JSON ({e.msg} at column {e.colno}).") from e
    if not isinstance(record, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(record).__name__}.")
    missing = [key for key in REQUIRED_KEYS if not record.get(key)]
    if missing:
        raise ManifestError(
            f"{where}: missing or empty {', '.join(missing)}; every line needs "
            f"{', '.join(REQUIRED_KEYS)}."
        )
    extra = {key: value for key, value in record.items() if key not in KNOWN_KEYS}
    duration = record.get("duration")
    return Utterance(
        id=str(record["id"]),
        audio=str(record["audio"]),
        text=str(record["text"]),
        kana=record.get("kana"),
        duration=None if duration is None else float(duration),
        speaker=record.get("speaker"),
        target=record.get("target"),
        extra=extra,
    )


def read_lines(path: str | Path) -> Iterator[tuple[str, Utterance | ManifestError]]:
    """("file:line", the line as an Utterance, or the ManifestError it raised) per non-blank
    line, in file order: for readers that report a bad line and go on (`prepare merge`).
    Ids are not checked for repeats."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                utterance = parse_line(line, where)
            except ManifestError as e:
                yield where, e
                continue
            utterance.line = number
            yield where, utterance


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


def read_manifest(path: str | Path) -> list[Utterance]:
    """All utterances of a manifest, in file order, each with its 1-based `line`.

    Blank lines are skipped. A malformed line, a missing required key or a repeated id raises
    ManifestError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(
            f"{path}: no such manifest. Make one with `python -m whisper_ft prepare …`."
        )
    utterances: list[Utterance] = []
    first_line_of: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            utterance = parse_line(line, f"{path}:{number}")
            utterance.line = number
            if utterance.id in first_line_of:
                raise ManifestError(
                    f"{path}:{number}: id {utterance.id!r} already used on line "
                    f"{first_line_of[utterance.id]}; ids must be unique."
                )
            first_line_of[utterance.id] = number
            utterances.append(utterance)
    return utterances


def write_manifest(path: str | Path, utterances: list[Utterance]) -> Path:
    """Write utterances as JSON Lines, atomically: readers never see a half-written file."""
    path = Path(path)
    with atomic_write(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for utterance in utterances:
            f.write(utterance.to_json() + "\n")
    return path
