"""The checks of manifest lines and the audio they name, and what they find.

    problems: list[Problem] = []
    sound, target = parse_lines(list(manifest_lines(path)), None, problems)  # JSON, fields
    jobs = [line_job(path, number, record, target) for number, _, record in sound]
    outcomes = run_jobs(jobs, workers=None, desc="checking", show=False)  # text and audio

Owns `REASONS` (every reason a line is excluded, with what it means), `Problem` and
`CheckResult`, the line checks (JSON, fields, duplicate ids, one target), the target checks
(kana made by OpenJTalk, katakana only, decoder tokens) and the audio checks (decoded in
full: a header can be fine over a corrupt body), run in parallel over CPU cores. Running
them over one manifest is `check.check_manifest`'s; reusing a result, `check_cache`'s.
"""

import math
import os
import sys
import unicodedata
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm
from whisper.audio import CHUNK_LENGTH
from whisper.tokenizer import Tokenizer

from whisper_ft.collate import decoder_tokens
from whisper_ft.manifest import TARGETS, ManifestError, Utterance, line_problems
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
    """too_many_tokens when SOT prefix + target tokens exceed the context (as data.py checks)."""
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
