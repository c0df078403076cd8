"""The speaker- and sentence-disjoint train/val/test split, the one every corpus goes through.

In JVS every speaker reads the same 100 sentences (parallel100), so a split by speaker alone
would still score the model on sentences it was trained on. `split_disjoint` gives every
speaker and every distinct sentence (keyed by `text.normalize`) one split, and keeps an
utterance only where the two agree.
"""

import random
from collections import Counter
from dataclasses import dataclass, field

from whisper_ft.manifest import Utterance
from whisper_ft.text import normalize

SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.05  # share of speakers, and of sentences read across splits, held out for val
TEST_FRACTION = 0.10  # the same for test
MIN_SPEAKERS = 3  # one each for train, val and test


@dataclass
class SplitOptions:
    """How a corpus without splits of its own is shared into train/val/test (`--split`)."""

    val_speakers: list[str] | None = None  # speakers for val (None: a seeded ~5%)
    test_speakers: list[str] | None = None  # speakers for test (None: a seeded ~10%)
    seed: int = 0  # seed of the speaker and sentence split


@dataclass
class SplitResult:
    """Utterances kept in each split, and how many were left out for which reason."""

    train: list[Utterance]
    val: list[Utterance]
    test: list[Utterance]
    dropped: Counter[str] = field(default_factory=Counter)  # reason → number of utterances

    def splits(self) -> dict[str, list[Utterance]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def split_disjoint(
    utterances: list[Utterance],
    *,
    val_speakers: list[str] | None = None,
    test_speakers: list[str] | None = None,
    n_val_speakers: int | None = None,
    n_test_speakers: int | None = None,
    seed: int = 0,
) -> SplitResult:
    """Split utterances into train/val/test with no speaker and no sentence in two splits.

    1. Speakers: the explicit lists win; the others are picked by a `seed`ed shuffle,
       `n_val_speakers` / `n_test_speakers` of them (None: about 5% / 10%, at least 1 each).
       Every remaining speaker is train.
    2. Sentences, keyed by `text.normalize(text)`: one read only by speakers of one split
       belongs to that split; those read across splits (JVS parallel100) are shared out by a
       seeded shuffle, about 5% to val and 10% to test (at least 1 each from 3 sentences on).
    3. An utterance is kept in split S iff its speaker and its sentence are both in S; the
       others are dropped and counted by reason in `SplitResult.dropped`.

    Raises ValueError for fewer than 3 speakers, unknown or overlapping explicit speakers,
    repeated ids, an utterance without a speaker, and a val or test split left empty.
    """
    _check_ids_and_speakers(utterances)
    speaker_split = _assign_speakers(
        sorted({u.speaker for u in utterances}),
        val_speakers=val_speakers,
        test_speakers=test_speakers,
        n_val=n_val_speakers,
        n_test=n_test_speakers,
        rng=random.Random(seed),
    )
    sentence_split = _assign_sentences(utterances, speaker_split, rng=random.Random(seed + 1))

    kept: dict[str, list[Utterance]] = {name: [] for name in SPLITS}
    dropped: Counter[str] = Counter()
    for u in utterances:
        key = normalize(u.text)
        if not key:
            dropped["text empty once normalised"] += 1
        elif sentence_split[key] != speaker_split[u.speaker]:
            dropped[f"sentence held out for {sentence_split[key]}"] += 1
        else:
            kept[speaker_split[u.speaker]].append(u)

    for name in ("val", "test"):
        if not kept[name]:
            speakers = sorted(s for s, split in speaker_split.items() if split == name)
            raise ValueError(
                f"the {name} split would be empty: its speakers ({', '.join(speakers)}) read "
                f"none of the sentences assigned to {name}. Add subsets in which speakers read "
                "sentences of their own (e.g. nonpara30), name other or fewer "
                f"`{name}_speakers`, or try another `seed`."
            )
    return SplitResult(train=kept["train"], val=kept["val"], test=kept["test"], dropped=dropped)


def _check_ids_and_speakers(utterances: list[Utterance]) -> None:
    seen: set[str] = set()
    for u in utterances:
        if not u.speaker:
            raise ValueError(f"utterance {u.id!r} has no speaker; a speaker split needs one.")
        if u.id in seen:
            raise ValueError(f"utterance id {u.id!r} is used twice; ids must be unique.")
        seen.add(u.id)
    speakers = sorted({u.speaker for u in utterances})
    if len(speakers) < MIN_SPEAKERS:
        raise ValueError(
            f"found {len(speakers)} speaker(s) ({', '.join(speakers) or 'none'}); a split "
            f"disjoint by speaker needs at least {MIN_SPEAKERS} (one each for train, val, test)."
        )


def held_out_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(n_val, n_test) for n items: the fractions rounded, at least 1 each when n >= 3."""
    if n < 3:
        return 0, 0
    return max(1, round(val_fraction * n)), max(1, round(test_fraction * n))


def _assign_speakers(
    speakers: list[str],
    *,
    val_speakers: list[str] | None,
    test_speakers: list[str] | None,
    n_val: int | None,
    n_test: int | None,
    rng: random.Random,
) -> dict[str, str]:
    """speaker → split name. `speakers` must be sorted so that the seeded pick is reproducible."""
    explicit = {"val": list(val_speakers or []), "test": list(test_speakers or [])}
    named = explicit["val"] + explicit["test"]
    unknown = sorted(set(named) - set(speakers))
    if unknown:
        raise ValueError(
            f"unknown speaker(s) {', '.join(unknown)}; the corpus has {len(speakers)}: "
            f"{', '.join(speakers[:10])}{' …' if len(speakers) > 10 else ''}."
        )
    both = sorted(set(explicit["val"]) & set(explicit["test"]))
    if both:
        raise ValueError(f"speaker(s) {', '.join(both)} named for both val and test.")

    default_val, default_test = held_out_counts(len(speakers), VAL_FRACTION, TEST_FRACTION)
    wanted = {
        "val": len(explicit["val"]) or (default_val if n_val is None else n_val),
        "test": len(explicit["test"]) or (default_test if n_test is None else n_test),
    }
    for name, count in wanted.items():
        if count < 1:
            raise ValueError(f"`n_{name}_speakers` must be at least 1, got {count}.")
    if wanted["val"] + wanted["test"] >= len(speakers):
        raise ValueError(
            f"{wanted['val']} val + {wanted['test']} test speakers leave none of the "
            f"{len(speakers)} for train; hold out fewer speakers."
        )

    split_of = {speaker: name for name in ("val", "test") for speaker in explicit[name]}
    pool = [s for s in speakers if s not in split_of]
    rng.shuffle(pool)
    for name in ("test", "val"):
        if not explicit[name]:
            for speaker in pool[: wanted[name]]:
                split_of[speaker] = name
            pool = pool[wanted[name] :]
    return {speaker: split_of.get(speaker, "train") for speaker in speakers}


def _assign_sentences(
    utterances: list[Utterance], speaker_split: dict[str, str], rng: random.Random
) -> dict[str, str]:
    """normalised sentence → split name (see `split_disjoint`, step 2)."""
    read_in: dict[str, set[str]] = {}
    for u in utterances:
        key = normalize(u.text)
        if key:
            read_in.setdefault(key, set()).add(speaker_split[u.speaker])
    sentence_split = {
        key: next(iter(splits)) for key, splits in read_in.items() if len(splits) == 1
    }
    shared = sorted(key for key, splits in read_in.items() if len(splits) > 1)
    rng.shuffle(shared)
    n_val, n_test = held_out_counts(len(shared), VAL_FRACTION, TEST_FRACTION)
    for i, key in enumerate(shared):
        sentence_split[key] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return sentence_split
