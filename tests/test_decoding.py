"""Decoding options and the katakana constraint."""

from whisper_ft.decoding import decoding_options, non_katakana_tokens
from whisper_ft.text import to_kana


def test_katakana_transcripts_never_need_a_suppressed_token(ja_tokenizer):
    suppressed = set(non_katakana_tokens(ja_tokenizer))
    assert 40_000 < len(suppressed) < ja_tokenizer.eot  # most of the vocabulary goes
    for text in (
        "今日は良い天気ですね。こんにちは、世界！",
        "キャッシュ・フロー「ヴ」",
        "ヒャクニジューサンエン",
    ):
        tokens = ja_tokenizer.encode(to_kana(text))
        assert not suppressed & set(tokens), text
    for text in ("今日", "hello", "ひらがな", "123"):  # kanji, latin, hiragana, digits
        assert set(ja_tokenizer.encode(text)) & suppressed, text


def test_decoding_options_keep_whispers_default_list_unless_given_one(ja_tokenizer):
    import torch

    cpu = torch.device("cpu")
    assert decoding_options("ja", "transcribe", cpu).suppress_tokens == "-1"
    ids = non_katakana_tokens(ja_tokenizer)
    assert decoding_options("ja", "transcribe", cpu, suppress_tokens=ids).suppress_tokens == ids
