import json

import jiwer
import pytest
import torch

from whisper_ft.evaluation.metrics import CorpusErrorRates, rates_for_json, score
from whisper_ft.text import normalize_words
from whisper_ft.training.results import WER_MEANING


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
    assert out["n_utterances"] == 2
    refs, hyps = ["今日はいい天気です", "雨"], ["今日はいい天気です", "雪"]
    rates = CorpusErrorRates()
    rates.update([score(r, h, target="text") for r, h in zip(refs, hyps, strict=True)])
    words = [normalize_words(t, fold_kana=False) for t in refs]
    words = words, [normalize_words(t, fold_kana=False) for t in hyps]
    assert rates.compute()["wer"].item() == pytest.approx(1 / 6)  # a mean: 0.5
    assert rates.compute()["wer"].item() == pytest.approx(jiwer.wer(*words))


def test_updates_accumulate_and_empty_reference_counts_insertions():
    rates = CorpusErrorRates()
    rates.update([score("アイ", "アイ")])
    rates.update([score("。", "ウ")])
    assert rates.char_errors == 1 and rates.chars == 2
    assert rates.compute()["cer"] == torch.tensor(0.5)
    assert score("", "").cer == 0.0 and score("", "ア").cer == 1.0


def test_kana_target_counts_characters_and_morae():
    s = score("キャット", "キャト")  # ッ deleted: 1 of 4 characters, 1 of 3 morae
    assert (s.kana_errors, s.kana_chars, s.mora_errors, s.morae) == (1, 4, 1, 3)
    assert (s.char_errors, s.chars, s.cer) == (1, 4, 0.25)
    assert s.ortho_errors is None and s.ortho_cer is None  # no orthography to compare
    # a big ヤ for the small ャ: one character substituted, but キャ became two morae
    s = score("キャ", "キヤ")
    assert (s.kana_errors, s.kana_chars, s.mora_errors, s.morae) == (1, 2, 2, 1)
    assert s.mora_er == 2.0


def test_kana_target_hypothesis_is_not_read_by_openjtalk():
    s = score("トーキョー", "東京")  # a kana model that writes kanji is wrong
    assert (s.kana_errors, s.kana_chars, s.kana_hypothesis) == (5, 5, "東京")


def test_text_target_scores_orthography_and_pronunciation():
    s = score("東京。", "東京", target="text")
    assert (s.reference, s.kana_reference) == ("東京", "トーキョー")
    assert s.kana_hypothesis == "トーキョー"
    assert (s.ortho_errors, s.ortho_chars, s.kana_errors, s.kana_chars) == (0, 2, 0, 5)
    # same pronunciation, other script: orthographic errors only
    s = score("東京", "とうきょう", target="text")
    assert (s.hypothesis, s.kana_hypothesis) == ("とうきょう", "トーキョー")  # script kept
    assert (s.ortho_errors, s.ortho_chars, s.kana_errors, s.mora_errors) == (2 + 3, 2, 0, 0)
    assert s.cer == 2.5 and s.kana_cer == 0.0  # the primary rate is orthographic
    # キョーワ vs キョート: one kana and one mora of [キョ, ー, ワ]; 今日ハ vs 京都: all three
    s = score("今日は", "京都", target="text")
    assert (s.kana_errors, s.kana_chars, s.mora_errors, s.morae) == (1, 4, 1, 3)
    assert (s.ortho_errors, s.ortho_chars, s.char_errors, s.chars) == (3, 3, 3, 3)


def test_long_vowel_mode_applies_to_every_rate():
    assert score("コーヒー", "コオヒイ").kana_errors == 2
    s = score("コーヒー", "コオヒイ", long_vowel="vowel")
    assert (s.reference, s.kana_errors, s.mora_errors, s.morae) == ("コオヒイ", 0, 0, 4)
    s = score("コーヒー", "コヒー", long_vowel="drop")
    assert (s.reference, s.kana_errors, s.morae) == ("コヒ", 0, 2)
    s = score("珈琲ー", "珈琲", target="text", long_vowel="drop")
    assert (s.ortho_errors, s.ortho_chars) == (0, 2)


def test_score_rejects_an_unknown_target():
    with pytest.raises(ValueError, match="target='kanji'"):
        score("ア", "ア", target="kanji")


def test_corpus_rates_side_by_side_from_hand_counted_edits():
    rates = CorpusErrorRates()
    # kana edits: 1 of 4, 0 of 4, 1 of 4 (ー deleted); morae: 1 of 3, 0 of 4, 1 of 4
    rates.update([score("キャット", "キャト"), score("シンブン", "しんぶん")])
    rates.update([score("コーヒー", "コヒー")])
    out = rates.compute()
    assert out["kana_cer"].item() == pytest.approx(2 / 12)
    assert out["mora_er"].item() == pytest.approx(2 / 11)
    assert out["cer"].item() == pytest.approx(2 / 12)  # kana targets: the primary is kana CER
    assert torch.isnan(out["wer"])  # kana targets: no words (see test_kana_targets_have_no_wer)
    assert torch.isnan(out["ortho_cer"]) and out["n_text_utterances"] == 0
    assert (out["mora_errors"], out["morae"], out["n_utterances"]) == (2, 11, 3)

    report = rates_for_json(out)
    json.dumps(report, allow_nan=False)  # NaN is not JSON
    assert report["ortho_cer"] is None and report["ortho_chars"] is None
    assert report["wer"] is None and report["words"] is None
    assert report["mora_er"] == 2 / 11  # exact, not float32
    assert report["n_utterances"] == 3 and isinstance(report["n_utterances"], int)


def test_corpus_orthographic_rate_counts_text_targets_only():
    rates = CorpusErrorRates()
    rates.update([score("今日は", "京都", target="text"), score("東京", "東京", target="text")])
    rates.update([score("キャット", "キャト")])
    report = rates_for_json(rates.compute())
    assert (report["ortho_errors"], report["ortho_chars"], report["ortho_cer"]) == (3, 5, 0.6)
    # キョーワ/キョート 1 of 4, トーキョー 0 of 5, キャット/キャト 1 of 4
    assert (report["kana_errors"], report["kana_chars"]) == (2, 13)
    assert (report["mora_errors"], report["morae"]) == (2, 3 + 4 + 3)
    # the primary CER sums what each utterance calls primary: 3 + 0 + 1 edits of 3 + 2 + 4
    assert (report["char_errors"], report["chars"]) == (4, 9)
    assert (report["n_utterances"], report["n_text_utterances"]) == (3, 2)


def test_states_merged_across_processes_equal_one_process_that_saw_everything():
    pairs = [("キャット", "キャト"), ("コーヒー", "コヒー"), ("ア", "イウ")]
    one, first, second = CorpusErrorRates(), CorpusErrorRates(), CorpusErrorRates()
    one.update([score(r, h) for r, h in pairs])
    first.update([score(r, h) for r, h in pairs[:1]])
    second.update([score(r, h) for r, h in pairs[1:]])
    first.merge_state(second)  # the "sum" reduction DDP applies
    assert rates_for_json(first.compute()) == rates_for_json(one.compute())
    assert rates_for_json(one.compute())["kana_errors"] == 1 + 1 + 2


def test_pipeline_reads_the_raw_hypothesis_by_openjtalk_for_kana_targets():
    # A pretrained model writes kanji: wrong as kana, right once OpenJTalk reads it. は is read
    # as ワ from its context in the raw text, so the reading starts before normalisation.
    s = score("キョーワイイテンキデスネ", "今日はいい天気ですね。")
    assert (s.kana_errors, s.pipeline_errors, s.kana_chars) == (7, 0, 12)  # 今日ハイイ天気デスネ
    rates = CorpusErrorRates()
    rates.update([s, score("アイ", "アウ")])
    out = rates_for_json(rates.compute())
    assert (out["pipeline_errors"], out["kana_chars"]) == (1, 14)
    assert out["pipeline_kana_cer"] == pytest.approx(1 / 14)
    assert out["kana_cer"] == pytest.approx(8 / 14)


def test_pipeline_equals_kana_cer_for_text_targets():
    s = score("今日はいい天気", "今日は良い天気", target="text")
    assert s.pipeline_errors == s.kana_errors


def test_spaces_make_no_word_errors_in_japanese():
    s = score("アイウエオ", "アイウ エオ", target="text")
    assert (s.word_errors, s.kana_errors, s.ortho_errors) == (0, 0, 0)
    s = score("今日はいい天気です", "今日は いい 天気 です。", target="text")
    assert (s.word_errors, s.words) == (0, 5)
    assert score("アイウエオ", "アイウ エオ").kana_errors == 0  # kana targets: no word count


def test_text_target_counts_the_words_of_its_segmentation():
    s = score("今日はいい天気です", "", target="text")
    assert s.word_errors == s.words == 5  # OpenJTalk's words: 今日 は いい 天気 です
    s = score(
        "レモンを少し絞るとおいしくなります", "レモンを少し絞ると美味しくなります", target="text"
    )
    # レモン を 少し 絞る と おいしく なり ます: one word spelt differently
    assert (s.word_errors, s.words) == (1, 8)


def test_kana_targets_have_no_wer():
    # OpenJTalk leaves a katakana utterance as one word: WER would count utterances, not words.
    refs = ["キョーワイイテンキデス", "レモンヲスコシシボル"]
    scores = [score(r, r[:-1]) for r in refs]
    assert [(s.word_errors, s.words) for s in scores] == [(None, None)] * 2
    rates = CorpusErrorRates()
    rates.update(scores)
    report = rates_for_json(rates.compute())
    assert (report["wer"], report["word_errors"], report["words"]) == (None, None, None)
    assert report["kana_errors"] == 2 and report["cer"] == pytest.approx(2 / 21)
    assert "kana targets: not reported" in WER_MEANING
    # beside text targets, WER is over the text targets' words alone
    rates.update([score("今日はいい天気です", "今日はいい天気", target="text")])
    report = rates_for_json(rates.compute())
    assert (report["word_errors"], report["words"], report["wer"]) == (1, 5, 0.2)


def test_english_text_scored_with_whisper_normaliser():
    from whisper_ft.evaluation.metrics import score

    s = score("HELLO WORLD", "Hello world.", target="text", language="en")
    assert (s.word_errors, s.words, s.cer) == (0, 2, 0.0)
    assert s.kana_cer is None and s.mora_er is None and s.pipeline_errors is None


def test_orthographic_cer_keeps_hiragana_apart_from_katakana():
    from whisper_ft.evaluation.metrics import score

    assert score("りんご", "リンゴ", target="text").ortho_cer > 0
    assert score("りんご", "リンゴ", target="kana").cer == 0  # kana targets fold as before


def test_looping_signs():
    from whisper_ft.evaluation.metrics import CorpusErrorRates, has_loop, rates_for_json, score

    assert has_loop("アサササササササ") and not has_loop("キョウハイイテンキデス")
    rates = CorpusErrorRates()
    rates.update([score("アイ", "アイアイアイアイアイ", hit_budget=True), score("ウ", "ウ")])
    out = rates_for_json(rates.compute())
    assert out["budget_hit_rate"] == 0.5 and out["repetition_rate"] == 0.5
    assert out["insertion_rate"] == 8 / 3  # 8 inserted characters over 3 reference characters
