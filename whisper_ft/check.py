"""Preflight data check: every manifest line parsed, every audio file decoded, before training.

    result = check_manifest("train.jsonl")     # problems, and the usable utterances
    print(result.summary(write_report(result, "train.check.tsv")))

One pass finds every problem of every line (a line can have several) instead of a training
run stopping at the first bad line, or at the first bad file hours in. Each problem has a
reason key from `REASONS`. The usable lines come back as `Utterance`s with `kana` (kana
target) and `duration` filled, so hand-written manifests need neither; the manifest itself is
never rewritten. Audio is decoded in full, in parallel over CPU cores, and the result is
cached: an unchanged manifest is not checked twice.

Owns `check_manifest` (the checks of `check_lines` over one manifest, through the cache of
`check_cache`), the TSV report and the `check-data` command (`check_data`).
"""

import argparse
import csv
from pathlib import Path

from whisper.tokenizer import Tokenizer, get_tokenizer

from whisper_ft.arguments import add_options, call, positive_int
from whisper_ft.check_cache import cache_entry, read_cached, write_cached
from whisper_ft.check_lines import (
    REASONS,
    CheckResult,
    Problem,
    line_job,
    parse_lines,
    run_jobs,
    token_issues,
)
from whisper_ft.decoding import TOKENS_PER_SECOND, decoding_budget, max_decode_tokens
from whisper_ft.files import atomic_write
from whisper_ft.manifest import TARGETS, ManifestError, Target, manifest_lines, parse_line
from whisper_ft.model import N_TEXT_CTX

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
        cache_dir: where results are cached; None: `check_cache.default_cache_dir()`.
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


def add_check_command(subparsers: argparse._SubParsersAction) -> None:
    """Add `check-data` (`check_data`) to an argparse subparsers object; it sets `func`, a
    callable(args) → exit code."""
    p = subparsers.add_parser(
        "check-data",
        help="check manifests and their audio before training: one line per problem",
        description="Reasons: "
        + "; ".join(f"{reason}: {meaning}" for reason, meaning in REASONS.items()),
    )
    add_options(
        p,
        check_data,
        help={
            "manifests": "JSONL manifests",
            "strict": "exit with 1 when any line is bad",
            "target": "target to check (default: the lines' target, else kana)",
            "workers": "processes (default: every CPU core)",
            "report": "TSV of the problems (line, id, reason, detail); with several manifests a "
            "folder that gets <manifest stem>.tsv for each",
            "recheck": "ignore cached results: reopen every audio file",
        },
        positional=("manifests",),
        flags={"manifests": "manifest"},
        value_types={"workers": positive_int},
    )
    p.set_defaults(func=lambda args: call(check_data, args))
