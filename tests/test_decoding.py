"""Decoding options and the katakana constraint."""

from whisper_ft.decoding import decoding_options, hit_budget, non_katakana_tokens
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


def test_decoding_leaves_the_katakana_list_unchanged(ja_tokenizer):
    """Whisper extends the suppress list it is handed; a cached list grew by 6 per decode."""
    import torch
    import whisper
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    model = Whisper(ModelDimensions(80, 1500, 16, 2, 1, 51865, 448, 16, 2, 1)).eval()
    before = list(non_katakana_tokens(ja_tokenizer))  # a copy
    mel = torch.zeros(1, 80, whisper.audio.N_FRAMES)
    for _ in range(2):
        options = decoding_options(
            "ja", "transcribe", torch.device("cpu"), 3, non_katakana_tokens(ja_tokenizer)
        )
        model.decode(mel, options)
    assert non_katakana_tokens(ja_tokenizer) == before


def test_hit_budget_means_cut_at_sample_len_not_ended():
    import torch
    import whisper

    options = decoding_options("ja", "transcribe", torch.device("cpu"), sample_len=4)
    cut = whisper.DecodingResult(audio_features=torch.zeros(1), language="ja", tokens=[1] * 4)
    ended = whisper.DecodingResult(audio_features=torch.zeros(1), language="ja", tokens=[1] * 3)
    assert hit_budget(cut, options) and not hit_budget(ended, options)
