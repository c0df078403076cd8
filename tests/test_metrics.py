import jiwer
import pytest
import torch

from whisper_ft.metrics import CorpusErrorRates, score


def test_score_normalises_before_counting():
    s = score("きょうは、いい天気。", "キョウハ イイ天気")
    assert (s.reference, s.hypothesis, s.char_errors, s.chars) == ("キョウハイイ天気",) * 2 + (0, 8)


def test_corpus_rate_is_summed_edits_over_summed_length_not_a_mean():
    refs, hyps = ["アイウエオカキクケコ", "ア"], ["アイウエオカキクケコ", "イ"]
    rates = CorpusErrorRates()
    rates.update([score(r, h) for r, h in zip(refs, hyps, strict=True)])
    out = rates.compute()
    assert out["cer"].item() == pytest.approx(1 / 11)  # a mean of per-utterance rates: 0.5
    assert out["cer"].item() == pytest.approx(jiwer.cer(refs, hyps))
    assert out["wer"].item() == pytest.approx(0.5)  # one word each; one of two wrong
    assert out["n_utterances"] == 2


def test_updates_accumulate_and_empty_reference_counts_insertions():
    rates = CorpusErrorRates()
    rates.update([score("アイ", "アイ")])
    rates.update([score("。", "ウ")])
    assert rates.char_errors == 1 and rates.chars == 2
    assert rates.compute()["cer"] == torch.tensor(0.5)
    assert score("", "").cer == 0.0 and score("", "ア").cer == 1.0
