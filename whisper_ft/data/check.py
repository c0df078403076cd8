"""The data check: every manifest line parsed and every audio file decoded, before training.

    result = check_manifest("train.jsonl")     # problems, and the usable utterances
    print(result.summary(write_report(result, "train.check.tsv")))

One pass finds every problem of every line (a line can have several) instead of a training
run stopping at the first bad line, or at the first bad file hours in. Each problem has a
reason key from `REASONS`. The usable lines come back as `Utterance`s with `kana` (kana
target) and `duration` filled, so hand-written manifests need neither; the manifest itself is
never rewritten.

In the order of this file:
- the checks of a line and its audio: `REASONS`, `Problem`, `CheckResult`, `parse_lines`
  (JSON, fields, duplicate ids, one target), the target checks (kana made by OpenJTalk,
  katakana only, decoder tokens: `token_issues`) and the audio checks (decoded in full: a
  header can be fine over a corrupt body), run in parallel over CPU cores (`run_jobs`);
- the check's cache: a manifest's `CheckResult` reused while nothing it depends on changed
  (`cache_entry`, `read_cached`, `write_cached`). One JSON file per manifest path as given
  under `default_cache_dir()`; the key holds the manifest's bytes, every audio file's path,
  size and modification time, and the settings of the check; anything else needs `recheck`;
- `check_manifest` (the checks over one manifest, through the cache), the TSV report
  (`write_report`) and `check_data` (the `check-data` command's function).
"""

import csv
import hashlib
import json
import math
import os
import sys
import unicodedata
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm
from whisper.audio import CHUNK_LENGTH
from whisper.tokenizer import Tokenizer, get_tokenizer

from whisper_ft.data.collate import decoder_tokens
from whisper_ft.decoding import N_TEXT_CTX, TOKENS_PER_SECOND, decoding_budget, max_decode_tokens
from whisper_ft.files import atomic_write, cache_root
from whisper_ft.manifest import (
    TARGETS,
    ManifestError,
    Target,
    Utterance,
    line_problems,
    manifest_lines,
    parse_line,
)
from whisper_ft.text import normalize, to_kana

# reason key → what it means. A line is excluded when it has any of them.
REASONS = {
    "bad_json": "the line is not a JSON object",
    "missing_field": "id, audio or text is absent or null, or id or audio is empty",
    "bad_field": "kana is not a string, duration not a finite positive number of seconds, or "
    "target not kana/text or "
    "unlike the target of the lines before it",
    "duplicate_id": "the id is already used on an earlier line (named in the detail)",
    "empty_text": "text is empty or only whitespace",
    "empty_target": "the target is empty once punctuation and spaces are removed (text '。、！')",
    "not_katakana": "the kana target holds characters other than katakana, ー and punctuation: "
    "emoji, symbols and letters that OpenJTalk passes through unread",
    "too_many_tokens": "SOT prefix + target tokens are more than the decoder's context",
    "missing_audio": "no file at the audio path (relative paths start at the manifest's folder)",
    "unreadable_audio": "an empty (0-byte) file, or one libsndfile cannot open or decode",
    "empty_audio": "the file decodes to 0 samples",
    "too_long_audio": f"longer than Whisper's {CHUNK_LENGTH}-s window: the model would hear only "
    "its start, and the transcript would not match",
}
MAX_CHUNK_LINES = 64  # lines per task sent to a worker process
DECODE_BLOCK_FRAMES = 65536  # frames decoded per read: bounds memory on long files
# Katakana letters, ー and the iteration marks ヽヾ; the middle dot ・ is punctuation.
KATAKANA = frozenset(
    chr(c) for c in [*range(0x30A1, 0x30FB), 0x30FC, 0x30FD, 0x30FE, *range(0x31F0, 0x3200)]
)


@dataclass
class Problem:
    """One reason a manifest line cannot be used."""

    line: int  # 1-based line number in the manifest
    id: str | None  # the line's id (None: it has none, or the line is not JSON)
    reason: str  # a key of REASONS
    detail: str  # what exactly is wrong and what to do, one line


@dataclass
class CheckResult:
    """What `check_manifest` found in one manifest."""

    manifest: Path  # the manifest checked, as given
    n_lines: int  # non-blank lines read
    utterances: list[Utterance]  # lines without problems; kana (kana target), duration filled
    problems: list[Problem]  # every problem found, in line order; a line can have several
    target: str = "kana"  # the target checked: kana or text
    cached: bool = False  # True: read from the cache, no audio was opened

    @property
    def n_excluded(self) -> int:
        """Lines with at least one problem."""
        return len({p.line for p in self.problems})

    def counts(self) -> dict[str, int]:
        """reason → number of problems, in the order of REASONS."""
        counts = Counter(p.reason for p in self.problems)
        return {reason: counts[reason] for reason in REASONS if counts[reason]}

    def require_usable(self) -> None:
        """ManifestError when no line of the manifest can be used (nothing to train on)."""
        if not self.utterances:
            raise ManifestError(
                f"{self.manifest}: none of its {self.n_lines} lines can be used; "
                f"`python -m whisper_ft check-data {self.manifest}` lists why."
            )

    def summary(self, report: str | Path | None = None) -> str:
        """One line: `data check train.jsonl: 3 of 120 lines excluded (missing_audio 2,
        too_long_audio 1); report: /abs/train.check.tsv`."""
        line = f"data check {self.manifest}: {self.n_excluded} of {self.n_lines} lines excluded"
        if self.problems:
            line += " (" + ", ".join(f"{r} {n}" for r, n in self.counts().items()) + ")"
        if self.cached:
            line += "; cached result, audio not reopened (--recheck to check it again)"
        if report is not None:
            line += f"; report: {Path(report).resolve()}"
        return line


def parse_lines(
    lines: list[tuple[int, bytes]], target: str | None, problems: list[Problem]
) -> tuple[list[tuple[int, str, dict]], str]:
    """The lines sound enough to check their text and audio, as (line number, line, record),
    and the target (`target`, else the lines' `target` key, else kana). The problems found on
    the way (JSON, fields, ids, empty text) are appended to `problems`."""
    sound: list[tuple[int, str, dict]] = []
    first_line_of: dict[str, int] = {}
    line_target: tuple[str, int] | None = None  # the first `target` key and its line
    for number, raw_bytes in lines:
        record, issues = line_problems(raw_bytes)
        if record is None:
            problems.extend(Problem(number, None, r, d) for r, d in issues)
            continue
        utt_id = None if record.get("id") in (None, "") else str(record["id"])
        if utt_id in first_line_of:
            issues.append(("duplicate_id", f"id already used on line {first_line_of[utt_id]}"))
        elif utt_id is not None:
            first_line_of[utt_id] = number
        value = record.get("target")
        if value in TARGETS and target is None:  # an explicit target overrides the lines'
            if line_target is None:
                line_target = (value, number)
            elif value != line_target[0]:
                first, first_number = line_target
                detail = f"target {value!r}, but line {first_number} has {first!r}; use one"
                issues.append(("bad_field", detail))
        problems.extend(Problem(number, utt_id, r, d) for r, d in issues)
        if any(reason != "empty_text" for reason, _ in issues):
            continue
        # An empty text: its audio is still checked.
        sound.append((number, raw_bytes.decode("utf-8").removeprefix("\ufeff"), record))
    resolved = target or (line_target[0] if line_target else "kana")
    return sound, resolved


def token_issues(
    tokenizer: Tokenizer, target_text: str, target: str, n_text_ctx: int
) -> list[tuple[str, str]]:
    """too_many_tokens when SOT prefix + target tokens exceed the decoder context."""
    n_tokens = len(decoder_tokens(tokenizer, target_text))
    if n_tokens <= n_text_ctx:
        return []
    n_sot = len(tokenizer.sot_sequence_including_notimestamps)
    detail = (
        f"{n_tokens} decoder tokens ({n_sot} SOT + {n_tokens - n_sot} of the {target}), more "
        f"than the decoder's {n_text_ctx}; split the utterance or shorten its text"
    )
    return [("too_many_tokens", detail)]


@dataclass
class Job:
    """One line's checks that need audio or OpenJTalk, sent to a worker process."""

    line: int  # manifest line number
    audio: str  # resolved audio path
    target: str  # kana or text
    text: str  # the line's text
    kana: str | None  # the line's kana (None: make it with OpenJTalk)
    check_target: bool  # False when the text is empty: nothing to convert or count


@dataclass
class Outcome:
    line: int  # manifest line number
    kana: str | None  # the line's kana, or OpenJTalk's (kana target), else None
    duration_s: float | None  # decoded seconds of audio (None: the audio has a problem)
    target_ok: bool  # the target exists and is not empty: its tokens can be counted
    problems: list[tuple[str, str]] = field(default_factory=list)  # (reason, detail)


def line_job(manifest: Path, number: int, record: dict, target: str) -> Job:
    text = str(record["text"])
    audio = manifest.parent / str(record["audio"])  # an absolute `audio` replaces the folder
    return Job(number, str(audio), target, text, record.get("kana"), bool(text.strip()))


def run_jobs(jobs: list[Job], workers: int | None, desc: str, show: bool) -> list[Outcome]:
    """Outcomes in job order: in this process for one worker or one chunk, else in a process
    pool over chunks of lines (decoding and OpenJTalk are CPU-bound and independent)."""
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    if n_workers < 1:
        raise ValueError(f"`workers` must be at least 1, got {n_workers}.")
    size = max(1, min(MAX_CHUNK_LINES, math.ceil(len(jobs) / (4 * n_workers))))
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    outcomes: list[Outcome] = []
    with tqdm(total=len(jobs), desc=desc, unit="line", file=sys.stderr, disable=not show) as bar:
        if n_workers == 1 or len(chunks) <= 1:
            for chunk_outcomes in map(_check_chunk, chunks):
                outcomes += chunk_outcomes
                bar.update(len(chunk_outcomes))
        else:
            # pyopenjtalk loads its dictionary on its first use in a process: once per worker.
            with ProcessPoolExecutor(max_workers=min(n_workers, len(chunks))) as pool:
                for chunk_outcomes in pool.map(_check_chunk, chunks):
                    outcomes += chunk_outcomes
                    bar.update(len(chunk_outcomes))
    return outcomes


def _check_chunk(jobs: list[Job]) -> list[Outcome]:
    return [_check_job(job) for job in jobs]


def _check_job(job: Job) -> Outcome:
    outcome = Outcome(job.line, job.kana, None, target_ok=False)
    if job.check_target:
        if job.target == "kana":
            outcome.kana = job.kana if job.kana is not None else to_kana(job.text)
            issue = _kana_issue(job.text, outcome.kana, made=job.kana is None)
        else:
            issue = None if normalize(job.text) else ("empty_target", _only_punctuation(job.text))
        if issue:
            outcome.problems.append(issue)
        outcome.target_ok = issue is None or issue[0] != "empty_target"
    try:
        outcome.duration_s = _decoded_duration_s(Path(job.audio))
    except _AudioIssue as e:
        outcome.problems.append((e.reason, e.detail))
    return outcome


def _only_punctuation(text: str) -> str:
    return f"text {text!r} is only punctuation and spaces: nothing to learn or score"


def _kana_issue(text: str, kana: str, made: bool) -> tuple[str, str] | None:
    """empty_target or not_katakana for a kana target, else None. `made`: by OpenJTalk."""
    source = f"text {text!r} reads as kana {kana!r}" if made else f"kana {kana!r}"
    if not normalize(kana):
        return "empty_target", f"{source}: only punctuation and spaces, nothing to learn or score"
    # normalize(c) is empty exactly for the punctuation and spaces that scoring ignores.
    foreign = sorted(c for c in set(kana) - KATAKANA if normalize(c))
    if not foreign:
        return None
    chars = ", ".join(f"{c} (U+{ord(c):04X} {unicodedata.name(c, '?')})" for c in foreign)
    why = "OpenJTalk passes such characters through unread" if made else "not katakana"
    return "not_katakana", f"{source}, which holds {chars}: {why}; spell them out or drop the line"


class _AudioIssue(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _decoded_duration_s(path: Path) -> float:
    """Seconds of audio in `path`, counted by decoding it: a header can be fine over a corrupt
    body. Decoding stops past CHUNK_LENGTH, where the line is excluded anyway.

    Raises _AudioIssue (missing_audio, unreadable_audio, empty_audio, too_long_audio).
    """
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise _AudioIssue("missing_audio", f"{path}: {what}")
    if path.stat().st_size == 0:
        raise _AudioIssue("unreadable_audio", f"{path}: an empty (0-byte) file")
    try:
        with sf.SoundFile(str(path)) as f:
            limit = CHUNK_LENGTH * f.samplerate
            block = np.empty((DECODE_BLOCK_FRAMES, f.channels), dtype=np.int16)
            frames = 0
            while n := len(f.read(DECODE_BLOCK_FRAMES, dtype="int16", out=block)):
                frames += n
                if frames > limit:
                    seconds = max(frames, f.frames) / f.samplerate
                    raise _AudioIssue(
                        "too_long_audio",
                        f"{path}: {seconds:.1f} s, longer than Whisper's {CHUNK_LENGTH}-s window "
                        "(whisper.audio.CHUNK_LENGTH): the model would hear only its first "
                        f"{CHUNK_LENGTH} s; split or trim it",
                    )
            rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise _AudioIssue(
            "unreadable_audio", f"{path}: cannot decode ({e}); re-export or convert it (ffmpeg)"
        ) from e
    if frames == 0:
        raise _AudioIssue("empty_audio", f"{path}: a valid header but 0 samples")
    return frames / rate


CHECK_VERSION = 1  # part of the key: raise it when a line or audio check changes


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


PROGRESS_MIN_LINES = 500  # a progress bar (stderr) from this many lines on
MAX_NAMED_LINES = 5  # lines named in the warning about targets decoding cannot produce


def check_manifest(
    path: str | Path,
    *,
    target: str | None = None,
    tokenizer: Tokenizer | None = None,
    n_text_ctx: int = N_TEXT_CTX,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    recheck: bool = False,
    progress: bool | None = None,
) -> CheckResult:
    """Check every line of a manifest and the audio it names; see REASONS for what is caught.

    Args:
        path: JSONL manifest; relative audio paths start at its folder. Never written to.
        target: kana or text; None: the lines' `target` key, else kana. Kana checks (kana
            made by OpenJTalk where the line has none, katakana only) apply to kana alone.
        tokenizer: counts the target's tokens; None: Whisper's multilingual one, ja, transcribe.
        n_text_ctx: the decoder's context: SOT prefix + target tokens must fit in it.
        workers: processes that decode audio and make kana; None: os.cpu_count(); 1: this one.
        cache_dir: where results are cached; None: `default_cache_dir()`.
        recheck: ignore a cached result and check again (the new result replaces it): for
            audio files changed with neither a new size nor a new modification time (an
            audio file's size and time are part of the cache key).
        progress: a tqdm bar on stderr; None: from PROGRESS_MIN_LINES lines on.

    Raises ManifestError when the manifest is not a file or `target` is not kana/text.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(
            f"{path}: no such manifest. Make one with `python -m whisper_ft prepare …`."
        )
    if target is not None and target not in TARGETS:
        raise ManifestError(f"`target` must be one of {', '.join(TARGETS)}, got {target!r}.")
    tokenizer = tokenizer or get_tokenizer(True, language="ja", task="transcribe")
    lines = list(manifest_lines(path))
    cache_file, key = cache_entry(
        path, lines, target=target, tokenizer=tokenizer, n_text_ctx=n_text_ctx, cache_dir=cache_dir
    )
    if not recheck:
        cached = read_cached(cache_file, key, path)
        if cached is not None:
            return cached

    result = CheckResult(manifest=path, n_lines=len(lines), utterances=[], problems=[])
    sound, result.target = parse_lines(lines, target, result.problems)
    jobs = [line_job(path, number, record, result.target) for number, _, record in sound]
    show = len(lines) >= PROGRESS_MIN_LINES if progress is None else progress
    outcomes = run_jobs(jobs, workers, desc=f"checking {path.name}", show=show)

    excluded = {p.line for p in result.problems}  # empty texts, whose audio was checked too
    for (number, raw, record), outcome in zip(sound, outcomes, strict=True):
        utt_id = str(record["id"])
        issues = outcome.problems
        target_text = outcome.kana if result.target == "kana" else str(record["text"])
        if outcome.target_ok and target_text is not None:
            issues += token_issues(tokenizer, target_text, result.target, n_text_ctx)
        if not issues and number not in excluded:
            try:
                utterance = parse_line(raw, f"{path}:{number}")
            except ManifestError as e:  # a rule of the reader this check does not know yet
                issues.append(("bad_field", str(e)))
        result.problems += [Problem(number, utt_id, r, d) for r, d in issues]
        if issues or number in excluded:
            continue
        utterance.line = number
        if utterance.kana is None and result.target == "kana":
            utterance.kana = outcome.kana
        if utterance.duration is None:
            utterance.duration = round(outcome.duration_s, 3)  # as prepare writes it
        result.utterances.append(utterance)
    result.problems.sort(key=lambda p: p.line)  # stable: a line's problems keep their order
    write_cached(cache_file, key, result)
    return result


def beyond_decoding(
    result: CheckResult, tokenizer: Tokenizer, n_text_ctx: int = N_TEXT_CTX
) -> list[tuple[int, str, int, int]]:
    """Usable lines whose target decoding cannot produce: as many target tokens as the
    decoding budget of their audio (`decoding.decoding_budget`, what test and transcribe
    allow) or more, so the end-of-text never fits. They still train (teacher forcing takes
    up to `n_text_ctx`), but every decode of them is cut and scored with deletions.

    Returns (line, id, target tokens, budget) per such line.
    """
    found = []
    for u in result.utterances:
        target_text = u.kana if result.target == "kana" else u.text
        n_tokens = len(tokenizer.encode(target_text or ""))
        budget = decoding_budget(u.duration, n_text_ctx)
        if n_tokens >= budget:
            found.append((u.line, u.id, n_tokens, budget))
    return found


def beyond_decoding_warning(manifest: str | Path, found: list[tuple[int, str, int, int]]) -> str:
    """One warning line for `beyond_decoding`'s lines ('' when there are none)."""
    if not found:
        return ""
    named = ", ".join(
        f"{manifest}:{line} ({utt_id}) {n} tokens, budget {budget}"
        for line, utt_id, n, budget in found[:MAX_NAMED_LINES]
    )
    more = f" and {len(found) - MAX_NAMED_LINES} more" if len(found) > MAX_NAMED_LINES else ""
    return (
        f"warning: {len(found)} line{'s' if len(found) > 1 else ''} of {manifest} "
        f"{'have targets' if len(found) > 1 else 'has a target'} longer than decoding can "
        f"produce from the audio ({TOKENS_PER_SECOND} tokens/s + a few, at most "
        f"{max_decode_tokens(N_TEXT_CTX)}): {named}{more}. They train, but test and "
        "transcribe cut them; split such utterances, or check their text matches the audio."
    )


def write_report(result: CheckResult, path: str | Path) -> Path:
    """Write the problems as TSV (`line, id, reason, detail`), atomically; returns the
    absolute path."""
    path = Path(path).resolve()
    with atomic_write(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["line", "id", "reason", "detail"])
        for p in result.problems:
            writer.writerow([p.line, p.id or "", p.reason, p.detail])
    return path


def check_data(
    manifests: list[str],
    *,
    strict: bool = False,
    target: Target | None = None,
    workers: int | None = None,
    report: str | Path | None = None,
    recheck: bool = False,
) -> int:
    """The `check-data` command: `check_manifest` of each manifest, printing each problem
    (`manifest:line<TAB>id<TAB>reason<TAB>detail`), the count of each reason, a warning for
    targets decoding cannot produce (`beyond_decoding`) and the summary.

    Args:
        strict: the exit code is 1 when any line has a problem.
        report: write the problems as TSV (`write_report`) to this file; with several
            manifests, a folder that gets `<manifest stem>.tsv` for each.
        target, workers, recheck: as `check_manifest` takes them.

    Returns the exit code: 1 with `strict` when any line has a problem, else 0.
    """
    reports = _report_paths(manifests, report)
    tokenizer = get_tokenizer(True, language="ja", task="transcribe")
    any_problem = False
    for manifest, report_path in zip(manifests, reports, strict=True):
        result = check_manifest(manifest, target=target, workers=workers, recheck=recheck)
        for p in result.problems:
            print(f"{manifest}:{p.line}\t{p.id or '-'}\t{p.reason}\t{p.detail}")
        for reason, n in result.counts().items():
            print(f"{n:8d}  {reason}: {REASONS[reason]}")
        warning = beyond_decoding_warning(manifest, beyond_decoding(result, tokenizer))
        if warning:
            print(warning)
        written = write_report(result, report_path) if report_path else None
        print(result.summary(written), flush=True)
        any_problem = any_problem or bool(result.problems)
    return 1 if strict and any_problem else 0


def _report_paths(manifests: list[str], report: str | Path | None) -> list[Path | None]:
    if report is None:
        return [None] * len(manifests)
    if len(manifests) == 1:
        return [Path(report)]
    stems = [Path(m).stem for m in manifests]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise ManifestError(
            f"several manifests named {', '.join(repeated)}: their reports in {report}/ would "
            "overwrite each other; check them one at a time, each with its own `report`."
        )
    return [Path(report) / f"{stem}.tsv" for stem in stems]
