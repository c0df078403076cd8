"""A tested run's per-utterance results: `predictions.tsv` (written by `test`) read as
`Prediction`s, each aligned character by character, summed by speaker, the worst first.

    predictions = read_predictions("…/version_0/predictions.tsv")
    ref, hyp, marks = aligned(p.reference, p.hypothesis)   # S, D, I under each column
    by_speaker(predictions), worst_utterances(predictions, 10)

Owns the reading of the file and these views of it; the report built from them is `report`'s.
"""

import csv
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import jiwer

from whisper_ft.evaluation.metrics import char_edits, error_rate

PREDICTIONS_HEADER = ["id", "reference", "hypothesis", "cer", "speaker"]
# The looping signs of each row, after those (files written before them lack them): 1 when
# decoding hit its budget, 1 when the hypothesis repeats a unit 4 times (`metrics.has_loop`),
# and the character insertions among its edits.
LOOPING_COLUMNS = ["hit_budget", "loop", "insertions"]
FULL_WIDTH_SPACE = "\u3000"  # stands for a missing character in a column of full-width ones


class ReportError(ValueError):
    """A run folder without anything to report, or a predictions.tsv that cannot be read."""


@dataclass(frozen=True)
class Prediction:
    id: str  # utterance id
    reference: str  # reference exactly as `test` scored it (normalised)
    hypothesis: str  # hypothesis exactly as scored
    cer: float  # this utterance's CER, as `test` wrote it
    speaker: str  # speaker id from the manifest; "" where it has none

    @cached_property
    def errors(self) -> int:
        """Character edits (substitutions + deletions + insertions), as `metrics.score`."""
        return char_edits(self.reference, self.hypothesis)


def read_predictions(path: str | Path) -> list[Prediction]:
    """The rows of a predictions.tsv `test` wrote; a bad row raises ReportError naming file:line."""
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows, None)
        if header not in (PREDICTIONS_HEADER, PREDICTIONS_HEADER + LOOPING_COLUMNS):
            raise ReportError(
                f"{path}:1: the header is not {' '.join(PREDICTIONS_HEADER + LOOPING_COLUMNS)}; "
                "give the predictions.tsv that `python -m whisper_ft test` wrote."
            )
        width = len(header)
        predictions = []
        for row in rows:
            try:
                if len(row) != width:
                    raise ValueError(f"{len(row)} fields")
                utterance_id, reference, hypothesis, cer, speaker = row[:5]
                predictions.append(
                    Prediction(utterance_id, reference, hypothesis, float(cer), speaker)
                )
            except ValueError as e:  # wrong field count or a cer that is not a number
                raise ReportError(
                    f"{path}:{rows.line_num}: expected {width} tab-separated fields "
                    f"({', '.join(header)}) with a numeric cer, got {row!r} ({e}); "
                    "run `python -m whisper_ft test` again to rewrite the file."
                ) from e
    return predictions


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def _full_width(char: str) -> str:
    """`char` as one full-width character: kana and kanji as they are, ASCII as its full-width
    form, nothing as a full-width space (anything else gets a space after it: two columns)."""
    if not char:
        return FULL_WIDTH_SPACE
    if _wide(char):
        return char
    return chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char + " "


def aligned(reference: str, hypothesis: str) -> tuple[str, str, str]:
    """Reference, hypothesis and marker lines of jiwer's character alignment, one column per
    aligned position: S under a substitution, D under a deletion (the hypothesis has a blank
    there), I under an insertion (the reference has one). A column holding a full-width
    character is written in full-width characters on all three lines (blank: U+3000, ASCII:
    its full-width form, S/D/I: Ｓ/Ｄ/Ｉ), so the lines line up by character count in any
    monospace font; a column of ASCII alone stays half-width."""
    out = jiwer.process_characters(reference, hypothesis)
    ref_chars, hyp_chars = out.references[0], out.hypotheses[0]
    lines = ["", "", ""]
    for chunk in out.alignments[0]:
        ref = ref_chars[chunk.ref_start_idx : chunk.ref_end_idx]
        hyp = hyp_chars[chunk.hyp_start_idx : chunk.hyp_end_idx]
        for i in range(max(len(ref), len(hyp))):
            r, h = (ref[i] if i < len(ref) else ""), (hyp[i] if i < len(hyp) else "")
            mark = "" if chunk.type == "equal" else "I" if not r else "D" if not h else "S"
            column = (r, h, mark)
            if any(_wide(c) for c in (r, h) if c):
                column = tuple(_full_width(c) for c in column)
            for n, c in enumerate(column):
                lines[n] += c or " "
    return lines[0], lines[1], lines[2]


def by_speaker(predictions: list[Prediction]) -> list[tuple[str, int, int, int, float]]:
    """(speaker, utterances, character edits, reference characters, CER) per speaker, worst
    CER first (ties by speaker id). The CER is the speaker's corpus CER: summed edits over
    summed reference lengths, as the metrics compute it."""
    sums: dict[str, tuple[int, int, int]] = {}
    for p in predictions:
        n, errors, chars = sums.get(p.speaker, (0, 0, 0))
        sums[p.speaker] = (n + 1, errors + p.errors, chars + len(p.reference))
    rows = [(s, n, e, chars, error_rate(e, chars)) for s, (n, e, chars) in sums.items()]
    return sorted(rows, key=lambda row: (-row[4], row[0]))


def worst_utterances(predictions: list[Prediction], n: int) -> list[Prediction]:
    """The `n` utterances with the most character edits (not the highest CER, which puts a
    one-character utterance with one error above a long one with ten), ties by id; only
    utterances with at least one error."""
    wrong = [p for p in predictions if p.errors > 0]
    return sorted(wrong, key=lambda p: (-p.errors, p.id))[:n]
