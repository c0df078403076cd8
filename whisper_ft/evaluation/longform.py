"""Long-form scores: one recording's transcript segments against its known sentence times.

    reference = recording.extra["segments"]          # prepare long: {"start", "end", "kana"}
    hypothesis = transcriber.timed_segments(result)  # {"start", "end", "text"}
    s = score_recording(reference, hypothesis)
    s.kana_cer, s.starts_within(0.5), s.median_start_error_s, s.dropped, s.looping_segments
    total = combine([s, …])                            # the corpus: sums, and every start pooled

What a 30-s-window decoder gets wrong on a long file and a per-utterance test cannot show:

| figure | what it counts |
| --- | --- |
| `kana_cer` | the whole recording's kana CER (`metrics.score` of the joined texts) |
| `pipeline_kana_cer` | the same with the hypothesis read into kana by OpenJTalk first |
| `starts_within(s)` | share of sentence starts with a hypothesis start within `s` seconds |
| `median_start_error_s` | per sentence, seconds to the nearest hypothesis start: median |
| `p90_start_error_s` | the same, 90th percentile (both nearest-rank) |
| `dropped` | sentences no hypothesis segment with text overlaps in time |
| `looping_segments` | hypothesis segments that hold a loop (`metrics.has_loop`) |
| `repeated_segments` | segments whose text is the one before's again (a window-level loop) |

Start errors are rounded to the millisecond first, so a tolerance at a round number counts
what it says. No Lightning.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from whisper_ft.evaluation.metrics import error_rate, has_loop, score
from whisper_ft.manifest import Target
from whisper_ft.text import normalize, to_kana

START_TOLERANCES_S = (0.3, 0.5)  # the start tolerances `row` reports


@dataclass(frozen=True)
class LongFormScore:
    """Long-form figures of one recording, or of several (`combine`)."""

    recordings: int  # recordings scored
    sentences: int  # reference sentences
    kana_errors: int  # kana edits of the joined hypothesis against the joined reference
    kana_chars: int  # reference length in kana characters
    pipeline_errors: int  # the same with the raw hypothesis read by OpenJTalk
    start_errors_s: tuple[float, ...]  # per sentence: seconds to the nearest hypothesis start
    dropped: int  # sentences no hypothesis segment with text overlaps
    hypothesis_segments: int  # hypothesis segments with text
    looping_segments: int  # of them, those with a loop (`metrics.has_loop`)
    repeated_segments: int  # of them, those repeating the text of the one before

    @property
    def kana_cer(self) -> float:
        return error_rate(self.kana_errors, self.kana_chars)

    @property
    def pipeline_kana_cer(self) -> float:
        return error_rate(self.pipeline_errors, self.kana_chars)

    def starts_within(self, tolerance_s: float) -> float:
        """Share of sentences whose start has a hypothesis segment start within `tolerance_s`."""
        if not self.start_errors_s:
            return float("nan")
        return sum(e <= tolerance_s for e in self.start_errors_s) / len(self.start_errors_s)

    def start_error_percentile_s(self, q: float) -> float:
        """The nearest-rank `q`-th percentile of the start errors: the smallest error with at
        least `q`% of the sentences at or below it (inf where none had a hypothesis start)."""
        if not self.start_errors_s:
            return float("nan")
        ordered = sorted(self.start_errors_s)
        return ordered[max(math.ceil(q / 100 * len(ordered)), 1) - 1]

    @property
    def median_start_error_s(self) -> float:
        return self.start_error_percentile_s(50)

    @property
    def p90_start_error_s(self) -> float:
        return self.start_error_percentile_s(90)

    def row(self, pipeline: bool = False) -> dict[str, float | int]:
        """The figures for a table or JSON, rounded; `pipeline`: the CER of the hypothesis read
        by OpenJTalk in place of the hypothesis as written."""
        return {
            "recordings": self.recordings,
            "sentences": self.sentences,
            "kana_cer": round(self.pipeline_kana_cer if pipeline else self.kana_cer, 4),
            **{f"starts_within_{t}s": round(self.starts_within(t), 4) for t in START_TOLERANCES_S},
            "median_start_error_s": round(self.median_start_error_s, 3),
            "p90_start_error_s": round(self.p90_start_error_s, 3),
            "dropped": self.dropped,
            "hypothesis_segments": self.hypothesis_segments,
            "looping_segments": self.looping_segments,
            "repeated_segments": self.repeated_segments,
        }


def hypothesis_segments(result: dict, timed: list[dict] | None) -> tuple[list[dict], bool]:
    """The segments of a `whisper.transcribe` `result` to score, and whether they are timed:
    `timed` (`Transcriber.timed_segments`: the segments with text, None when the model
    predicted no time) as they are, else every segment of `result` at the times Whisper forces
    at each window's start, scored but with starts that mean little.

    returns : ([{"start", "end", "text"}], timed)
    """
    if timed is not None:
        return timed, True
    untimed = [
        {"start": s["start"], "end": s["end"], "text": s["text"].strip()}
        for s in result["segments"]
    ]
    return untimed, False


def score_recording(
    reference: Sequence[dict], hypothesis: Sequence[dict], target: Target = "kana"
) -> LongFormScore:
    """The long-form figures of one recording (see the module docstring).

    reference: its sentences in time order, {"start", "end", "text", "kana"} (seconds), as
        `corpora.synthetic.prepare_long_recordings` writes them; a missing "kana" is read
        from "text" by OpenJTalk.
    hypothesis: the transcript's segments, {"start", "end", "text"} (`Transcriber.timed_segments`
        or whisper.transcribe's own); those without text are left out.
    target: what the model writes, as `metrics.score` takes it: "kana" scores the hypothesis
        against the sentences' kana, "text" against their text (both also read into kana).
    """
    if not reference:
        raise ValueError("`reference` has no sentences: a recording needs at least one.")
    spoken = [h for h in hypothesis if str(h["text"]).strip()]
    if target == "kana":
        ref_text = "".join(r.get("kana") or to_kana(r["text"]) for r in reference)
    else:
        ref_text = "".join(r["text"] for r in reference)
    joined = score(ref_text, "".join(str(h["text"]).strip() for h in spoken), target)
    starts = [float(h["start"]) for h in spoken]
    errors = tuple(
        round(min((abs(s - float(r["start"])) for s in starts), default=math.inf), 3)
        for r in reference
    )
    dropped = sum(
        not any(h["start"] < r["end"] and h["end"] > r["start"] for h in spoken) for r in reference
    )
    texts = [normalize(str(h["text"])) for h in spoken]
    return LongFormScore(
        recordings=1,
        sentences=len(reference),
        kana_errors=joined.kana_errors,
        kana_chars=joined.kana_chars,
        pipeline_errors=joined.pipeline_errors,
        start_errors_s=errors,
        dropped=dropped,
        hypothesis_segments=len(spoken),
        looping_segments=sum(has_loop(t) for t in texts),
        repeated_segments=sum(a == b for a, b in zip(texts, texts[1:], strict=False)),
    )


def combine(scores: Sequence[LongFormScore]) -> LongFormScore:
    """Several recordings as one corpus: edits over summed reference lengths (not a mean of
    recordings' rates), every sentence's start error pooled, counts summed."""
    if not scores:
        raise ValueError("`scores` is empty: score at least one recording.")
    return LongFormScore(
        recordings=sum(s.recordings for s in scores),
        sentences=sum(s.sentences for s in scores),
        kana_errors=sum(s.kana_errors for s in scores),
        kana_chars=sum(s.kana_chars for s in scores),
        pipeline_errors=sum(s.pipeline_errors for s in scores),
        start_errors_s=tuple(e for s in scores for e in s.start_errors_s),
        dropped=sum(s.dropped for s in scores),
        hypothesis_segments=sum(s.hypothesis_segments for s in scores),
        looping_segments=sum(s.looping_segments for s in scores),
        repeated_segments=sum(s.repeated_segments for s in scores),
    )
