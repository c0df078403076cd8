"""The data check's cache: a manifest's `CheckResult` reused while nothing it depends on changed.

    file, key = cache_entry(path, lines, target=None, tokenizer=tokenizer, n_text_ctx=448)
    result = read_cached(file, key, path) or check_again()
    write_cached(file, key, result)

One JSON file per manifest path as given (a changed manifest replaces its entry) under
`default_cache_dir()`. The key holds the manifest's bytes, every audio file's path, size and
modification time, and the settings of the check; anything else changed needs `recheck`.
"""

import hashlib
import json
import os
import warnings
from pathlib import Path

from whisper.tokenizer import Tokenizer

from whisper_ft.check_lines import CheckResult, Problem
from whisper_ft.files import atomic_write, cache_root
from whisper_ft.manifest import line_problems, parse_line

CHECK_VERSION = 1  # part of the key: raise it when a check (check_lines) changes


def default_cache_dir() -> Path:
    """`check/` under `files.cache_root()`."""
    return cache_root() / "check"


def cache_entry(
    manifest: Path,
    lines: list[tuple[int, bytes]],
    *,
    target: str | None,
    tokenizer: Tokenizer,
    n_text_ctx: int,
    cache_dir: str | Path | None = None,
) -> tuple[Path, dict]:
    """The cache file of `manifest` (its non-blank `lines` as `manifest_lines` reads them) and
    the key its result is stored under. `cache_dir` None: `default_cache_dir()`."""
    # Relative audio paths start at the folder the manifest is named in, a symlink's own folder
    # included: the entry is per path as given, and the key holds every audio file it names.
    where = os.path.abspath(manifest)
    cache_file = Path(cache_dir or default_cache_dir()) / (
        hashlib.sha256(where.encode()).hexdigest()[:32] + ".json"
    )
    key = {
        "version": CHECK_VERSION,
        "manifest": where,
        "sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        "audio": _audio_fingerprint(manifest, lines),
        "target": target,
        "encoding": tokenizer.encoding.name,
        "sot": list(tokenizer.sot_sequence_including_notimestamps),
        "n_text_ctx": n_text_ctx,
    }
    return cache_file, key


def _audio_fingerprint(manifest: Path, lines: list[tuple[int, bytes]]) -> str:
    """A digest of every audio file the lines name: its resolved path, size and modification
    time (missing: no file). A file replaced, added or deleted changes the check's result."""
    digest = hashlib.sha256()
    for _, raw in lines:
        record, _ = line_problems(raw)
        audio = None if record is None else record.get("audio")
        if not isinstance(audio, str) or not audio:
            continue
        resolved = os.path.realpath(manifest.parent / audio)
        try:
            stat = os.stat(resolved)
            seen = f"{stat.st_size} {stat.st_mtime_ns}"
        except OSError:
            seen = "missing"
        digest.update(f"{resolved}\0{seen}\n".encode())
    return digest.hexdigest()


def read_cached(cache_file: Path, key: dict, manifest: Path) -> CheckResult | None:
    """The cached result for exactly `key`, else None (none, another key, or unreadable)."""
    try:
        cached = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or cached.get("key") != key:
        return None
    try:
        utterances = []
        for number, record in cached["utterances"]:
            utterance = parse_line(record, f"{cache_file} (cache of {manifest}:{number})")
            utterance.line = number
            utterances.append(utterance)
        return CheckResult(
            manifest=manifest,
            n_lines=cached["n_lines"],
            utterances=utterances,
            problems=[Problem(*p) for p in cached["problems"]],
            target=cached["target"],
            cached=True,
        )
    except (KeyError, TypeError, ValueError):  # written by other code: check again instead
        return None


def write_cached(cache_file: Path, key: dict, result: CheckResult) -> None:
    """One JSON file per manifest path (a changed manifest replaces its entry), atomically."""
    record = {
        "key": key,
        "n_lines": result.n_lines,
        "target": result.target,
        "utterances": [[u.line, u.to_json()] for u in result.utterances],
        "problems": [[p.line, p.id, p.reason, p.detail] for p in result.problems],
    }
    try:
        with atomic_write(cache_file) as tmp:
            tmp.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    except OSError as e:  # the check itself succeeded; only the next run will be slower
        warnings.warn(f"could not cache the data check in {cache_file}: {e}", stacklevel=3)
