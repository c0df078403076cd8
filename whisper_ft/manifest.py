"""Manifests: JSON Lines, one utterance per line, UTF-8.

    {"id": "jvs001_VOICEACTRESS100_001", "audio": "wav/…wav", "text": "原文",
     "kana": "ゲンブン…", "duration": 3.2, "speaker": "jvs001"}

`audio` is relative to the manifest's folder, or absolute. `kana` and `duration` are filled
by `prepare`; keys this module does not know are kept in `Utterance.extra` and written back.

Owns the data model of the whole package: `Utterance`, the `Target` fields, reading
(`read_manifest` strict, `read_lines` line by line), writing, and ids made from paths.
"""

import codecs
import json
import math
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
    """A manifest that cannot be used; the message names the file, the line and what to do.
    `reason`: for a bad line, the check's reason key (`check.REASONS`), else None."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


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
        """The line as JSON. ValueError for a NaN or infinite number, which JSON has no word
        for (Python would write a non-standard `NaN` other readers refuse)."""
        record = {key: getattr(self, key) for key in KNOWN_KEYS if getattr(self, key) is not None}
        return json.dumps({**record, **self.extra}, ensure_ascii=False, allow_nan=False)


def manifest_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, bytes) of every non-blank line, a UTF-8 BOM at the start dropped.
    Bytes: a line that is not UTF-8 is one bad line (`line_problems`), not the file's end."""
    data = Path(path).read_bytes().removeprefix(codecs.BOM_UTF8)
    for number, raw in enumerate(data.splitlines(), start=1):
        if raw.strip():
            yield number, raw


def line_problems(raw: bytes | str) -> tuple[dict | None, list[tuple[str, str]]]:
    """One line's JSON object (None when it is not one) and what is wrong with it, as
    (reason, detail) pairs with `check.REASONS` keys: bad_json, missing_field, bad_field,
    empty_text. The one judge of a line, for check-data, `read_manifest`, transcribe and merge."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            detail = f"not UTF-8 ({e.reason} at byte {e.start + 1}); save the manifest as UTF-8"
            return None, [("bad_json", detail)]
    try:
        record = json.loads(raw.removeprefix("\ufeff"))  # a BOM of a file `cat` joined on
    except json.JSONDecodeError as e:
        return None, [("bad_json", f"not valid JSON: {e.msg} at column {e.colno}")]
    if not isinstance(record, dict):
        return None, [("bad_json", f"a JSON {type(record).__name__}, not an object")]
    problems = []
    # An empty text is its own reason (empty_text); an empty id or audio is as good as none.
    missing = [
        k for k in REQUIRED_KEYS if record.get(k) is None or (record[k] == "" and k != "text")
    ]
    if missing:
        needed = ", ".join(REQUIRED_KEYS)
        problems.append(("missing_field", f"no {', '.join(missing)}; every line needs {needed}"))
    kana = record.get("kana")
    if kana is not None and not isinstance(kana, str):
        problems.append(("bad_field", f"kana is a JSON {type(kana).__name__}, not a string"))
    duration = record.get("duration")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int | float):
            detail = f"duration {json.dumps(duration, ensure_ascii=False)} is not a number"
            problems.append(("bad_field", detail + ' of seconds (write 2.0, not "2.0s")'))
        elif not math.isfinite(duration) or duration <= 0:
            problems.append((
                "bad_field",
                f"duration {duration} is not a finite positive number of seconds; correct it, "
                "or delete the key and check-data measures the audio",
            ))  # fmt: skip
    target = record.get("target")
    if target is not None and target not in TARGETS:
        problems.append(("bad_field", f"target {target!r} is not kana or text"))
    if record.get("text") is not None and not str(record["text"]).strip():
        problems.append(("empty_text", "text is empty or whitespace"))
    return record, problems


def parse_line(line: bytes | str, where: str) -> Utterance:
    """One manifest line as an Utterance. ManifestError (its `reason`, the first problem's):
    `where` ("file:line") then every problem `line_problems` finds."""
    record, problems = line_problems(line)
    if problems:
        details = "; ".join(detail for _, detail in problems)
        raise ManifestError(f"{where}: {details}.", reason=problems[0][0])
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
    for number, line in manifest_lines(path):
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
    for number, line in manifest_lines(path):
        utterance = parse_line(line, f"{path}:{number}")
        utterance.line = number
        if utterance.id in first_line_of:
            raise ManifestError(
                f"{path}:{number}: id {utterance.id!r} already used on line "
                f"{first_line_of[utterance.id]}; ids must be unique.",
                reason="duplicate_id",
            )
        first_line_of[utterance.id] = number
        utterances.append(utterance)
    return utterances


def write_manifest(path: str | Path, utterances: list[Utterance]) -> Path:
    """Write utterances as JSON Lines, atomically: readers never see a half-written file."""
    path = Path(path)
    lines = []
    for utterance in utterances:
        try:
            lines.append(utterance.to_json() + "\n")
        except ValueError as e:  # NaN or infinity: JSON has no such number
            raise ManifestError(
                f"{path}: utterance {utterance.id!r} holds a NaN or infinite number ({e}); "
                "nothing written. Drop it or correct its duration."
            ) from e
    with atomic_write(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        f.writelines(lines)
    return path
