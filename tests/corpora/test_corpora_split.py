"""`corpora.split`: the train/val/test split, disjoint by speaker and by sentence."""

import pytest
from corpora_helpers import SENTENCES, assert_disjoint

from whisper_ft.corpora.split import split_disjoint
from whisper_ft.manifest import Utterance


def utterance(speaker: str, n: int, text: str) -> Utterance:
    return Utterance(id=f"{speaker}_{n}", audio=f"{speaker}_{n}.wav", text=text, speaker=speaker)


def test_split_disjoint_on_a_parallel_corpus():
    # 40 speakers all read 30 shared sentences, plus 2 of their own.
    speakers = [f"spk{k:02d}" for k in range(40)]
    utterances = [utterance(s, i, f"共通の文その{i}です。") for s in speakers for i in range(30)]
    utterances += [
        utterance(s, 100 + i, f"{s}の文その{i}です。") for s in speakers for i in range(2)
    ]
    result = split_disjoint(utterances, seed=7)

    splits = result.splits()
    assert_disjoint(splits)
    # 5% and 10% of 40 speakers; 5% and 10% of 30 shared sentences.
    assert [len({u.speaker for u in splits[n]}) for n in ("train", "val", "test")] == [34, 2, 4]
    shared = {n: {u.text for u in splits[n] if u.text.startswith("共通")} for n in splits}
    assert [len(shared[n]) for n in ("train", "val", "test")] == [25, 2, 3]
    kept = sum(len(us) for us in splits.values())
    assert kept + sum(result.dropped.values()) == len(utterances)
    assert result.dropped == {
        "sentence held out for train": (2 + 4) * 25,
        "sentence held out for val": (34 + 4) * 2,
        "sentence held out for test": (34 + 2) * 3,
    }
    assert split_disjoint(utterances, seed=7).splits() == splits


def test_split_keys_sentences_by_normalised_text():
    # The same sentence written three ways must land in one split, not leak across.
    variants = ["こんにちは、世界。", "こんにちは世界", "コンニチハ 世界！"]
    utterances = [utterance(f"s{k}", 0, variants[k % 3]) for k in range(9)]
    utterances += [utterance(f"s{k}", 1, f"{k}番目の文です。") for k in range(9)]
    result = split_disjoint(utterances, n_val_speakers=2, n_test_speakers=2)
    splits = result.splits()
    assert_disjoint(splits)
    greeting = [n for n, us in splits.items() if any("世界" in u.text for u in us)]
    assert len(greeting) == 1


def test_split_raises_when_val_would_be_empty():
    # Three speakers reading the same two sentences: nothing can be held out for val.
    utterances = [utterance(s, i, t) for s in "abc" for i, t in enumerate(SENTENCES[:2])]
    with pytest.raises(ValueError, match="the (val|test) split would be empty.*nonpara30"):
        split_disjoint(utterances)
